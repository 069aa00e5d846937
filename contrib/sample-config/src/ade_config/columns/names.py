"""Person-name fields: first, middle, last and full name."""

from ade_config.columns._checks import check_name, tidy

NAME_FIELDS = [
    ("first_name", "First name", ["first", "firstname", "given_name", "forename", "fname"]),
    ("middle_name", "Middle name", ["middle", "middlename", "middle_initial", "mi"]),
    ("last_name", "Last name", ["last", "lastname", "surname", "family_name", "lname"]),
    ("full_name", "Full name", ["fullname", "name", "display_name", "contact_name"]),
]


def register(registry):
    for name, label, aliases in NAME_FIELDS:
        registry.field(
            name,
            label=label,
            aliases=aliases,
            transform=tidy,
            validator=check_name,
            severity="error",
        )
