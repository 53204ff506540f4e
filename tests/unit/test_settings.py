"""Settings: env and flags parse, bad values name themselves, secrets never show."""

from __future__ import annotations

import argparse
import logging

import pytest

from shardsense.errors import ConfigError
from shardsense.settings import Settings

pytestmark = pytest.mark.unit


def test_defaults_are_embedded_and_loopback() -> None:
    s = Settings.from_env({})
    assert s.embedded_broker and s.bootstrap_servers.startswith("127.0.0.1:")
    assert s.embedded_clickhouse and s.console_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SHARDSENSE_BROKER_PORT": "abc"}, "SHARDSENSE_BROKER_PORT"),
        ({"SHARDSENSE_BROKER_PORT": "70000"}, "SHARDSENSE_BROKER_PORT"),
        ({"SHARDSENSE_CLICKHOUSE_URL": "mysql://x"}, "SHARDSENSE_CLICKHOUSE_URL"),
        ({"SHARDSENSE_CLICKHOUSE_URL": "chdb://"}, "SHARDSENSE_CLICKHOUSE_URL"),
        ({"SHARDSENSE_KAFKA_BOOTSTRAP": "no-port"}, "SHARDSENSE_KAFKA_BOOTSTRAP"),
        ({"SHARDSENSE_JOB_ID": "bad id!"}, "SHARDSENSE_JOB_ID"),
        ({"SHARDSENSE_LOG_LEVEL": "LOUD"}, "SHARDSENSE_LOG_LEVEL"),
        ({"SHARDSENSE_CONSOLE_AUTH": "nocolon"}, "SHARDSENSE_CONSOLE_AUTH"),
        ({"SHARDSENSE_PLANNER_FACTS_URL": "chdb:///x"}, "SHARDSENSE_PLANNER_FACTS_URL"),
    ],
)
def test_bad_values_fail_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.setting == named  # the error names the env var to fix...
    assert named in str(info.value)  # ...and so does its message


def test_flags_beat_env_and_kafka_options_pass_through() -> None:
    parser = argparse.ArgumentParser()
    Settings.add_arguments(parser)
    args = parser.parse_args(
        ["--job-id", "flag-job", "--kafka-option", "sasl.username=bob",
         "--kafka-bootstrap", "k1:9092,k2:9092"]
    )
    s = Settings.from_args(args, env={"SHARDSENSE_JOB_ID": "env-job",
                                      "SHARDSENSE_RDKAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert s.job_id == "flag-job"
    assert s.kafka_config()["security.protocol"] == "SASL_SSL"
    assert s.kafka_config()["sasl.username"] == "bob"
    assert s.kafka_config()["bootstrap.servers"] == "k1:9092,k2:9092"


def test_secrets_never_appear_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings.from_env({
        "SHARDSENSE_RDKAFKA_SASL_PASSWORD": "hunter2",
        "SHARDSENSE_CLICKHOUSE_URL": "https://u:s3cret@ch.example:8443/db",
        "SHARDSENSE_CONSOLE_AUTH": "admin:pa55",
        "SHARDSENSE_PLANNER_FACTS_URL": "http://ro:f4cts@127.0.0.1:8123",
    })
    assert s.kafka_options["sasl.password"] == "hunter2"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").debug("settings: %r", s)
    for secret in ("hunter2", "s3cret", "pa55", "f4cts"):
        assert secret not in repr(s)
        assert secret not in caplog.text


def test_configuration_reference_is_current() -> None:
    from pathlib import Path

    from shardsense.settings import reference_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
    assert doc.read_text() == reference_markdown(), (
        "docs/CONFIGURATION.md is stale: run `shardsense settings > docs/CONFIGURATION.md`"
    )
