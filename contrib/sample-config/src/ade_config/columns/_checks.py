"""Shared value checks (the leading underscore keeps the loader from
treating this module as a plugin)."""

import re

EMAIL_PATTERN = r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
_EMAIL = re.compile(EMAIL_PATTERN)
_DIGIT = re.compile(r"\d")


def check_email(value):
    if _EMAIL.fullmatch(value):
        return None
    return f"{value!r} does not look like an email address"


def check_name(value):
    if _DIGIT.search(value):
        return f"{value!r} contains digits"
    return None


def tidy(value):
    """Trim and collapse inner whitespace."""
    return " ".join(value.split())
