"""`evs-snapshot emulator`'s options are made from `EmulatorSettings`: one option per field, of its default."""

from __future__ import annotations

import dataclasses

import click

from orchestrator.commands.emulator import command
from orchestrator.emulator.settings import OPTION, EmulatorSettings
from tests.helpers import settings_as_commanded


def test_no_options_make_the_default_settings() -> None:
    """Without options the command serves exactly `EmulatorSettings()`."""
    assert settings_as_commanded() == EmulatorSettings()


def test_each_option_is_a_field_in_field_order() -> None:
    """Every option is `--` and a settings field's name with dashes; fields without an option keep their default."""
    options = [param.opts[0] for param in command.params if isinstance(param, click.Option)]
    fields = [field.name for field in dataclasses.fields(EmulatorSettings) if OPTION in field.metadata]
    assert options == ["--" + name.replace("_", "-") for name in fields]
    assert {"deleting_seconds", "max_snapshots_per_volume"} <= {
        field.name for field in dataclasses.fields(EmulatorSettings) if OPTION not in field.metadata
    }


def test_values_reach_the_settings_typed() -> None:
    """Flags, choices, numbers and shares given on the command line land in the settings as their field's type."""
    settings = settings_as_commanded(
        *("--any-volume", "--expired-token-answer", "400", "--port", "8080", "--rate-limit", "2.5"),
        *("--burst", "3", "--fault-5xx", "0.25", "--token", "t", "--seed", "7"),
    )
    assert settings == dataclasses.replace(
        EmulatorSettings(),
        any_volume=True,
        expired_token_answer=400,
        port=8080,
        rate_limit=2.5,
        burst=3,
        fault_5xx=0.25,
        token="t",
        seed=7,
    )
