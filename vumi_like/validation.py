"""pydantic's ``ValidationError`` as the one line a person reads.

Every place that validates outside input (a config file, a pipeline, an HTTP body, a
cache's options) reports problems the same way: ``where: what``, each problem joined by
``"; "``, with pydantic's boilerplate trimmed ("Input should be a valid integer, unable
to parse string as an integer" -> "should be a valid integer"). Values are not quoted
here, because some of them are secrets; callers that know a value is safe (the config
loader) add it themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

__all__ = ["describe_validation_error", "problem_line", "tidy_message"]

# Errors about the whole input rather than one of its fields.
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})


def tidy_message(message: str) -> str:
    """pydantic's message without its prefixes and parse details, starting in lower case."""
    for lead in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(lead)
    message = message.removeprefix("Input ")
    for tail in (", unable to parse", ", unable to interpret", ", invalid character"):
        message = message.split(tail)[0]
    if message == "Field required":
        return "is required"
    return message[:1].lower() + message[1:]


def dotted(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def problem_line(error: Any, *, subject: str = "the value") -> str:
    """One error of ``ValidationError.errors()`` as ``where: what``."""
    loc = error["loc"]
    if error["type"] == "json_invalid":
        return f"{subject} is not valid JSON"
    if not loc and error["type"] in _NOT_AN_OBJECT:
        return f"{subject} should be a JSON object"
    return f"{dotted(loc) or subject}: {tidy_message(error['msg'])}"


def describe_validation_error(exc: ValidationError, *, subject: str = "the value") -> str:
    """Every problem in ``exc``, one line; ``subject`` names the input as a whole.

    When the input is not even JSON (or not an object), that is the only problem given:
    the field errors pydantic adds after it would only repeat it.
    """
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "json_invalid" or (
            not error["loc"] and error["type"] in _NOT_AN_OBJECT
        ):
            return problem_line(error, subject=subject)
    return "; ".join(problem_line(error, subject=subject) for error in errors)
