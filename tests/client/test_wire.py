"""The client's pure parts: bodies, batching limits, retry policy. No server needed."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pier.client import CLEAR, PierError, RetryPolicy
from pier.client._retry import is_retryable_status, parse_retry_after
from pier.client._wire import (
    MAX_BODY_BYTES,
    alias_body,
    batch_body,
    check_options,
    chunks,
    device_body,
    event_bytes,
    gzip_body,
    identify_body,
    split_rejected,
)

decode = msgspec.json.decode


def test_identify_sends_only_given_fields() -> None:
    body = decode(identify_body("u1", None, "a@example.com", None, None, None, None))
    assert body == {"external_id": "u1", "email": "a@example.com"}


def test_identify_clear_sends_null() -> None:
    body = decode(identify_body(None, "anon", None, CLEAR, None, None, {"k": 1}))
    assert body == {"anonymous_id": "anon", "phone": None, "data": {"k": 1}}


@pytest.mark.parametrize("ids", [(None, None), ("", None), (None, ""), ("", "")])
def test_an_id_is_required(ids: tuple[str | None, str | None]) -> None:
    with pytest.raises(ValueError, match="external_id or anonymous_id"):
        identify_body(*ids, None, None, None, None, None)
    with pytest.raises(ValueError):
        event_bytes("x", *ids, None, None)
    with pytest.raises(ValueError):
        device_body("d", "ios", "m", "1", "1.0", *ids, None, None, {})


def test_alias_needs_both_ids() -> None:
    assert decode(alias_body("a", "e")) == {"anonymous_id": "a", "external_id": "e"}
    with pytest.raises(ValueError):
        alias_body("a", "")


def test_device_body_keeps_extra_and_leaves_out_none() -> None:
    body = decode(
        device_body("d1", "android", "Pixel", "42", "1.2", "u1", None, None, "14", {"sdk": "2"})
    )
    assert body == {
        "device_id": "d1",
        "os": "android",
        "model": "Pixel",
        "app_build": "42",
        "app_version": "1.2",
        "external_id": "u1",
        "os_version": "14",
        "sdk": "2",
    }
    cleared = decode(device_body("d1", "ios", "m", "1", "1", None, "a", CLEAR, None, {}))
    assert cleared["token"] is None


def test_event_gets_message_id_and_timestamp_with_offset() -> None:
    message_id, raw = event_bytes("Signed Up", "u1", None, {"plan": "pro"}, None)
    event = decode(raw)
    assert event["message_id"] == message_id
    assert uuid.UUID(message_id).version == 4
    assert event["name"] == "Signed Up" and event["data"] == {"plan": "pro"}
    parsed = datetime.fromisoformat(event["timestamp"])
    assert parsed.utcoffset() is not None
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)
    assert "anonymous_id" not in event


def test_event_timestamps_keep_their_offset() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    _, raw = event_bytes("e", "u1", None, None, when)
    assert decode(raw)["timestamp"] == "2024-01-02T03:04:05.678+02:00"
    _, raw = event_bytes("e", "u1", None, None, datetime(2024, 1, 2, 3, 4, 5))  # naive: local
    assert datetime.fromisoformat(decode(raw)["timestamp"]).utcoffset() is not None


def test_message_ids_are_unique() -> None:
    ids = {event_bytes("e", "u1", None, None, None)[0] for _ in range(1000)}
    assert len(ids) == 1000


def test_event_checks_run_at_track_time() -> None:
    with pytest.raises(ValueError, match="name"):
        event_bytes("", "u1", None, None, None)
    with pytest.raises(TypeError):
        event_bytes("e", "u1", None, {"x": object()}, None)
    with pytest.raises(TypeError):
        event_bytes("e", "u1", None, None, "2024-01-01")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        event_bytes("e", "u1", None, {"blob": "x" * MAX_BODY_BYTES}, None)


def test_batch_body_is_a_json_array_and_gzips() -> None:
    events = [event_bytes("e", "u1", None, {"i": i}, None)[1] for i in range(3)]
    body = gzip_body(batch_body(events))
    assert [e["data"]["i"] for e in decode(gzip.decompress(body))] == [0, 1, 2]


@given(sizes=st.lists(st.integers(1, 400_000), max_size=30), max_batch=st.integers(1, 10))
def test_chunks_respect_count_and_size(sizes: list[int], max_batch: int) -> None:
    events = [b"x" * n for n in sizes]
    batches = chunks(events, max_batch)
    assert [e for b in batches for e in b] == events  # nothing lost, order kept
    for batch in batches:
        assert 1 <= len(batch) <= max_batch
        assert len(batch) == 1 or len(batch_body(batch)) <= MAX_BODY_BYTES


def test_split_rejected_keeps_the_good_events() -> None:
    events = [b"a", b"b", b"c"]
    error = PierError(
        "bad",
        status=422,
        body={"errors": [{"path": "/1/name", "message": "x"}, {"path": "/1", "message": "y"}]},
    )
    assert split_rejected(events, error) == ([b"b"], [b"a", b"c"])


@pytest.mark.parametrize(
    "body",
    [
        {"error": "bad"},  # no errors list
        {"errors": [{"path": "/name", "message": "x"}]},  # not an event path
        {"errors": [{"path": "/7/name", "message": "x"}]},  # out of range
    ],
)
def test_split_rejected_rejects_all_when_unsure(body: dict) -> None:
    events = [b"a", b"b"]
    assert split_rejected(events, PierError("x", status=422, body=body)) == (events, [])
    assert split_rejected(events, PierError("x", status=401, body=body)) == (events, [])


def test_pier_error_carries_the_server_body() -> None:
    body = {"status": "error", "error": "Access denied.", "code": 1007}
    error = PierError("Access denied.", status=403, body=body)
    assert (error.status, error.error, error.code, error.errors) == (
        403,
        "Access denied.",
        1007,
        [],
    )
    assert str(error) == "HTTP 403: Access denied."


@pytest.mark.parametrize(
    ("status", "retry"), [(429, True), (500, True), (503, True), (400, False), (422, False)]
)
def test_retryable_statuses(status: int, retry: bool) -> None:
    assert is_retryable_status(status) is retry


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31


def test_retry_policy_full_jitter_and_limits() -> None:
    policy = RetryPolicy(max_retries=4, backoff_base=0.1, backoff_max=0.3)
    for retry, ceiling in enumerate([0.1, 0.2, 0.3, 0.3]):
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling / 2  # jittered, not fixed
    assert policy.delay(4) is None


def test_retry_policy_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=2, max_retry_after=5)
    assert policy.delay(0, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=120.0) == 5.0
    assert policy.delay(2, retry_after=1.0) is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_batch": 0},
        {"max_batch": 1001},
        {"flush_interval": 0},
        {"max_queue": 0},
        {"max_retries": -1},
    ],
)
def test_bad_options(options: dict) -> None:
    args = {"max_batch": 100, "flush_interval": 0.5, "max_queue": 10, "max_retries": 1}
    with pytest.raises(ValueError):
        check_options(**{**args, **options})
