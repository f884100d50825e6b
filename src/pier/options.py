"""The settings of pier.settings as click options: type, default, environment variable and
help all come from each setting's declaration. `pier serve` takes them all (cli.py), the
other commands those they need (commands.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import settings


def setting_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The option of one setting, from its declaration in pier.settings: type, default,
    environment variable and help all come from there."""
    declared = settings.declared(name)
    meta = declared.metadata
    kind: click.ParamType | type
    allowed = settings.choices(name)
    bounds = meta["minimum"], meta["maximum"], meta["above"]
    if allowed is not None:
        kind = click.Choice(allowed)
    elif settings.value_type(name) is int and bounds != (None, None, None):
        kind = click.IntRange(meta["minimum"], meta["maximum"])
    elif settings.value_type(name) is float and bounds != (None, None, None):
        low = meta["above"] if meta["above"] is not None else meta["minimum"]
        kind = click.FloatRange(low, meta["maximum"], min_open=meta["above"] is not None)
    else:
        kind = settings.value_type(name)
    flag = settings.option(name)
    if kind is bool:  # --x/--no-x
        flag = f"{flag}/--no-{flag[2:]}"
    return click.option(
        flag,
        name,
        type=kind,
        default=declared.default,
        show_default=declared.default != "",
        envvar=settings.environment_variable(name),
        show_envvar=True,
        help=meta["help"],
    )


database_option = setting_option("database_url")
# an id as the store keeps it: 1 to 2^63-1 (beyond: click's usage error, not a traceback)
STORED_ID = click.IntRange(1, 2**63 - 1)
project_option = click.option("--project", "project_id", required=True, type=STORED_ID)
DELIVERY_SETTINGS = (
    "secret_key",
    *(f.name for f in settings.table() if f.name.startswith("delivery_")),
)


def delivery_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The settings of delivery (the key that seals destinations' keys, the pacing) as options."""
    for name in reversed(DELIVERY_SETTINGS):
        command = setting_option(name)(command)
    return command


def serve_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every setting as an option of `pier serve`, in the order of the table."""
    for declared in reversed(settings.table()):
        command = setting_option(declared.name)(command)
    return command
