"""Errors that carry a sentence a school office can act on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class SwitchboardError(Exception):
    """A failed operation explained in one plain sentence (what happened, what to do)."""


class NotFound(SwitchboardError):
    """The record asked for does not exist (any more)."""


class StaleEdit(SwitchboardError):
    """The record changed after the user opened it; saving would overwrite someone's change."""


class CredentialStoreUnavailable(SwitchboardError):
    """No usable operating-system credential store, so secrets cannot be kept safely."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: `field` is the attribute or column name."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationFailed(SwitchboardError):
    """Input that cannot be saved; every problem found is listed, not only the first."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0].message if self.errors else "the input is not valid"
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"{first}{more}")
