"""The learning hook inside the real Faust processor (real embedded broker + chDB):
features and predictions are stored once each, a straggler is flagged, XGBoost is
retrained in the background from ClickHouse history and hot-swapped in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from shardsense.clickhouse import connect
from shardsense.events import Prediction, decode
from shardsense.kafka import consumer_config
from shardsense.settings import Settings
from stream_processors.app import ProcessorThread, create_app
from stream_processors.service import default_hooks
from tests.support.fleet import WORKERS, fleet_reports, produce

pytestmark = pytest.mark.integration

def read_predictions(settings: Settings, until: set[str], timeout: float) -> list[Prediction]:
    """Predictions from the topic until every id in ``until`` was seen (or timeout)."""
    consumer = Consumer(consumer_config(settings, f"pred-reader-{time.monotonic_ns()}"))
    consumer.subscribe([settings.topic_predictions])
    seen: list[Prediction] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until <= {p.event_id for p in seen}:
            msg = consumer.poll(0.3)
            if msg is not None and not msg.error():
                event = decode(msg.value(), expect=Prediction)
                assert isinstance(event, Prediction)
                seen.append(event)
    finally:
        consumer.close()
    return seen


def _count(client, sql: str, job: str) -> int:
    return int(client.query(sql, parameters={"j": job}).result_rows[0][0])


def test_processor_learns_flags_the_straggler_and_retrains(settings: Settings) -> None:
    from stream_processors.predictor import prediction_id

    settings = settings.replace(processor_retrain_s=1)
    client = connect(settings.resolved_clickhouse_url)
    wave1 = fleet_reports(settings.job_id, 80, slow_from=50)
    produce(settings, wave1)
    hooks = default_hooks(settings, client)
    processor = ProcessorThread(create_app(settings, client, hooks)).start()
    try:
        last1 = {prediction_id(r.event_id) for r in wave1[-WORKERS:]}
        preds = read_predictions(settings, last1, timeout=60)
        model_dir = Path(settings.data_dir) / "models"
        # Retrains follow traffic: this wave makes one due, the next one swaps it in.
        time.sleep(1.0)
        produce(settings, fleet_reports(settings.job_id, 2, start=80, slow_from=50))
        deadline = time.monotonic() + 30
        while not list(model_dir.glob("xgb-v*.ubj")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(model_dir.glob("xgb-v*.ubj")), "no XGBoost model was trained and saved"
        wave2 = fleet_reports(settings.job_id, 5, start=82, slow_from=50)
        produce(settings, wave2)
        last2 = {prediction_id(r.event_id) for r in wave2[-WORKERS:]}
        preds += read_predictions(settings, last2, timeout=60)
    finally:
        processor.stop()
        for h in hooks:
            h.close()  # type: ignore[attr-defined]

    final = {p.worker_id: p for p in preds if p.event_id in last2}
    assert set(final) == set(range(WORKERS))
    assert final[2].straggler and final[2].slowdown > 1.3
    assert not any(final[w].straggler for w in (0, 1, 3))
    assert all(0.8 < final[w].slowdown < 1.2 for w in (0, 1, 3))
    # 1.033 ms/sample nominal for the fast ranks (0.033 s per 32 samples)
    assert final[0].time_per_sample_s == pytest.approx(0.033 / 32, rel=0.15)
    assert final[0].model_versions["xgboost"] != "none"  # retrained and hot-swapped
    # one row per tick: 87 reports of 10 steps per rank, 8 steps per tick
    job = settings.job_id
    assert _count(client, "SELECT count() FROM v_worker_features WHERE job_id={j:String}",
                  job) == WORKERS * (87 * 10 // settings.processor_tick_steps)
    stored = client.query(
        "SELECT count(), uniqExact(event_id) FROM v_predictions WHERE job_id = {j:String}",
        parameters={"j": job}).result_rows[0]
    assert stored[0] == stored[1] >= len({p.event_id for p in preds})
    onset = client.query(
        "SELECT min(last_step) FROM v_worker_features"
        " WHERE job_id = {j:String} AND worker_id = 2 AND slowdown > 1.3",
        parameters={"j": job}).result_rows[0][0]
    # the onset at step 500 re-levels the rank: its first tick after the alarm is slow
    assert 500 <= onset < 520
