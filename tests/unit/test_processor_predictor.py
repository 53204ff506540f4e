"""The predictor seam: rows and predictions per batch of reports, idempotent ids,
straggler onset, XGBoost retrain/hot-swap and warm start (fake client, no broker)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from shardsense.events import TimingReport
from shardsense.settings import Settings
from stream_processors.predictor import PredictionHook, Predictor, prediction_id
from stream_processors.retrain import Retrainer, latest_model, replay_features

pytestmark = pytest.mark.unit


def _report(job: str, worker: int, step0: int, tps: list[float], batch: int = 32) -> TimingReport:
    n = len(tps)
    return TimingReport(
        job, worker, f"{job}-{worker}-{step0}", 1000.0 + step0, {
            "epoch": [0] * n, "step": list(range(step0, step0 + n)), "samples": [batch] * n,
            "data_wait_s": [0.1 * v * batch for v in tps],
            "compute_s": [0.9 * v * batch for v in tps],
            "map_version": [1] * n, "end_ts": [1000.0 + step0 + i for i in range(n)],
        })


def _fleet(rounds: int, slow_from: int | None = None, seed: int = 0, per_report: int = 4):
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        batch = []
        for w in range(4):
            factor = 1.5 if (w == 2 and slow_from is not None and r >= slow_from) else 1.0
            tps = (1e-3 * factor * rng.lognormal(0, 0.05, per_report)).tolist()
            batch.append(_report("job", w, r * per_report, tps))
        yield batch


def test_update_gives_one_row_per_report_and_one_prediction_per_worker(tmp_path) -> None:
    p = Predictor(Settings(data_dir=str(tmp_path), processor_retrain_s=0))
    for batch in _fleet(30):
        rows, preds = p.update(batch)
        assert len(rows) == 4 and len(preds) == 4
    assert {pr.worker_id for pr in preds} == {0, 1, 2, 3}
    for pr in preds:
        assert pr.event_id == prediction_id(f"job-{pr.worker_id}-116")
        assert pr.time_per_sample_s == pytest.approx(1e-3, rel=0.2)
        assert 0.8 < pr.slowdown < 1.2 and not pr.straggler
        assert pr.uncertainty_s > 0 and pr.model_versions["xgboost"] == "none"
        assert pr.based_on_step == 119


def test_onset_is_flagged_within_one_report(tmp_path) -> None:
    p = Predictor(Settings(data_dir=str(tmp_path), processor_retrain_s=0))
    flagged = []
    for r, batch in enumerate(_fleet(60, slow_from=40)):
        _, preds = p.update(batch)
        if r >= 40:
            flagged.append(next(x for x in preds if x.worker_id == 2).straggler)
        else:
            assert not any(x.straggler for x in preds)
    assert flagged[0] and all(flagged)
    assert p.workers[("job", 2)].detector.alarms == 1


class FakeClient:
    """Answers the history queries from a list of worker_features-like rows."""

    def __init__(self, rows):
        self.rows = rows

    def query(self, sql, parameters=None):
        if "count()" in sql:
            return SimpleNamespace(result_rows=[(len(self.rows),)])
        if "job_id, worker_id" in sql:
            return SimpleNamespace(result_rows=[("job", *r) for r in self.rows])
        return SimpleNamespace(result_rows=self.rows)

    def insert(self, *a, **k):
        pass


def _history(n: int = 400):
    rng = np.random.default_rng(1)
    return [(w, 1e-3 * (2.0 if i % 10 == 0 else 1.0) * rng.lognormal(0, 0.03), 1.0, 1e-3)
            for i in range(n) for w in range(2)]


def test_retrain_saves_versioned_models_and_hot_swaps(tmp_path) -> None:
    rows = _history()
    r = Retrainer(FakeClient([(w, tps, s, e) for w, tps, s, e in rows]), "job",
                  tmp_path / "models", every_s=0.0)
    first = r.train_now()
    second = r.train_now()
    assert first and second and (first[0], second[0]) == (1, 2)
    assert latest_model(tmp_path / "models")[0] == 2
    p = Predictor(Settings(data_dir=str(tmp_path), processor_retrain_s=0))
    assert p.xgb.version == "2"  # the newest saved model is loaded on start
    r.poll(now=1e12)
    for _ in range(200):  # poll from the "event loop" until the background retrain is done
        done = r.poll(now=1e12)
        if done:
            break
        r._future and r._future.result(30)
    assert done and done[0] == 3
    r.close()


def test_replay_features_matches_live_inputs() -> None:
    values = [(1e-3 * (1 + (i % 7 == 0)), 1e-3) for i in range(100)]
    X, y = replay_features(values, skip=8)
    assert len(X) == 92 and all(len(row) == 11 for row in X)
    assert max(y) > 1.5  # relative targets: the spikes are ~2x the median


def test_warm_start_replays_history(tmp_path) -> None:
    rows = [(w, tps, tps / e, e) for w, tps, _s, e in _history()]
    p = Predictor(Settings(data_dir=str(tmp_path), processor_retrain_s=0),
                  FakeClient([(w, tps, s, e) for w, tps, s, e in rows]))
    assert p.warm_start() == len(rows)
    wm = p.workers[("job", 0)]
    assert wm.learned > 300 and wm.lags.period == 10


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, value, key):
        self.sent.append((topic, key, value))

    def poll(self, _t):
        return 0

    def flush(self, _t):
        return 0


def test_hook_stores_and_publishes(tmp_path) -> None:
    inserts = []
    client = SimpleNamespace(insert=lambda table, rows, column_names: inserts.append(
        (table, len(rows), len(column_names))))
    s = Settings(data_dir=str(tmp_path), processor_retrain_s=0)
    hook = PredictionHook(s, client, FakeProducer())
    batch = next(iter(_fleet(1)))
    asyncio.run(hook(batch))
    assert ("worker_features", 4, 14) in inserts and ("predictions", 4, 10) in inserts
    assert len(hook.producer.sent) == 4 and hook.stats["predictions"] == 4
