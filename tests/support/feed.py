"""A consumer of the change feed: rebuilds users and devices from the items alone, by the rules
docs/client-api.md ("The change feed") gives. Destinations rely on this being possible."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PROFILE = ("external_id", "email", "phone", "timezone", "locale")


def rebuild(items: Iterable[dict[str, Any]]) -> tuple[dict[int, dict], dict[str, dict]]:
    """(users by id, devices by device id) from feed items in feed order. Items are dicts with
    at least `name`, `user_id` and `data` (decoded)."""
    users: dict[int, dict[str, Any]] = {}
    devices: dict[str, dict[str, Any]] = {}

    def drop_devices(uid: int) -> None:
        for device_id in [k for k, d in devices.items() if d["user_id"] == uid]:
            del devices[device_id]

    for item in items:
        name, uid, data = item["name"], item["user_id"], item["data"]
        if name == "user_created":
            users[uid] = {**dict.fromkeys(PROFILE), "anonymous_ids": [], "data": {}}
        elif name == "user_updated":
            user = users[uid]
            for key, value in data.items():
                if key == "anonymous_ids_added":
                    user["anonymous_ids"] += value
                elif key == "data":
                    for k, v in value.items():
                        if v is None:
                            user["data"].pop(k, None)
                        else:
                            user["data"][k] = v
                else:
                    assert key in PROFILE, key
                    user[key] = value
        elif name == "user_merged":
            users.pop(data["merged_user_id"], None)
            drop_devices(data["merged_user_id"])
        elif name == "device_registered":
            devices[data["device_id"]] = {**data, "user_id": uid}
        elif name == "device_removed":  # cap, rename, DELETE; in a merge, before user_merged
            devices.pop(data["device_id"], None)  # (the device may still be the merged user's)
        elif name == "user_deleted":
            # with it, any user holding one of its anonymous ids: merged into it (the
            # user_merged left the feed with it), and any device it had (moved to it)
            gone = {uid} | {
                u
                for u, user in users.items()
                if set(user["anonymous_ids"]) & set(data["anonymous_ids"])
            }
            for u in gone:
                users.pop(u, None)
                drop_devices(u)
            for device_id in data["device_ids"]:
                devices.pop(device_id, None)
    return users, devices


def without_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """A user's data as the feed can tell it: a key set to null reads as removed."""
    return {k: v for k, v in data.items() if v is not None}
