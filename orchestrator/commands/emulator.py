"""``evs-snapshot emulator``: serve the local EVS emulator (tests, demos, runbook rehearsal).

Its options are made from ``EmulatorSettings``: each field made with ``settings.option`` is one option
(``--`` and the field's name with dashes, of the field's type, with its default and help), and the
parsed values make the settings.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click

from orchestrator.emulator.seedfiles import read_snapshots, read_volumes
from orchestrator.emulator.settings import OPTION, EmulatorSettings, Option
from orchestrator.errors import UsageError
from orchestrator.options import Finite

F = TypeVar("F", bound=Callable[..., Any])
SEED_FILE = click.Path(path_type=Path, dir_okay=False)
SEED_READERS: dict[str, Callable[[Path], tuple[Any, ...]]] = {
    "volumes": read_volumes,
    "snapshots": read_snapshots,
}
TYPES = typing.get_type_hints(EmulatorSettings)


def probability(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1")
    return value


def _told() -> list[tuple[dataclasses.Field[Any], Option]]:
    """The settings given as options, in field order."""
    return [
        (field, field.metadata[OPTION])
        for field in dataclasses.fields(EmulatorSettings)
        if OPTION in field.metadata
    ]


def _value_type(field: dataclasses.Field[Any], told: Option) -> click.ParamType[Any]:
    """The click type of a setting's value: from its choices, or its field's type and bounds."""
    if told.choices:
        return click.Choice(told.choices)
    if told.file:
        return SEED_FILE
    hint = TYPES[field.name]
    kind = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)  # X | None: X
    bounded = told.low is not None or told.high is not None
    if kind is int:
        low, high = (None if bound is None else int(bound) for bound in (told.low, told.high))
        return click.IntRange(low, high) if bounded else click.INT
    if kind is float:
        return Finite(told.low, told.high) if bounded else click.FLOAT
    return click.STRING


def _option(field: dataclasses.Field[Any], told: Option) -> Callable[[F], F]:
    """The click option of one setting."""
    name = "--" + field.name.replace("_", "-")
    if TYPES[field.name] is bool:
        return click.option(name, is_flag=True, help=told.help)
    extra: dict[str, Any] = {}
    if told.repeat:
        extra["multiple"] = True
    elif not told.file:
        extra["default"] = str(field.default) if told.choices else field.default
        if told.show_default and field.default is not None:
            extra["show_default"] = True
    if told.share:
        extra["callback"] = probability
    return click.option(name, type=_value_type(field, told), help=told.help, **extra)


def settings_options(command: F) -> F:
    """Every option of ``evs-snapshot emulator``, made from ``EmulatorSettings``."""
    for field, told in reversed(_told()):
        command = _option(field, told)(command)
    return command


def settings_from(values: dict[str, Any]) -> EmulatorSettings:
    """The settings the parsed option values tell; seed files are read here (in field order)."""
    given: dict[str, Any] = {}
    for field, told in _told():
        value = values[field.name]
        if told.file:
            given[field.name] = SEED_READERS[field.name](value) if value is not None else ()
        elif told.repeat:
            given[field.name] = tuple(value)
        else:
            given[field.name] = TYPES[field.name](value) if told.choices else value
    return EmulatorSettings(**given)


@click.command("emulator")
@settings_options
def command(**values: Any) -> NoReturn:
    """Serve the local EVS emulator until SIGINT/SIGTERM (tests, demos, runbook rehearsal)."""
    from orchestrator.emulator import serve_forever  # noqa: PLC0415 - keeps --help fast

    settings = settings_from(values)  # a seed file's errors: cli's boundary
    try:  # not entry.run: a signal stops the emulator with exit 0, where entry.run would exit 130/143
        anyio.run(serve_forever, settings)
    except OSError as exc:
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    sys.exit(0)
