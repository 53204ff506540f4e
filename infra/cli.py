"""``shardsense``: one command line for every service, the stack, and the tools.

A composition root (it may import every service, ``infra`` and ``benchmarks``;
the core never imports it). Each subcommand takes the settings flags (see
``shardsense up --help``) and imports only what it needs, so the processor,
planner and console never import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from shardsense.errors import ShardSenseError
from shardsense.settings import Settings

__all__ = ["COMMANDS", "main"]

log = logging.getLogger("shardsense")


def _service(target: str) -> Callable[[Settings, argparse.Namespace], int]:
    """A subcommand that calls ``module:function(settings)``."""
    module, func = target.split(":")

    def run(settings: Settings, args: argparse.Namespace) -> int:
        result: int = getattr(import_module(module), func)(settings)
        return result

    return run


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import SERVICES, up

    return up(settings, _services(args.services) if args.services else SERVICES)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from benchmarks.demo import main as demo
    from infra.stack import SERVICES

    services = _services(args.services) if args.services else SERVICES
    return demo(settings, seconds=args.seconds, services=services, keep=args.keep)


def _services(spec: str) -> tuple[str, ...]:
    """``--services`` value: a comma list of SERVICES, or ``none``."""
    return () if spec == "none" else tuple(x for x in spec.split(",") if x)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema

    applied = apply_schema(connect(settings.resolved_clickhouse_url))
    print(f"applied: {', '.join(applied) or 'nothing, schema is up to date'}")
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from shardsense.kafka import create_topics, wait_for_broker

    if settings.embedded_broker:
        print("topics: needs an external --kafka-bootstrap (the embedded broker lives in `up`)")
        return 2
    wait_for_broker(settings)
    print(f"created: {', '.join(create_topics(settings)) or 'nothing, all exist'}")
    return 0


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    from infra.sqlcli import main as sql

    return sql(settings, args)


def _settings(settings: Settings, args: argparse.Namespace) -> int:
    from shardsense.settings import reference_markdown

    print(reference_markdown(), end="")
    return 0


#: name -> (help, runner); each takes the settings flags
COMMANDS: dict[str, tuple[str, Callable[[Settings, argparse.Namespace], int]]] = {
    "up": ("run the embedded stack (broker, processor, planner, console)", _up),
    "processor": (
        "run the stream processor alone", _service("stream_processors.service:main")
    ),
    "planner": ("run the planner alone", _service("planner_service.service:main")),
    "console": ("run the web console alone", _service("dash_app:main")),
    "demo": ("stack + simulated workers, 2 of 8 lagging", _demo),
    "migrate": ("apply the ClickHouse schema", _migrate),
    "topics": ("create the Kafka topics on an external cluster", _topics),
    "settings": ("print the configuration reference (Markdown)", _settings),
    "sql": ("one read-only query against the stack or a ClickHouse URL", _sql),
}


#: Tools with their own command lines: ``shardsense NAME ARGS...`` -> ``module:main(ARGS)``.
TOOLS: dict[str, tuple[str, str]] = {
    "bench": ("benchmarks.bench:main", "real DDP training under stragglers vs oracles"),
    "eval": ("benchmarks.evaluate:main", "forecasters and onset detection on traces"),
    "throughput": ("benchmarks.throughput:main", "end-to-end timings/s and lag"),
    "plan-bench": ("benchmarks.plan_bench:main", "plan quality and planning time"),
    "planner-sim": ("benchmarks.planner_sim:main", "the planner's reaction in steps, simulated"),
    "planner-fleet": ("benchmarks.planner_fleet:main", "planner RSS/CPU as many jobs come and go"),
    "overhead": ("benchmarks.overhead:main", "loader instrumentation overhead"),
    "map-lead": ("benchmarks.map_lead:main", "steps until a map is in force; sync point cost"),
    "screenshots": ("benchmarks.screenshots:main", "PNG of each console page"),
    "client-latency": ("benchmarks.client_latency:main",
                       "timing report and shard-map latency of the Kafka clients"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardsense", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the tool list, one per line
    )
    parser.add_argument("--version", action="version", version=f"shardsense {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        Settings.add_arguments(p)
        if name in ("up", "demo"):
            p.add_argument(
                "--services", default="",
                help="comma list of processor,planner,console,sql to run here, or 'none' "
                     "(when they run elsewhere); default all (the console starts sql too)",
            )
        if name == "demo":
            p.add_argument("--seconds", type=float, default=30.0,
                           help="simulated training time (default 30)")
            p.add_argument("--keep", action="store_true",
                           help="keep the stack up after the run (console, SQL) until Ctrl-C")
        if name == "sql":
            import_module("infra.sqlcli").add_arguments(p)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shardsense")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:  # tools parse their own flags (e.g. bench --quick)
        module, func = TOOLS[argv[0]][0].split(":")
        result: int = getattr(import_module(module), func)(argv[1:])
        return result
    parser = build_parser()
    width = max(map(len, TOOLS))
    parser.epilog = "tools (each with its own --help):\n" + "\n".join(
        f"  {name:<{width}}  {doc}" for name, (_, doc) in TOOLS.items()
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_args(args)
    except ShardSenseError as exc:
        print(f"shardsense: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":  # Faust/mode narrate every start and stop at INFO
        for noisy in ("faust", "mode", "aiokafka", "kafka", "werkzeug"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    log.debug("settings: %r", settings)
    try:
        return COMMANDS[args.command][1](settings, args)
    except ShardSenseError as exc:
        print(f"shardsense: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
