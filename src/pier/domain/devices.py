"""Device registration (contract section 4, devices): upsert by device_id then token, the token
follows the latest user, at most 25 devices a user; and removing one device
(DELETE /api/client/devices/{device_id})."""

from __future__ import annotations

from msgspec import UNSET

from .commands import RegisterDevice, RemoveDevice
from .errors import NeedsLoad, NotFound
from .feed import DEVICE_REMOVED, REMOVED_BY_CAP, REMOVED_DELETED
from .model import Device, User
from .state import BatchState

MAX_DEVICES_PER_USER = 25


def register_device(b: BatchState, cmd: RegisterDevice) -> None:
    pid = cmd.project_id
    user = b.resolve(pid, cmd.anonymous_id, cmd.external_id, None)
    if user.devices is None:
        raise NeedsLoad([user.id])
    device = b.devices_by_id.get((pid, cmd.device_id))
    if device is None and cmd.token:
        device = b.devices_by_token.get((pid, cmd.token))
    if device is None:
        device = Device(None, pid, user, cmd.device_id, created_at=b.now)
        b.devices_by_id[(pid, cmd.device_id)] = device
        user.devices.append(device)
    elif device.device_id != cmd.device_id:
        del b.devices_by_id[(pid, device.device_id)]
        device.device_id = cmd.device_id
        b.devices_by_id[(pid, cmd.device_id)] = device
    if cmd.token is not UNSET and cmd.token != device.token:
        _set_token(b, device, cmd.token)
    for field, value in cmd.fields.items():
        setattr(device, field, value)
    if cmd.replace_extra:
        device.extra = dict(cmd.extra)
    elif cmd.extra:
        device.extra = {**device.extra, **cmd.extra}
    _move(device, user)
    b.touch_device(device)
    enforce_device_cap(b, user, device)


def _set_token(b: BatchState, device: Device, token: str | None) -> None:
    pid = device.project_id
    if device.token is not None:
        b.devices_by_token.pop((pid, device.token), None)
    if token is not None:
        other = b.devices_by_token.get((pid, token))
        if other is not None and other is not device:
            other.token = None  # a token lives on one device only
            b.touch_device(other)
        b.devices_by_token[(pid, token)] = device
    device.token = token


def _move(device: Device, user: User) -> None:
    if device.user is user:
        return
    old = device.user
    if old.devices is not None and device in old.devices:
        old.devices.remove(device)
    device.user = user
    assert user.devices is not None
    user.devices.append(device)


def enforce_device_cap(b: BatchState, user: User, keep: Device | None = None) -> None:
    """Beyond the cap, devices go least recently updated first, token-less ones before those
    with a token (a token is what a device is kept for); never `keep`, the one registering.
    Each one the feed has described gets a device_removed item, before the items of the
    change that pushed it out: a consumer of the feed drops it before adding another."""
    assert user.devices is not None
    excess = len(user.devices) - MAX_DEVICES_PER_USER
    if excess <= 0:
        return
    oldest = sorted(
        (d for d in user.devices if d is not keep),
        key=lambda d: (d.token is not None, d.updated_at, d.seq, d.id or 0),
    )
    for device in oldest[:excess]:
        _remove(b, device, REMOVED_BY_CAP)


def remove_device(b: BatchState, cmd: RemoveDevice) -> None:
    """The device goes, its token is free again; NotFound (nothing changed) when there is none."""
    device = b.devices_by_id.get((cmd.project_id, cmd.device_id))
    if device is None:
        raise NotFound(f"No device with device_id {cmd.device_id!r} in this project.")
    _remove(b, device, REMOVED_DELETED)


def _remove(b: BatchState, device: Device, reason: str) -> None:
    """Drop a device from the batch's indexes and its user; a device_removed item when the feed
    has described it (under the id the feed knows it by)."""
    device.deleted = True
    user = device.user
    if user.devices is not None and device in user.devices:
        user.devices.remove(device)
    pid = device.project_id
    del b.devices_by_id[(pid, device.device_id)]
    if device.token is not None and b.devices_by_token.get((pid, device.token)) is device:
        del b.devices_by_token[(pid, device.token)]
    b.touch_device(device, moved_only=True)
    if device.shown is not None:
        b.record(user, DEVICE_REMOVED, {"device_id": device.shown[1], "reason": reason})
