"""`SettingsError`, and pydantic's validation errors reworded for people."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

__all__ = ["SettingsError", "describe", "edits"]

# pydantic's error types, reworded for people (the rest keep pydantic's message).
_REWORDED: Mapping[str, str] = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false (also 1/0, yes/no, on/off)",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be more than {gt}",
    "less_than": "must be less than {lt}",
    "string_too_short": "may not be empty",
    "literal_error": "must be one of {expected}",
    "path_type": "must be a path",
}


class SettingsError(ValueError):
    """The environment (or the options) do not make valid settings.

    ``problems`` has one entry per variable at fault, naming the variable (never its
    value); ``message`` joins them into the one line the CLI prints.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.message = "; ".join(problems)
        super().__init__(self.message)


def edits(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute, swap two neighbours) between a and b."""
    previous_row: list[int] | None = None
    row = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (char != other))
            if (
                previous_row is not None
                and i > 1
                and j > 1
                and char == b[j - 2]
                and a[i - 2] == other
            ):
                current[j] = min(current[j], previous_row[j - 2] + 1)
        previous_row, row = row, current
    return row[-1]


def describe(error: Any, variables: Mapping[str, str], fields: Container[str]) -> str:
    """One pydantic error as ``VARIABLE: what is wrong`` (no pydantic wording or URL).

    ``variables`` names the variable (or option) behind each setting; ``fields`` are the
    settings' names, to recognise the one a model-level rule's message starts with.
    """
    location = error.get("loc") or ()
    field = str(location[0]) if location else ""
    kind = error.get("type", "")
    context = error.get("ctx") or {}
    if kind == "value_error":
        reason = str(context.get("error", error.get("msg", "")))
    elif kind in _REWORDED:
        reason = _REWORDED[kind].format(**context)
    else:
        reason = str(error.get("msg", "is invalid")).replace("Input should", "must")
    if not field:  # a model-level rule; its message starts with the field it is about
        head, _, rest = reason.partition(": ")
        if head in fields and rest:
            return f"invalid setting {variables.get(head, f'KEYTURN_{head.upper()}')}: {rest}"
        return f"invalid setting: {reason}"
    return f"invalid setting {variables.get(field, f'KEYTURN_{field.upper()}')}: {reason}"
