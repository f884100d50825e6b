"""A/B, in-process: the trial batch of a Segment batch holding an alias (domain/batch.py,
`Batch._trial`), its users and devices copied by `_clone` (slot by slot) or by `copy.deepcopy`
of the same objects. Alternating rounds; prints the median µs per trial of each.

Usage: .venv/bin/python bench/trial_copy.py [ROUNDS=9]"""

from __future__ import annotations

import copy
import itertools
import sys
import time
from typing import Any

from pier.domain.batch import Batch
from pier.domain.commands import Alias, EventIn, Identify, Sequence, TrackEvents, Traits
from pier.domain.model import Device, User
from pier.domain.plan import load_request

PID = 1


def loaded(n_users: int = 2000) -> Batch:
    """A batch holding n stored users, each with 2 anonymous ids, 10 data keys, 3 devices."""
    ids = itertools.count(10**6)
    b = Batch(1, lambda: next(ids))
    for i in range(n_users):
        data = {f"k{j}": j for j in range(10)}
        u = User(i + 1, PID, f"e{i}", [f"a{i}", f"b{i}"], stored=True, data=data)
        u.devices = []
        b.add_user(u, u.anonymous_ids or ())
        for d in range(3):
            device = Device(i * 10 + d, PID, u, f"d{i}-{d}", token=f"t{i}-{d}", stored=True)
            b.add_device(device)
    return b


def segment_batch(first: int) -> Sequence:
    """10 users: an identify and an event each, then an alias: 21 calls."""
    cmds: list[Any] = []
    for j in range(first, first + 10):
        traits = Traits(email="x@example.com")
        cmds.append(
            Identify(project_id=PID, anonymous_id=f"a{j}", external_id=f"e{j}", traits=traits)
        )
        cmds.append(TrackEvents(project_id=PID, events=[EventIn(f"a{j}", f"e{j}", "open", {})]))
    cmds.append(Alias(project_id=PID, anonymous_id=f"a{first}", external_id=f"e{first}"))
    return Sequence(project_id=PID, commands=cmds)


def deepcopy_trial(self: Batch, cmd: Sequence) -> Batch:
    """Batch._trial with copy.deepcopy in place of _clone."""
    new_ids = itertools.count(-1, -1)
    trial = Batch(self.now, lambda: next(new_ids))
    named = load_request([cmd])
    trial.seen_message_ids = {k for k in named.message_ids if k in self.seen_message_ids}
    memo: dict[int, Any] = {}
    for keys, source, target in (
        (named.external_ids, self.by_external, trial.by_external),
        (named.anonymous_ids, self.by_anonymous, trial.by_anonymous),
        (named.device_ids, self.devices_by_id, trial.devices_by_id),
        (named.tokens, self.devices_by_token, trial.devices_by_token),
    ):
        for key in keys:
            found = source.get(key)
            if found is not None:
                target[key] = copy.deepcopy(found, memo)
    for obj in list(memo.values()):
        if isinstance(obj, User):
            trial.users[obj.id] = obj
        elif isinstance(obj, Device) and not obj.deleted:
            trial.devices_by_id.setdefault((obj.project_id, obj.device_id), obj)
            if obj.token is not None:
                trial.devices_by_token.setdefault((obj.project_id, obj.token), obj)
    return trial


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    b = loaded()
    batches = [segment_batch(i * 10) for i in range(150)]
    a, d = Batch._trial(b, batches[0]), deepcopy_trial(b, batches[0])
    assert sorted(a.users) == sorted(d.users) and a.devices_by_id.keys() == d.devices_by_id.keys()
    times: dict[str, list[float]] = {"_clone": [], "deepcopy": []}
    for _ in range(rounds):
        for name, trial in (("_clone", Batch._trial), ("deepcopy", deepcopy_trial)):
            started = time.perf_counter()
            for seq in batches:
                trial(b, seq)
            times[name].append((time.perf_counter() - started) / len(batches) * 1e6)
    for name, values in times.items():
        values.sort()
        print(
            f"{name}: median {values[len(values) // 2]:.0f} µs a trial, range "
            f"{values[0]:.0f} – {values[-1]:.0f}"
        )


if __name__ == "__main__":
    main()
