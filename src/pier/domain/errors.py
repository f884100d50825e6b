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
    """The batch reached users whose anonymous ids or devices were not loaded; load and replay."""

    def __init__(self, user_ids: Iterable[int]) -> None:
        super().__init__("more to load")
        self.user_ids = set(user_ids)


class TooManyMerges(Exception):
    """A request reached the number of users one request may merge. Unlike a DomainError it is
    raised midway, after the request changed the batch: the writer replays the batch without
    the request, which is answered 422 with `error`."""

    def __init__(self, limit: int) -> None:
        super().__init__("too many merges")
        self.error = DomainError(
            f"one request may merge at most {limit} anonymous users into identified users;"
            " send the events that link new anonymous ids to external ids in smaller requests"
        )
