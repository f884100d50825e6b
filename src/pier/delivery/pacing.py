"""How a delivery engine paces itself, from the delivery settings: apart from the engine, so
that the processes that only manage destinations (the workers) need not import its HTTP
client."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings


@dataclass
class Pacing:
    """How the engine paces itself (seconds), and the key that opens sealed keys: from the
    delivery settings of pier.settings (`of`)."""

    backoff_base: float = 1.0  # the first retry waits up to this (full jitter), doubling
    backoff_cap: float = 300.0  # ... up to this
    timeout: float = 10.0  # one HTTP call, from connecting to the end of the answer
    answer_limit: int = 4096  # bytes of an answer body read (kept for the dead letter)
    lease_ttl: float = 15.0  # a lease not renewed for this long is taken over
    scan_every: float = 5.0  # how often unleased destinations are looked for
    poll_every: float = 0.05  # how often the feed heads are read for new items
    drain: float = 5.0  # at shutdown, the batch in flight gets this long, then is abandoned
    sealing: str = ""  # the secret_key setting (secrets.seal)

    @classmethod
    def of(cls, settings: Settings) -> Pacing:
        return cls(
            backoff_base=settings.delivery_backoff_base,
            backoff_cap=settings.delivery_backoff_cap,
            timeout=settings.delivery_timeout,
            answer_limit=settings.delivery_answer_limit,
            lease_ttl=settings.delivery_lease_ttl,
            scan_every=settings.delivery_scan_every,
            poll_every=settings.delivery_poll_every,
            drain=settings.delivery_drain,
            sealing=settings.secret_key,
        )
