"""One typed settings object for every service, read from env vars and CLI flags.

Each setting is declared once, as a dataclass field: its type is the annotation,
its default the field default, its env var ``SHARDSENSE_<NAME>``, its flag
``--<name-with-dashes>``, and its doc the ``doc`` metadata. Precedence: flag >
env var > default. A bad value fails at start-up with :class:`ConfigError`
naming the env var.

Kafka client options (SASL/SSL and friends) pass through unchanged from
``SHARDSENSE_RDKAFKA_<PROPERTY>`` (dots as underscores, e.g.
``SHARDSENSE_RDKAFKA_SASL_PASSWORD`` -> ``sasl.password``) or
``--kafka-option sasl.password=...``; their values never appear in ``repr``.

>>> s = Settings.from_env({"SHARDSENSE_JOB_ID": "resnet",
...                         "SHARDSENSE_RDKAFKA_SASL_PASSWORD": "hunter2"})
>>> s.job_id, s.kafka_options["sasl.password"]
('resnet', 'hunter2')
>>> "hunter2" in repr(s)
False
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shardsense.errors import ConfigError
from shardsense.topics import TopicSpec, topic_specs

__all__ = ["EMBEDDED", "Settings", "redact"]

ENV_PREFIX = "SHARDSENSE_"
RDKAFKA_PREFIX = "SHARDSENSE_RDKAFKA_"
#: ``kafka_bootstrap`` value that starts the bundled broker on loopback.
EMBEDDED = "embedded"
_SECRET_WORDS = ("password", "secret", "token", "jaas", "key.pem", "private", "auth")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


def is_secret(name: str) -> bool:
    """Whether an option's value must never be shown (passwords, keys, tokens)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(url: str) -> str:
    """A URL without its password, for logs.

    >>> redact("http://bob:hunter2@ch:8123/db")
    'http://bob:***@ch:8123/db'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Settings:
    """Configuration shared by the runtime, processor, planner, console and stack."""

    kafka_bootstrap: str = field(
        default=EMBEDDED,
        metadata=_doc(
            "Kafka bootstrap servers 'host:port[,host:port]', or 'embedded' to start the "
            "bundled Kafka-protocol broker on 127.0.0.1:<broker_port>."
        ),
    )
    broker_port: int = field(
        default=19092, metadata=_doc("Loopback port of the embedded broker.", port=True)
    )
    clickhouse_url: str = field(
        default="",
        metadata=_doc(
            "ClickHouse: 'chdb:///path' runs the engine in-process (one process per path), "
            "'http(s)://user:pass@host:8123/db' talks to a server. Empty: "
            "chdb://<data_dir>/clickhouse."
        ),
    )
    data_dir: str = field(default=".shardsense", metadata=_doc("Local state: chDB files, models."))
    job_id: str = field(
        default="default", metadata=_doc("Training job this process belongs to.", ident=True)
    )
    topic_timings: str = field(
        default="shardsense.timings", metadata=_doc("Timing-report topic.", ident=True)
    )
    topic_predictions: str = field(
        default="shardsense.predictions", metadata=_doc("Prediction topic.", ident=True)
    )
    topic_shard_maps: str = field(
        default="shardsense.shard-maps", metadata=_doc("Compacted shard-map topic.", ident=True)
    )
    topic_dead_letters: str = field(
        default="shardsense.dead-letters", metadata=_doc("Dead-letter topic.", ident=True)
    )
    topic_partitions: int = field(
        default=4, metadata=_doc("Partitions of the timings, predictions and shard-map topics "
                                 "(one count: co-partitioned by job id).", minimum=1)
    )
    max_event_bytes: int = field(
        default=1_048_576,
        metadata=_doc("Largest accepted event payload in bytes.", minimum=1024),
    )
    console_host: str = field(
        default="127.0.0.1", metadata=_doc("Console bind address; loopback unless you expose it.")
    )
    console_port: int = field(default=8050, metadata=_doc("Console HTTP port.", port=True))
    console_auth: str = field(
        default="",
        metadata=_doc("Basic auth 'user:password' for the console and the SQL endpoint; "
                     "empty = none.", secret=True),
    )
    sql_host: str = field(
        default="127.0.0.1",
        metadata=_doc("Bind address of the read-only ClickHouse HTTP endpoint the stack serves "
                      "over its chDB; loopback unless you expose it (then set console_auth)."),
    )
    sql_port: int = field(
        default=8123,
        metadata=_doc("Port of that endpoint (ClickHouse's own HTTP port by default), for curl, "
                      "clickhouse-connect, Grafana and `shardsense sql`.", port=True),
    )
    console_refresh_ms: int = field(
        default=2000, metadata=_doc("Console live-page refresh interval (ms).", minimum=250)
    )
    console_sql_timeout_s: int = field(
        default=10, metadata=_doc("Time limit of one console SQL query (s).", minimum=1)
    )
    console_sql_max_rows: int = field(
        default=5000, metadata=_doc("Row limit of one console SQL result.", minimum=1)
    )
    log_level: str = field(
        default="INFO",
        metadata=_doc("Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    # -- planner (planner_service/); integers with units in the name, as only ints parse
    planner_algorithm: str = field(
        default="minmax",
        metadata=_doc(
            "Planning algorithm: 'minmax' (optimal integer step time, fewest moves), "
            "'proportional' (largest remainder) or 'static' (equal split, baseline).",
            choices=("minmax", "proportional", "static"),
        ),
    )
    planner_shard_bytes: int = field(
        default=0,
        metadata=_doc(
            "Bytes a rank must fetch per shard it receives: the move cost's prior. 0 = the "
            "runtime's virtual shards (index ranges over a dataset every rank reads anyway: "
            "moving one costs no transfer, measured ~0 extra data-wait); the cost is then "
            "learnt from data-wait (planner_learn_bandwidth).", minimum=0),
    )
    planner_bandwidth_bps: int = field(
        default=100_000_000,
        metadata=_doc("Shard-fetch bandwidth in BYTES/s of the prior (with planner_shard_bytes).",
                      minimum=1),
    )
    planner_learn_bandwidth: int = field(
        default=1,
        metadata=_doc(
            "1: learn the move cost per shard from the extra data-wait the last map change "
            "caused on the ranks that received shards (ClickHouse batch_timings); 0: keep "
            "the prior.",
            choices=(0, 1),
        ),
    )
    planner_warmup_ms: int = field(
        default=0,
        metadata=_doc("Fixed cost of any map change (ms), on top of the per-shard cost; 0: "
                      "the runtime applies a map at a step boundary with no pause.", minimum=0),
    )
    planner_min_improvement_pct: int = field(
        default=5,
        metadata=_doc("Hysteresis: publish only if step time improves by more (%).", minimum=0),
    )
    planner_gain_margin_pct: int = field(
        default=200,
        metadata=_doc("Publish only if predicted gain >= this % of the move cost.", minimum=100),
    )
    planner_evidence_steps: int = field(
        default=2,
        metadata=_doc(
            "Batches of evidence a new plan needs: counted from the onset step the processor "
            "reports for a changed rank (its alarm), else from the first evaluation the plan "
            "won; it must keep winning meanwhile.", minimum=0),
    )
    planner_smoothing_pct: int = field(
        default=30,
        metadata=_doc("EWMA weight (%) of each new prediction in a rank's level (100 = no "
                      "smoothing); it restarts at every new level (onset step, straggler flag).",
                      minimum=1),
    )
    planner_rank_timeout_s: int = field(
        default=60,
        metadata=_doc("A rank silent this long is treated as gone (forces a replan).", minimum=1),
    )
    planner_horizon_steps: int = field(
        default=0,
        metadata=_doc("Steps a gain is counted over; 0 = one epoch (num_samples // batch).",
                      minimum=0),
    )
    planner_debounce_ms: int = field(
        default=20,
        metadata=_doc("A job is evaluated this long after the first new prediction or map "
                      "arrived (one processor batch's predictions of all ranks at once).",
                      minimum=0, maximum=5000),
    )
    planner_interval_ms: int = field(
        default=1000,
        metadata=_doc("Every job is re-checked this often without new input (rank time-outs, "
                      "scheduled maps), and a job's 'skipped' decision is stored at most this "
                      "often (ms).", minimum=50),
    )
    planner_schedule_ahead: int = field(
        default=1,
        metadata=_doc("1: when ranks' forecasts say a level changes, publish the map for it "
                      "ahead with an apply step at the change; 0: react to the level now only.",
                      choices=(0, 1)),
    )
    planner_forecast_confidence_pct: int = field(
        default=50,
        metadata=_doc("A rank's forecast counts only at forecast_confidence >= this (%); the "
                      "expected gain is also weighed by it.", minimum=0, maximum=100),
    )
    planner_lead_steps: int = field(
        default=16,
        metadata=_doc("Steps from publishing a map until it is in force at the latest (the "
                      "runtime's sync interval + prefetch lead): scheduled maps are published "
                      "this far ahead, and the next one only after the last is in force.",
                      minimum=1),
    )
    planner_job_idle_s: int = field(
        default=600,
        metadata=_doc("A job without predictions this long is forgotten (its state freed; its "
                      "maps stay on the compacted topic).", minimum=1),
    )
    planner_facts_url: str = field(
        default="",
        metadata=_doc("ClickHouse the planner reads the trainers' facts from (batch_timings: the "
                      "map version in force, what a move cost); it writes decisions and maps to "
                      "clickhouse_url. Empty: clickhouse_url. A planner run apart from the "
                      "embedded stack has its own chDB path and points this at the stack's "
                      "read-only SQL endpoint (http://127.0.0.1:<sql_port>)."),
    )
    # -- stream processor learning (stream_processors/predictor.py); measured by `eval`
    processor_forecaster: str = field(
        default="auto",
        metadata=_doc(
            "Served forecaster per worker: 'auto' (lowest recent error of "
            "ewma/river/hybrid/xgboost), "
            "'hybrid' (XGBoost + River residual), 'river', 'xgboost', 'ewma' or 'last'.",
            choices=("auto", "hybrid", "river", "xgboost", "ewma", "last"),
        ),
    )
    processor_retrain_s: int = field(
        default=300,
        metadata=_doc("Longest time between XGBoost retrains on ClickHouse history while "
                      "new rows arrive (s); 0 = never retrain.", minimum=0),
    )
    processor_retrain_rows: int = field(
        default=200_000,
        metadata=_doc("Most recent worker_features rows a retrain reads.", minimum=100),
    )
    processor_warm_start_rows: int = field(
        default=20_000,
        metadata=_doc("Most stored ticks replayed when the processor first sees a job (a "
                      "restart, a handed-over partition): the latest 64 of each rank; "
                      "0 = cold.", minimum=0),
    )
    processor_straggler_pct: int = field(
        default=130,
        metadata=_doc("A worker whose recent slowdown vs the fleet median is at least this "
                      "(%) stays flagged as a straggler after its onset alarm.", minimum=100),
    )
    processor_fetch_wait_ms: int = field(
        default=20,
        metadata=_doc("Longest a processor fetch waits at the broker for data (ms). Faust "
                      "fixes 1500; a broker that answers only when this expires (the "
                      "embedded one) adds up to this to every report's latency (measured "
                      "here: median 34 ms at 100, 4 ms at 10; an idle processor costs 0.03 "
                      "cores at 20 against 0.01 at 100).", minimum=1, maximum=5000),
    )
    processor_batch_max: int = field(
        default=2000,
        metadata=_doc("Most reports (Kafka messages) the processor takes in one batch; a "
                      "batch is what arrived while the previous one was stored.", minimum=1),
    )
    processor_batch_linger_ms: int = field(
        default=5,
        metadata=_doc("When idle, how long the processor waits after a report for others to "
                      "join its batch (ms); under load batches form without waiting.",
                      minimum=0, maximum=1000),
    )
    processor_batch_interval_ms: int = field(
        default=100,
        metadata=_doc("Least time between the starts of two processor batches (ms), unless "
                      "one is full: every batch pays ~13 ms of chDB insert CPU per table, so "
                      "this caps that cost at moderate rates (adds at most this much "
                      "latency; idle reports go at once).", minimum=0, maximum=5000),
    )
    processor_predict_every_ms: int = field(
        default=1000,
        metadata=_doc("A rank's prediction is published when its level may have changed (a "
                      "tick, an onset) and at least this often while it reports (ms).",
                      minimum=0, maximum=600_000),
    )
    processor_tick_steps: int = field(
        default=8,
        metadata=_doc("Steps per tick: the forecasters learn one value per rank per block of "
                      "this many steps (its seconds per sample), whatever the reports packed.",
                      minimum=1, maximum=10_000),
    )
    processor_rank_ttl_s: int = field(
        default=600,
        metadata=_doc("A rank silent this long is forgotten by the processor (its state "
                      "expires; memory follows the ranks live at once).", minimum=1),
    )
    # -- XGBoost retrain cadence (stream_processors/retrain.py, RetrainPolicy); `eval` measures
    processor_retrain_min_rows: int = field(
        default=1000,
        metadata=_doc("First XGBoost retrain as soon as the job's history holds this many "
                      "worker_features rows (not after processor_retrain_s).", minimum=200),
    )
    processor_retrain_growth_pct: int = field(
        default=100,
        metadata=_doc("Retrain again when the history grew by this (%) since the last "
                      "training set (until processor_retrain_rows is reached).", minimum=1),
    )
    processor_retrain_min_interval_s: int = field(
        default=30,
        metadata=_doc("Fewest seconds between two retrains, whatever triggers them (rows, "
                      "a drift of the served error, the longest interval).", minimum=0),
    )
    # -- Kafka clients: healing after broker faults, logs, report and map latency
    telemetry_flush_ms: int = field(
        default=100,
        metadata=_doc("Least time between two timing reports of one rank (ms): a timing "
                      "leaves at once if the rank's last report is older, else with the next "
                      "report; reports carry more timings as the step rate rises, at most "
                      "1000/this reports per second per rank.", minimum=1, maximum=60000),
    )
    map_fetch_wait_ms: int = field(
        default=100,
        metadata=_doc("Longest a shard-map or planner fetch waits at the broker (ms). The "
                      "embedded broker answers an empty fetch only when it expires, so a new "
                      "map waits up to this (measured: p95 51 ms at 100, 12 ms at 20, 249 ms "
                      "before), and each idle consumer costs it ~1% of a core at 100, ~3% at "
                      "20. A broker that long-polls answers at once whatever the value.",
                      minimum=1, maximum=5000),
    )
    kafka_stall_s: int = field(
        default=5,
        metadata=_doc("A producer that has messages outstanding, hears the broker answer, "
                      "and delivers nothing this long is recreated (s).", minimum=1),
    )
    kafka_log_interval_s: int = field(
        default=5,
        metadata=_doc("Kafka client log lines (librdkafka, aiokafka): at most one per client "
                      "per this many seconds; the next line says how many were suppressed.",
                      minimum=0),
    )
    kafka_options: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_doc("Extra librdkafka properties (SASL/SSL), passed through unchanged."),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if self.kafka_bootstrap != EMBEDDED and not re.fullmatch(
            r"[^,\s]+:\d+(,[^,\s]+:\d+)*", self.kafka_bootstrap
        ):
            raise ConfigError(
                env_name("kafka_bootstrap"), "expected 'embedded' or 'host:port[,host:port...]'"
            )
        url = self.resolved_clickhouse_url
        scheme = urlsplit(url).scheme
        if scheme not in ("chdb", "http", "https"):
            raise ConfigError(
                env_name("clickhouse_url"),
                f"scheme {scheme!r} is not supported; use chdb:///path or http(s)://host:port",
            )
        if scheme == "chdb" and not urlsplit(url).path:
            raise ConfigError(env_name("clickhouse_url"), "chdb URL needs a path: chdb:///path")
        facts = urlsplit(self.planner_facts_url).scheme
        if self.planner_facts_url and facts not in ("http", "https"):
            raise ConfigError(
                env_name("planner_facts_url"),
                f"expected http(s)://host:port (a ClickHouse server or the stack's SQL endpoint), "
                f"got scheme {facts!r}: chDB opens one path per process, the planner's own",
            )

    # ------------------------------------------------------------ derived values

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap == EMBEDDED

    @property
    def bootstrap_servers(self) -> str:
        """What Kafka clients connect to (the embedded broker's loopback address)."""
        if self.embedded_broker:
            return f"127.0.0.1:{self.broker_port}"
        return self.kafka_bootstrap

    @property
    def resolved_clickhouse_url(self) -> str:
        if self.clickhouse_url:
            return self.clickhouse_url
        return f"chdb://{Path(self.data_dir).absolute() / 'clickhouse'}"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.resolved_clickhouse_url.startswith("chdb:")

    def topics(self) -> list[TopicSpec]:
        return topic_specs(
            timings=self.topic_timings,
            predictions=self.topic_predictions,
            shard_maps=self.topic_shard_maps,
            dead_letters=self.topic_dead_letters,
            partitions=self.topic_partitions,
        )

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka config: bootstrap, the pass-through options, then ``extra``."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka_options, **extra}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "kafka_options":
                value = {k: ("***" if is_secret(k) else v) for k, v in value.items()}
            elif f.name in ("clickhouse_url", "planner_facts_url"):
                value = redact(value)
            elif f.metadata.get("secret") and value:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    # ------------------------------------------------------------ loading

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "kafka_options":
                continue
            name = env_name(f.name)
            if name in env:
                values[f.name] = _parse(f, name, env[name])
        options = {
            key[len(RDKAFKA_PREFIX) :].lower().replace("_", "."): value
            for key, value in env.items()
            if key.startswith(RDKAFKA_PREFIX)
        }
        options.update(overrides.pop("kafka_options", None) or {})
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values, kafka_options=options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One ``--flag`` per setting; defaults stay ``None`` so env vars still apply."""
        group = parser.add_argument_group("settings (flag > env var > default)")
        for f in dataclasses.fields(cls):
            if f.name == "kafka_options":
                group.add_argument(
                    "--kafka-option",
                    action="append",
                    default=None,
                    metavar="PROP=VALUE",
                    help="extra librdkafka property, repeatable (env SHARDSENSE_RDKAFKA_*)",
                )
                continue
            group.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=None,
                # argparse %-formats help text: a literal % (as in "(%)") must be doubled
                help=f"{f.metadata['doc']} [env {env_name(f.name)}, default {f.default!r}]"
                .replace("%", "%%"),
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
        overrides: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = getattr(args, f.name, None)
            if f.name != "kafka_options" and raw is not None:
                overrides[f.name] = _parse(f, "--" + f.name.replace("_", "-"), raw)
        pairs: Sequence[str] = getattr(args, "kafka_option", None) or ()
        options = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ConfigError(
                    "--kafka-option", f"expected PROP=VALUE, got {pair.split('=')[0]!r}"
                )
            options[key] = value
        return cls.from_env(env, kafka_options=options, **overrides)


def reference_markdown() -> str:
    """Every setting as a Markdown table (docs/CONFIGURATION.md is this, kept in sync by a test)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `shardsense.settings.Settings` by `shardsense settings`; do not edit.",
        "Precedence: flag > env var > default.",
        "",
        "| setting | env var | flag | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(Settings):
        if f.name == "kafka_options":
            continue
        default = "" if f.default is dataclasses.MISSING else repr(f.default)
        doc = " ".join(str(f.metadata["doc"]).split()).replace("|", "\\|")
        lines.append(
            f"| `{f.name}` | `{env_name(f.name)}` | `--{f.name.replace('_', '-')}` "
            f"| `{default}` | {doc} |"
        )
    lines += [
        "",
        "Kafka client options pass through unchanged to librdkafka (and, for SASL/SSL, to",
        "Faust's aiokafka): `SHARDSENSE_RDKAFKA_<PROPERTY>` with dots as underscores, e.g.",
        "`SHARDSENSE_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL`, `SHARDSENSE_RDKAFKA_SASL_PASSWORD=...`,",
        "or `--kafka-option sasl.password=...`. Values of keys that look secret are never",
        "shown in logs or `repr`.",
        "",
    ]
    return "\n".join(lines)


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse(f: dataclasses.Field[Any], source: str, raw: str) -> Any:
    if f.type in ("float", float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(source, f"expected a number, got {raw!r}") from None
    if f.type in ("int", int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(source, f"expected an integer, got {raw!r}") from None
    return raw


def _check(f: dataclasses.Field[Any], value: Any) -> None:
    name = env_name(f.name)
    meta = f.metadata
    if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    if meta.get("port") and not 1 <= value <= 65535:
        raise ConfigError(name, f"port must be 1..65535, got {value}")
    if "minimum" in meta and value < meta["minimum"]:
        raise ConfigError(name, f"must be >= {meta['minimum']}, got {value}")
    if "maximum" in meta and value > meta["maximum"]:
        raise ConfigError(name, f"must be <= {meta['maximum']}, got {value}")
    if meta.get("ident") and not _ID.match(value):
        raise ConfigError(name, f"must match {_ID.pattern}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(name, f"must be one of {meta['choices']}, got {value!r}")
    if f.name == "console_auth" and value and ":" not in value:
        raise ConfigError(name, "expected 'user:password'")
