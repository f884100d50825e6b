"""One decide: a batch of requests' commands, with their Idempotency-Keys, planned, then decided
over what the store loaded for the plan. The writer and the property tests' in-memory store both
call it; each loads the plan its own way (`plan.LoadRequest`).

    p = plan(commands, keys)
    batch = Batch(now, new_user_id)
    load(p.request, batch)          # the store's: the keys, then the users to complete
    errors, changes = decide(p, batch)
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import msgspec

from .batch import Batch, ChangeSet
from .commands import Command, Sequence, TrackEvents
from .errors import DomainError, KeyReused, TooManyMerges
from .plan import Key, LoadRequest, load_request

RequestKey = tuple[str, str]  # (Idempotency-Key, fingerprint of the request)


class Plan(msgspec.Struct):
    commands: list[Command]
    keys: list[RequestKey | None]
    request: LoadRequest  # what to load
    new_users: int  # at most: one per identity item


def size(cmd: Command) -> int:
    """A command's items: its events, its commands, or 1."""
    if isinstance(cmd, Sequence):
        return sum(size(c) for c in cmd.commands)
    return len(cmd.events) if isinstance(cmd, TrackEvents) else 1


def plan(commands: list[Command], keys: Seq[RequestKey | None] | None = None) -> Plan:
    """What deciding `commands` needs loaded; `keys[i]`: the Idempotency-Key of commands[i]."""
    keys = list(keys) if keys is not None else [None] * len(commands)
    request = load_request(commands)
    request.request_keys.update(
        (c.project_id, k[0]) for c, k in zip(commands, keys, strict=True) if k
    )
    return Plan(commands, keys, request, sum(size(c) for c in commands))


def decide(plan: Plan, batch: Batch) -> tuple[list[Exception | None], ChangeSet]:
    """Apply the commands in order to `batch`, loaded for `plan`: each command's error (None,
    DomainError or KeyReused) and what the batch changed, its new Idempotency-Keys with it. A
    refused command changes nothing; the others go on. A request repeating a key answers as
    the first did, and changes nothing."""
    seen: dict[Key, str] = dict(batch.request_keys)
    recorded: list[tuple[int, str, str]] = []
    errors: list[Exception | None] = []
    for cmd, key in zip(plan.commands, plan.keys, strict=True):
        if key is not None:
            fingerprint = seen.get((cmd.project_id, key[0]))
            if fingerprint is not None:
                errors.append(None if fingerprint == key[1] else KeyReused(key[0]))
                continue
        try:
            batch.apply(cmd)
        except DomainError as exc:
            errors.append(exc)
            continue
        except TooManyMerges as exc:
            errors.append(exc.error)
            continue
        errors.append(None)
        if key is not None:
            seen[(cmd.project_id, key[0])] = key[1]
            recorded.append((cmd.project_id, key[0], key[1]))
    return errors, batch.changes(recorded)
