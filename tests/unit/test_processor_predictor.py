"""The predictor seam: tick rows and predictions per batch of reports, idempotent ids,
onset re-levelling, batching, expiry, XGBoost retrain/hot-swap and warm start (fake
client, no broker)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from shardsense.events import TimingReport
from shardsense.settings import Settings
from stream_processors.hook import PredictionHook
from stream_processors.predictor import Predictor, prediction_id, tick_id
from stream_processors.retrain import Retrainer, latest_model, replay_features

pytestmark = pytest.mark.unit

TICK = 8  # processor_tick_steps' default


def _report(job: str, worker: int, step0: int, tps: list[float], batch: int = 32,
            epoch: int = 0) -> TimingReport:
    n = len(tps)
    return TimingReport(
        job, worker, f"{job}-{worker}-{epoch}-{step0}", 1000.0 + step0, {
            "epoch": [epoch] * n, "step": list(range(step0, step0 + n)),
            "samples": [batch] * n, "data_wait_s": [0.1 * v * batch for v in tps],
            "compute_s": [0.9 * v * batch for v in tps],
            "map_version": [1] * n, "end_ts": [1000.0 + step0 + i for i in range(n)],
        })


def _fleet(rounds: int, slow_from: int | None = None, seed: int = 0, per_report: int = 4,
           factor: float = 1.5, workers: int = 4):
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        batch = []
        for w in range(workers):
            f = factor if (w == 2 and slow_from is not None and r >= slow_from) else 1.0
            tps = (1e-3 * f * rng.lognormal(0, 0.05, per_report)).tolist()
            batch.append(_report("job", w, r * per_report, tps))
        yield batch


def _predictor(tmp_path, **kw) -> Predictor:
    return Predictor(Settings(data_dir=str(tmp_path), processor_retrain_s=0, **kw))


def test_update_gives_a_row_per_tick_and_a_prediction_per_worker(tmp_path) -> None:
    p = _predictor(tmp_path)
    rows_per_round = []
    for r, batch in enumerate(_fleet(30)):
        rows, preds = p.update(batch, now=float(r))  # a batch a second: all are due
        rows_per_round.append(len(rows))
        assert len(preds) == 4
    # 4 steps per report, 8 per tick: every other batch completes one tick per worker
    assert rows_per_round == [0, 4] * 15
    assert {pr.worker_id for pr in preds} == {0, 1, 2, 3}
    for pr in preds:
        assert pr.event_id == prediction_id(f"job-{pr.worker_id}-0-116")
        assert pr.time_per_sample_s == pytest.approx(1e-3, rel=0.2)
        assert 0.8 < pr.slowdown < 1.2 and not pr.straggler and pr.onset_step == 0
        assert pr.uncertainty_s > 0 and pr.model_versions["xgboost"] == "none"
        assert (pr.based_on_epoch, pr.based_on_step) == (0, 119)
    last = rows[-1]
    assert last.event_id == tick_id("job", last.worker_id, 14) and last.last_step == 119
    assert last.batches == 120 and 0.05 < last.wait_share < 0.15
    assert last.time_per_sample_s == pytest.approx(1e-3, rel=0.2)


def test_a_rank_publishes_on_news_and_at_least_every_second(tmp_path) -> None:
    """Ticks (every other report here), alarms and flag changes are news; otherwise a
    rank that keeps reporting is predicted once a second (processor_predict_every_ms)."""
    p = _predictor(tmp_path)
    published = []
    for r, batch in enumerate(_fleet(40, per_report=4)):
        _, preds = p.update(batch, now=r * 0.1)  # 10 reports a second per rank
        published.append(len(preds))
    assert published[:4] == [4, 4, 0, 4]  # first sight, tick, nothing, tick
    assert sum(published) == 4 * 21  # one first sight + 20 ticks per rank
    quiet = _predictor(tmp_path / "q")
    counts = [len(quiet.update([_report("job", 0, r, [1e-3])], now=r * 0.3)[1])
              for r in range(10)]  # a step every 0.3 s: a tick at step 7
    assert counts == [1, 0, 0, 0, 1, 0, 0, 1, 0, 0]


def test_a_rank_is_predicted_before_its_first_tick(tmp_path) -> None:
    p = _predictor(tmp_path)
    rows, preds = p.update([_report("j", 0, 0, [2e-3, 2e-3])], now=0.0)
    assert rows == [] and preds[0].time_per_sample_s == pytest.approx(2e-3)
    assert preds[0].model_versions["served"] == "partial"


def test_onset_is_flagged_and_re_levelled_at_once(tmp_path) -> None:
    """A 2.5x onset: the alarm's prediction is already at the new level (no EWMA
    ramp), and ``onset_step`` says where it began."""
    p = _predictor(tmp_path)
    onset_round = 60
    first = None
    for r, batch in enumerate(_fleet(onset_round + 6, slow_from=onset_round, factor=2.5)):
        _, preds = p.update(batch, now=r * 0.2)  # 4 steps per report at 20 steps/s
        if r < onset_round:
            assert not any(x.straggler for x in preds)
            continue
        mine = [x for x in preds if x.worker_id == 2]
        if mine:
            slow = mine[0]
            if first is None and slow.straggler:
                first = (r, slow)
    assert first is not None
    r, alarm = first
    assert r - onset_round <= 1  # within the report after the onset
    assert alarm.time_per_sample_s == pytest.approx(2.5e-3, rel=0.1)
    assert abs(alarm.onset_step - onset_round * 4) <= 1
    assert alarm.slowdown > 2.0 and alarm.model_versions["served"] == "onset"
    assert int(p.onset.alarms[p.slots.index[("job", 2)]]) == 1
    assert slow.time_per_sample_s == pytest.approx(2.5e-3, rel=0.1)  # holds after the tick


def test_batching_changes_only_what_divides_by_the_fleet_median(tmp_path) -> None:
    """The same reports one per batch or all in one batch: the same ticks, values and
    levels (fleet-relative columns may differ: the median is taken per batch)."""
    reports = [r for batch in _fleet(12, per_report=3) for r in batch]
    one = _predictor(tmp_path / "a")
    rows_one = [row for r in reports for row in one.update([r], now=0.0)[0]]
    rows_all = _predictor(tmp_path / "b").update(reports, now=0.0)[0]
    one_by_id = {r.event_id: (r.time_per_sample_s, r.ewma_tps, r.last_step) for r in rows_one}
    all_by_id = {r.event_id: (r.time_per_sample_s, r.ewma_tps, r.last_step) for r in rows_all}
    assert sorted(one_by_id) == sorted(all_by_id)
    for event_id, values in one_by_id.items():
        assert all_by_id[event_id] == pytest.approx(values, rel=1e-12)
    assert len(rows_one) == 4 * (12 * 3 // TICK)


def test_a_replayed_report_is_not_learnt_twice(tmp_path) -> None:
    p = _predictor(tmp_path)
    batches = list(_fleet(8))
    for b in batches:
        p.update(b, now=0.0)
    learned = p.learners.learned.copy()
    rows, _ = p.update(batches[-3] + batches[-2] + batches[-1], now=0.0)
    assert rows == [] and (p.learners.learned == learned).all()


def test_silent_ranks_expire_and_memory_follows_the_live_ranks(tmp_path) -> None:
    """10,000 ranks come and go, 1,000 at a time: slots are reused, memory is bounded."""
    p = _predictor(tmp_path, processor_rank_ttl_s=30)
    for wave in range(10):
        now = wave * 60.0
        for r in range(3):
            p.update([_report(f"job{wave}", w, r * 4, [1e-3] * 4) for w in range(1000)],
                     now=now + r)
    assert len(p.slots) == 1000 and p.slots.capacity <= 1024
    assert p.memory_bytes() < 12 * 2**20
    assert set(p.slots.job_ids) == {"job9"}


class FakeClient:
    """Answers the history queries from a list of worker_features-like rows."""

    def __init__(self, rows):
        self.rows = rows

    def query(self, sql, parameters=None):
        if "count()" in sql:  # the retrain policy's row count
            return SimpleNamespace(result_rows=[(len(self.rows),)])
        if "epoch, last_step" in sql:  # the warm start
            return SimpleNamespace(result_rows=[("job", w, 0, i, tps, s, e)
                                                for i, (w, tps, s, e) in enumerate(self.rows)])
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
    p = _predictor(tmp_path)
    assert p.xgb.version == "2"  # the newest saved model is loaded on start
    r.poll(now=1e12)
    for _ in range(200):  # poll from the "event loop" until the background retrain is done
        done = r.poll(now=1e12)
        if done:
            break
        r._future and r._future.result(30)
    assert done and done[0] == 3
    r.close()
    _, preds = p.update(next(iter(_fleet(1))), now=0.0)
    assert preds[0].model_versions["xgboost"] == "2"


def test_replay_features_matches_live_inputs() -> None:
    values = [(1e-3 * (1 + (i % 7 == 0)), 1e-3) for i in range(100)]
    X, y = replay_features(values, skip=8)
    assert len(X) == 92 and all(len(row) == 11 for row in X)
    assert max(y) > 1.5  # relative targets: the spikes are ~2x the median


def test_a_new_job_is_warm_started_from_its_stored_ticks(tmp_path) -> None:
    """The hook replays a job's stored ticks when it first sees the job (a restart, a
    handed-over partition); ticks already stored are not learnt again."""
    rows = [(w, tps, tps / e, e) for w, tps, _s, e in _history()]
    client = FakeClient(rows)
    client.insert = lambda *a, **k: None
    hook = PredictionHook(Settings(data_dir=str(tmp_path), processor_retrain_s=0), client,
                          FakeProducer())
    p = hook.predictor
    asyncio.run(hook([_report("job", 0, 0, [1e-3] * 8)]))
    assert hook.stats["warm_started"] == len(rows)
    slot = p.slots.index[("job", 0)]
    assert p.learners.learned[slot] > 300 and p.lags.period[slot] == 10
    learned = int(p.learners.learned[slot])
    asyncio.run(hook([_report("job", 0, 8, [1e-3] * 8)]))  # steps long stored: skipped
    assert int(p.learners.learned[slot]) == learned and hook.stats["warm_started"] == len(rows)
    hook.forget({"job"})
    assert ("job", 0) not in p.slots.index


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, value, key):
        self.sent.append((topic, key, value))

    def poll(self, _t):
        return 0

    def flush(self, _t):
        return 0


def test_hook_stores_and_publishes_keyed_by_job(tmp_path) -> None:
    inserts = []
    client = SimpleNamespace(insert=lambda table, rows, column_names: inserts.append(
        (table, len(rows), len(column_names))))
    s = Settings(data_dir=str(tmp_path), processor_retrain_s=0)
    hook = PredictionHook(s, client, FakeProducer())
    for batch in _fleet(2):
        asyncio.run(hook(batch))
    assert ("worker_features", 4, 15) in inserts and ("predictions", 4, 15) in inserts
    assert len(hook.producer.sent) == 8 and hook.stats["predictions"] == 8
    assert {key for _t, key, _v in hook.producer.sent} == {b"job"}


def test_predictions_carry_the_recurrence_forecast(tmp_path) -> None:
    """A co-tenant burst (rank 1 2x for 50 of every 150 steps): the predictions forecast
    the coming changes in seconds, with a confidence, and decode as valid events."""
    from shardsense.events import Prediction, decode, encode

    p = _predictor(tmp_path)
    rng = np.random.default_rng(7)
    per = 10
    for r in range(100):  # 1,000 steps
        batch = []
        for w in range(4):
            steps = np.arange(r * per, (r + 1) * per)
            f = np.where((w == 1) & (steps % 150 < 50), 2.0, 1.0)
            batch.append(_report("job", w, r * per, (1e-3 * f * rng.lognormal(0, 0.03, per)
                                                     ).tolist()))
        _, preds = p.update(batch, now=float(r))
    burst = next(x for x in preds if x.worker_id == 1)
    flat = next(x for x in preds if x.worker_id == 0)
    assert burst.model_versions["recurrence"] == "recurring:150"
    assert burst.forecast_offsets and burst.forecast_confidence > 0.5
    assert (burst.based_on_step + burst.forecast_offsets[0]) % 150 in (0, 50)
    assert {round(v * 1e3) for v in burst.forecast_time_per_sample_s} == {1, 2}
    assert flat.forecast_offsets == [] and flat.forecast_confidence == 0.0
    assert decode(encode(burst), expect=Prediction) == burst
