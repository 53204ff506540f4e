"""The processor's consumer fetches with the configured wait, not Faust's fixed 1500 ms."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shardsense.errors import ConfigError
from shardsense.settings import Settings
from stream_processors.app import create_app
from stream_processors.transport import Transport, fetch_wait_ms

pytestmark = pytest.mark.unit


def test_worker_consumer_uses_the_fetch_wait_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({}, kafka_bootstrap="127.0.0.1:9", data_dir=str(tmp_path),
                                 processor_fetch_wait_ms=40)
    app = create_app(settings, client=None)
    assert isinstance(app.transport, Transport)

    async def build() -> int:
        thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
        return fetch_wait_ms(thread._create_worker_consumer(app.transport))

    assert asyncio.run(build()) == 40


def test_fetch_wait_is_bounded() -> None:
    with pytest.raises(ConfigError, match="SHARDSENSE_PROCESSOR_FETCH_WAIT_MS"):
        Settings.from_env({"SHARDSENSE_PROCESSOR_FETCH_WAIT_MS": "60000"})
