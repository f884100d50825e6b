"""Profile rules of identify: null clears, left-out keeps, one-level data merge, timezones, phones."""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

import phonenumbers
from msgspec import UNSET

from .commands import Traits
from .errors import NeedsLoad
from .model import PROFILE_FIELDS, User

TIMEZONE_ERROR = "The timezone value must be in the IANA format."


@cache
def _zones() -> dict[str, str]:
    local_names = {"localtime", "posixrules"}  # files of the system's zone folder, not zones
    zones = {n.lower(): n for n in zoneinfo.available_timezones() if n not in local_names}
    zones.setdefault("utc", "UTC")
    return zones


def canonical_timezone(value: str) -> str | None:
    """The IANA name for `value`, matched case-insensitively; None when it is not a zone."""
    return _zones().get(value.strip().lower())


def phone_metadata(phone: str | None) -> tuple[str, bool] | None:
    """(region, is_valid) when `phone` parses as an international number, else None."""
    if not phone:
        return None
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    if not region and number.country_code is not None:
        region = phonenumbers.region_code_for_country_code(number.country_code)
    if not region or region == phonenumbers.UNKNOWN_REGION:
        return None
    return region, phonenumbers.is_valid_number(number)


def apply_traits(user: User, traits: Traits) -> dict[str, Any]:
    """Patch `user` with `traits`; returns what changed, as a user_updated item says it (the
    fields with their new values, `data` with the changed keys: empty when nothing changed)."""
    if user.partial:
        raise NeedsLoad([user.id])
    changes: dict[str, Any] = {}
    for field in PROFILE_FIELDS:
        value = getattr(traits, field)
        if value is not UNSET and getattr(user, field) != value:
            setattr(user, field, value)
            changes[field] = value
    data = traits.data
    changed_data: dict[str, Any] = {}
    if data:  # one level deep: top-level keys replace, nested values are replaced whole
        for key, value in data.items():
            if user.data.get(key, UNSET) != value:
                user.data[key] = value
                changed_data[key] = value
    if traits.phone is not UNSET:
        changed_data.update(_set_phone_metadata(user.data, traits.phone))
    if changed_data:
        changes["data"] = changed_data
    return changes


def _set_phone_metadata(data: dict[str, Any], phone: str | None) -> dict[str, Any]:
    """Set or remove the phone's keys in `data`; returns those that changed (None: removed)."""
    keys = ("phone_country", "phone_is_valid")
    before = [data.get(key, UNSET) for key in keys]
    meta = phone_metadata(phone)
    if meta is None:
        data.pop("phone_country", None)
        data.pop("phone_is_valid", None)
    else:
        data["phone_country"], data["phone_is_valid"] = meta
    return {
        key: data.get(key)
        for key, old in zip(keys, before, strict=True)
        if data.get(key, UNSET) != old
    }


def creation_data(
    traits: Traits | None, external_id: str | None, anonymous_id: str | None
) -> dict[str, Any]:
    """The data of a `user_created` event: the request's data plus the fields it set."""
    result: dict[str, Any] = dict(traits.data) if traits is not None and traits.data else {}
    if external_id is not None:
        result["external_id"] = external_id
    if anonymous_id is not None:
        result["anonymous_id"] = anonymous_id
    if traits is not None:
        for field in PROFILE_FIELDS:
            value = getattr(traits, field)
            if value is not UNSET and value is not None:
                result[field] = value
    return result
