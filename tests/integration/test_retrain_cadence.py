"""The retrain cadence against the real schema in chDB: the row count the policy reads,
and a first XGBoost model as soon as the job's history holds enough rows."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from shardsense.clickhouse import connect
from shardsense.settings import Settings
from shardsense.tables import WORKER_FEATURES, FeatureRow
from stream_processors.retrain import Retrainer

pytestmark = pytest.mark.integration


def insert_history(client, job: str, n_per_worker: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    rows = []
    for w in range(4):
        for i in range(start, start + n_per_worker):
            tps = 1e-3 * (2.0 if (w == 1 and i % 30 < 10) else 1.0) * rng.lognormal(0, 0.03)
            rows.append(FeatureRow(job, w, f"{job}-{w}-{i}", 1_700_000_000 + i * 0.25, i * 5,
                                   i * 5, tps, 1e-3, 1e-3, 1e-3, 1e-3, 0.0, 0.0,
                                   tps / 1e-3).values())
    WORKER_FEATURES.insert(client, rows)


def test_first_model_as_soon_as_the_history_holds_enough_rows(clickhouse_url, tmp_path) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    settings = Settings(clickhouse_url=clickhouse_url, data_dir=str(tmp_path), job_id=job,
                        processor_retrain_min_rows=400, processor_retrain_min_interval_s=0)
    client = connect(clickhouse_url)
    r = Retrainer.from_settings(settings, client, tmp_path / "models")
    r.probe_s = 0.0
    insert_history(client, job, 90)  # 360 rows: below the threshold
    r.poll()
    r.wait(60)
    assert r.poll() is None and r.count_rows() == 360
    insert_history(client, job, 20, start=90)  # 440 rows
    deadline = time.monotonic() + 60
    done = None
    while done is None and time.monotonic() < deadline:
        r.poll()
        r.wait(60)
        done = r.poll()
    assert done is not None and done[0] == 1
    assert r.policy.starts == 1 and r.policy.last_rows >= 440
    assert r.policy.due(time.monotonic(), r.policy.last_rows, False) is None
    assert r.trainings == 1 and (tmp_path / "models" / "xgb-v1.ubj").exists()
    r.close()
