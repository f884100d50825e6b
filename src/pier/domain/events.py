"""Tracked events (contract section 4, events): each goes to the user its ids resolve to, and an
event whose `message_id` is stored already, or came earlier in the batch, is a retry: dropped."""

from __future__ import annotations

from .commands import TrackEvents
from .identity import resolve
from .model import Event
from .state import BatchState
from .traits import apply_traits


def track(b: BatchState, cmd: TrackEvents) -> None:
    pid = cmd.project_id
    seen = b.seen_message_ids
    by_external = b.by_external
    append = b.events.append
    for ev in cmd.events:
        if ev.message_id is not None:
            key = (pid, ev.message_id)
            if key in seen:
                b.duplicates += 1
                continue  # already stored: a retry
            seen.add(key)
        # the common case, without the identity table: a known user named by external id
        user = None
        if ev.anonymous_id is None and ev.traits is None and ev.external_id:
            user = by_external.get((pid, ev.external_id))
        if user is None:
            user = resolve(b, pid, ev.anonymous_id, ev.external_id, ev.traits, ev.timestamp)
            if ev.traits is not None:
                b.patch(user, apply_traits(user, ev.traits))
            if b.pending or b.pending_devices:
                b.flush()  # the user's items before its event
        created = ev.timestamp if ev.timestamp is not None else b.now
        append(Event(user, ev.name, ev.data, created, ev.message_id))
