"""What the rules of identity, events and devices see of a batch: the indexes they read and the
changes they record. `batch.Batch` is the one implementation; identity.py, events.py and
devices.py type against this, so that batch.py imports them and they do not import it back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .commands import Traits
from .model import Device, Event, User

Key = tuple[int, str]  # (project id, value)


class BatchState(Protocol):
    now: int
    new_user_id: Callable[[], int]
    new_anonymous_id: Callable[[], str]
    users: dict[int, User]
    by_external: dict[Key, User]
    by_anonymous: dict[Key, User]
    touched_anonymous: dict[Key, None]
    devices_by_id: dict[Key, Device]
    devices_by_token: dict[Key, Device]
    seen_message_ids: set[Key]
    events: list[Event]
    duplicates: int
    event_moves: list[tuple[int, int]]
    merged_into: dict[int, User]
    merges_left: int
    pending: dict[User, dict[str, Any]]  # the command in progress's user_updated data
    pending_at: dict[User, int]
    pending_devices: dict[Device, None]

    def resolve(
        self,
        pid: int,
        anon: str | None,
        ext: str | None,
        traits: Traits | None,
        at: int | None = None,
    ) -> User: ...

    def touch(self, user: User, changed: bool = True) -> None: ...

    def patch(self, user: User, changes: dict[str, Any]) -> None: ...

    def record(
        self, user: User, name: str, data: dict[str, Any], at: int | None = None
    ) -> None: ...

    def touch_device(self, device: Device, *, moved_only: bool = False) -> None: ...

    def note(self, user: User, changes: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...
