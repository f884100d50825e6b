"""The string fields of request bodies, each declared once: its length limit and what it means.
The fast path's msgspec types (schemas.py), the checks and their messages (validation.py,
track.py, segment.py) and the OpenAPI schemas (openapi.py) are all derived from here; what a
body asks of a field where it uses it (required, not null, not empty) is said by that body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from msgspec import Meta

MAX_EVENTS = 1000  # events (or Segment calls) in one request


@dataclass(frozen=True)
class Text:
    max_len: int
    description: str | None = None

    def meta(self, *, nonempty: bool = False) -> Meta:
        """The limits for msgspec, as `Annotated[str, field.meta()]` in the fast path."""
        return Meta(min_length=1 if nonempty else 0, max_length=self.max_len)

    def fits(self, value: object) -> TypeGuard[str]:
        return isinstance(value, str) and len(value) <= self.max_len

    def too_long(self, name: str) -> str:
        return f"{name} must be at most {self.max_len} characters"

    def expected(self, name: str, *, nullable: bool = False) -> str:
        """The message for a value that is not a string within the limit (Segment's wording)."""
        return f"{name} must be a string of at most {self.max_len} characters" + (
            ", or null" if nullable else ""
        )

    def schema(self, *, nullable: bool = True, nonempty: bool = False) -> dict[str, Any]:
        """The field's JSON Schema (OpenAPI 3.1)."""
        s: dict[str, Any] = {
            "type": ["string", "null"] if nullable else "string",
            "maxLength": self.max_len,
        }
        if nonempty:
            s["minLength"] = 1
        if self.description:
            s["description"] = self.description
        return s


ID = Text(255)  # an anonymous, external, message or device id, a name: any short text
PROFILE: dict[str, Text] = {  # a user's profile fields (identify, an event's user, Segment traits)
    "email": Text(255),
    "phone": Text(64, "Stored as sent; parsed for data."),
    "timezone": Text(50, "An IANA zone, matched case-insensitively and stored canonically."),
    "locale": Text(50),
}
IDEMPOTENCY_KEY = Text(255)


def field(name: str) -> Text:
    """The declaration of a body's field by its name: a profile field, else an id-like text."""
    return PROFILE.get(name, ID)
