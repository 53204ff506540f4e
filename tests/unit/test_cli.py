"""The command line: every subcommand and tool resolves to real code."""

from __future__ import annotations

from importlib import import_module

import pytest

from infra.cli import COMMANDS, TOOLS, build_parser, main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_is_a_callable_main(name: str) -> None:
    module, func = TOOLS[name][0].split(":")
    assert callable(getattr(import_module(module), func))


def test_every_command_parses_its_settings_flags() -> None:
    parser = build_parser()
    for name in COMMANDS:
        args = parser.parse_args([name, "--job-id", "j1"])
        assert args.command == name and args.job_id == "j1"


def test_tools_get_their_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan-bench", "--help"])
    assert info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_settings_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    assert "SHARDSENSE_KAFKA_BOOTSTRAP" in capsys.readouterr().out
