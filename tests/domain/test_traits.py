"""Profile rules of identify (contract section 4): null clears, left out keeps, one-level data
merge, canonical timezones and phone metadata."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pier.domain.batch import Batch
from pier.domain.commands import Identify, Traits
from pier.domain.model import User
from pier.domain.traits import apply_traits, canonical_timezone, phone_metadata

PID = 1
NOW = 1_800_000_000_000


def user(**fields: Any) -> User:
    return User(1, PID, "e1", ["a1"], stored=True, **fields)


def make_batch() -> Batch:
    ids = itertools.count(100)
    return Batch(NOW, lambda: next(ids), lambda: "gen")


def loaded(batch: Batch, **fields: Any) -> User:
    u = user(**fields)
    u.devices = []
    batch.add_user(u, ["a1"])
    return u


def identify(**traits: Any) -> Identify:
    return Identify(project_id=PID, anonymous_id=None, external_id="e1", traits=Traits(**traits))


# -- profile fields ------------------------------------------------------------------------
def test_null_clears_and_left_out_keeps() -> None:
    u = user(email="a@example.com", phone="+14155552671", timezone="UTC", locale="en")
    assert apply_traits(u, Traits(email=None, locale=None))
    assert (u.email, u.phone, u.timezone, u.locale) == (None, "+14155552671", "UTC", None)


def test_fields_replace() -> None:
    u = user(email="a@example.com", locale="en")
    assert apply_traits(u, Traits(email="b@example.com", timezone="Europe/Paris"))
    assert (u.email, u.timezone, u.locale) == ("b@example.com", "Europe/Paris", "en")


def test_nothing_sent_changes_nothing() -> None:
    u = user(email="a@example.com", data={"k": 1})
    assert not apply_traits(u, Traits())
    assert not apply_traits(u, Traits(email="a@example.com", data={"k": 1}))
    assert (u.email, u.data) == ("a@example.com", {"k": 1})


def test_identify_updates_only_when_something_changed() -> None:
    b = make_batch()
    u = loaded(b, email="a@example.com")
    b.apply(identify(email="a@example.com"))
    assert b.changes().updated_users == []
    b.apply(identify(email=None))
    assert b.changes().updated_users == [u] and u.email is None and u.updated_at == NOW


# -- data ----------------------------------------------------------------------------------
def test_data_merges_one_level_deep() -> None:
    u = user(data={"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2], "keep": "me"})
    assert apply_traits(u, Traits(data={"a": 2, "nested": {"x": 9}, "list": [3], "new": None}))
    # Top-level keys replace; nested objects and arrays are replaced whole.
    assert u.data == {"a": 2, "nested": {"x": 9}, "list": [3], "keep": "me", "new": None}


@pytest.mark.parametrize("data", [None, {}], ids=["null", "empty"])
def test_data_null_or_empty_keeps_data(data: dict[str, Any] | None) -> None:
    u = user(data={"a": 1})
    assert not apply_traits(u, Traits(data=data))
    assert u.data == {"a": 1}


def test_data_left_out_keeps_data() -> None:
    u = user(data={"a": 1})
    apply_traits(u, Traits(email="x@example.com"))
    assert u.data == {"a": 1}


# -- timezones -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("america/chicago", "America/Chicago"),
        ("AMERICA/CHICAGO", "America/Chicago"),
        ("America/Chicago", "America/Chicago"),
        ("utc", "UTC"),
        ("UTC", "UTC"),
        ("europe/paris", "Europe/Paris"),
        ("america/argentina/buenos_aires", "America/Argentina/Buenos_Aires"),
        ("etc/gmt+5", "Etc/GMT+5"),
    ],
)
def test_timezones_are_canonical(sent: str, stored: str) -> None:
    assert canonical_timezone(sent) == stored


@pytest.mark.parametrize("sent", ["Mars/Olympus", "", "GMT+25", "America/", "+02:00", "CEST"])
def test_invalid_timezones(sent: str) -> None:
    assert canonical_timezone(sent) is None


def test_localtime_is_not_a_timezone() -> None:
    # zoneinfo.available_timezones() lists the system's /usr/share/zoneinfo/localtime link, whose
    # meaning depends on the server: it is not an IANA zone and must not be stored.
    assert canonical_timezone("localtime") is None


# -- phone metadata ------------------------------------------------------------------------
def test_phone_metadata_of_a_valid_number() -> None:
    assert phone_metadata("+14155552671") == ("US", True)
    assert phone_metadata("+44 20 7946 0958") == ("GB", True)


def test_phone_metadata_of_a_parsable_invalid_number() -> None:
    assert phone_metadata("+33 1 23") == ("FR", False)


@pytest.mark.parametrize("phone", ["not a phone", "4155552671", "+", "", None])
def test_phone_metadata_of_unparsable_numbers(phone: str | None) -> None:
    assert phone_metadata(phone) is None


def test_phone_sets_metadata_without_touching_other_data() -> None:
    u = user(data={"plan": "pro", "nested": {"a": 1}})
    assert apply_traits(u, Traits(phone="+14155552671"))
    assert u.phone == "+14155552671"  # stored as sent
    assert u.data == {
        "plan": "pro",
        "nested": {"a": 1},
        "phone_country": "US",
        "phone_is_valid": True,
    }


def test_phone_invalid_there_is_flagged() -> None:
    u = user()
    apply_traits(u, Traits(phone="+33 1 23"))
    assert u.data == {"phone_country": "FR", "phone_is_valid": False}


def test_phone_with_data_in_the_same_request() -> None:
    u = user(data={"plan": "free"})
    apply_traits(u, Traits(phone="+14155552671", data={"plan": "pro"}))
    assert u.data == {"plan": "pro", "phone_country": "US", "phone_is_valid": True}


META = {"phone_country": "US", "phone_is_valid": True}


@pytest.mark.parametrize("phone", ["not a phone", None], ids=["unparsable", "cleared"])
def test_phone_unparsable_or_cleared_removes_the_keys(phone: str | None) -> None:
    u = user(phone="+14155552671", data={"plan": "pro", **META})
    assert apply_traits(u, Traits(phone=phone))
    assert u.phone == phone
    assert u.data == {"plan": "pro"}


def test_phone_left_out_keeps_the_keys() -> None:
    u = user(phone="+14155552671", data={"plan": "pro", **META})
    apply_traits(u, Traits(email="x@example.com", data={"plan": "max"}))
    assert u.data == {"plan": "max", **META}


def test_phone_change_replaces_the_keys() -> None:
    u = user(phone="+14155552671", data=dict(META))
    assert apply_traits(u, Traits(phone="+44 20 7946 0958"))
    assert u.data == {"phone_country": "GB", "phone_is_valid": True}


def test_phone_through_identify_marks_the_user_updated() -> None:
    b = make_batch()
    u = loaded(b, data={"plan": "pro"})
    b.apply(identify(phone="+14155552671"))
    assert b.changes().updated_users == [u]
    assert u.data == {"plan": "pro", **META}
