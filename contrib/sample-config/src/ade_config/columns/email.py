"""The email field."""

from ade_config.columns._checks import EMAIL_PATTERN, check_email


def register(registry):
    registry.field(
        "email",
        label="Email",
        aliases=["email", "e_mail", "email_address", "mail"],
        pattern=EMAIL_PATTERN,
        transform=lambda value: value.strip().lower(),
        validator=check_email,
        severity="warning",
    )
