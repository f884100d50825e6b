"""Errors the domain raises for a command it must refuse."""

from collections.abc import Iterable


class DomainError(Exception):
    """A command breaks a rule of the contract; the request is answered 422."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class NotFound(DomainError):
    """A command names something that does not exist (a device to remove); answered 404."""


class NeedsLoad(Exception):
    """A rule reached a user loaded short of what it needs (its profile, anonymous ids or
    devices): the plan (plan.LoadRequest.to_complete) missed it. A bug, never caught."""

    def __init__(self, user_ids: Iterable[int]) -> None:
        super().__init__("more to load")
        self.user_ids = set(user_ids)


class TooManyMerges(Exception):
    """A request went past the number of users one request may merge; answered 422 with
    `error`. Raised midway, so a request that may go past it is first tried on a trial batch
    (Batch.apply), which it leaves unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__("too many merges")
        self.error = DomainError(
            f"one request may merge at most {limit} anonymous users into identified users;"
            " send the events that link new anonymous ids to external ids in smaller requests"
        )


class KeyReused(Exception):
    """An Idempotency-Key came back with a different request; answered 409."""
