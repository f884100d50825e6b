"""Pier's own items in the feed (docs/destinations.md, section 1): the names, and what a device
item holds. Every accepted change is an item, so that a consumer can rebuild the state from the
feed alone (docs/client-api.md, "The change feed", says how)."""

from __future__ import annotations

from typing import Any

from .model import Device

USER_CREATED = "user_created"
USER_UPDATED = "user_updated"
USER_MERGED = "user_merged"
DEVICE_REGISTERED = "device_registered"
# A device this user had is gone, or gone by this id; data: device_id, reason (one of REASONS)
DEVICE_REMOVED = "device_removed"
REMOVED_BY_CAP = "device_cap"  # the 25-device cap (domain/devices.py)
# found by its token under another device_id: the id the feed knew it by is gone (the item is
# under the user the feed showed it with; the device's new id follows in a device_registered)
REMOVED_RENAMED = "renamed"
REMOVED_DELETED = "deleted"  # DELETE /api/client/devices/{device_id}
REMOVED_REASONS = (REMOVED_BY_CAP, REMOVED_RENAMED, REMOVED_DELETED)
USER_DELETED = "user_deleted"
ITEMS = (USER_CREATED, USER_UPDATED, USER_MERGED, DEVICE_REGISTERED, DEVICE_REMOVED, USER_DELETED)
# A user entering or leaving a dynamic or static list (docs/lists.md); data: list_id, name.
LIST_ENTERED = "list_entered"
LIST_EXITED = "list_exited"
# A client event may not take one of these names (422): Pier's items, and the lists'.
RESERVED_EVENT_NAMES = frozenset((*ITEMS, LIST_ENTERED, LIST_EXITED))
# The items of a user merged into another that leave the feed with it: they describe a user that
# no longer exists, and the merge's own items describe the result (its tracked events move). The
# survivor is evaluated again for every dynamic list, so its own list items say where it is.
# A device_removed stays (it moves to the survivor, as events do): the device's earlier items may
# be under other users, whose items stay; so a device renamed under a user merged away later is
# not left under its former id by a consumer that reads after the merge.
MERGED_AWAY = (USER_CREATED, USER_UPDATED, DEVICE_REGISTERED, LIST_ENTERED, LIST_EXITED)

DEVICE_FIELDS = ("device_id", "token", "os", "os_version", "model", "app_build", "app_version")


def device_state(device: Device) -> tuple[Any, ...]:
    """What a device_registered item says of a device, and its owner (the User: [0]); the
    device id is [1]. Equal states, no item."""
    return (device.user, *(getattr(device, f) for f in DEVICE_FIELDS), dict(device.extra))


def device_data(device: Device) -> dict[str, Any]:
    """The data of a device_registered item: the device as stored."""
    data = {f: getattr(device, f) for f in DEVICE_FIELDS}
    data["extra"] = dict(device.extra)
    return data
