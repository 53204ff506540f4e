"""The command line, through its installed entry point: every command and tool answers --help.

The test finds the ``shardsense`` console script's function from the package
metadata (so it follows the entry point wherever it lives) and runs each
subcommand and tool with ``--help`` in this process.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pytest

from shardsense.settings import Settings, env_name

pytestmark = pytest.mark.unit


def _entry_point() -> Callable[..., Any]:
    (script,) = entry_points(group="console_scripts", name="shardsense")
    main: Callable[..., Any] = script.load()
    return main


def _module() -> Any:
    return sys.modules[_entry_point().__module__]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = _entry_point()(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return int(code or 0), captured.out + captured.err


SETTING_FLAGS = [f.name for f in dataclasses.fields(Settings) if f.name != "kafka_options"]


@pytest.mark.parametrize("name", sorted(_module().COMMANDS))
def test_every_command_answers_help_with_every_setting(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run([name, "--help"], capsys)
    assert code == 0, out
    assert out.startswith("usage: shardsense " + name)
    flat = " ".join(out.split())
    for setting in SETTING_FLAGS:
        assert "--" + setting.replace("_", "-") in flat, setting
        assert env_name(setting) in flat.replace("- ", "-").replace(" _", "_"), setting


@pytest.mark.parametrize("name", sorted(_module().TOOLS))
def test_every_tool_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run([name, "--help"], capsys)
    assert code == 0, out
    assert "usage" in out.lower()


def test_top_level_help_lists_commands_and_tools(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(["--help"], capsys)
    assert code == 0
    module = _module()
    for name in [*module.COMMANDS, *module.TOOLS]:
        assert name in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    code, out = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"shardsense {version('shardsense')}"


def test_every_command_parses_its_settings_flags() -> None:
    parser = _module().build_parser()
    for name in _module().COMMANDS:
        args = parser.parse_args([name, "--job-id", "j1"])
        assert args.command == name and args.job_id == "j1"


def test_settings_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(["settings"], capsys)
    assert code == 0 and "SHARDSENSE_KAFKA_BOOTSTRAP" in out


@pytest.mark.parametrize(
    "sql", ["DROP TABLE batch_timings", "SELECT * FROM `file`('/etc/passwd')", "SELECT 1; SELECT 2"]
)
def test_sql_refuses_before_connecting(sql: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(["sql", sql, "--sql-port", "1"], capsys)
    assert code == 1
    assert out.startswith("shardsense sql: Refused:"), out


def test_sql_says_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(["sql", "SELECT 1", "--url", "http://127.0.0.1:1"], capsys)
    assert code == 1 and "nothing answers at http://127.0.0.1:1" in out
