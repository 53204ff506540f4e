"""XGBoost retrains on ClickHouse history, off the event loop, when they are worth it.

The training set is rebuilt by replaying :class:`LagFeatures` over each
worker's ``v_worker_features`` history (deduplicated), so the model trains on
exactly the inputs it is served. Training runs in a one-thread executor; the
predictor swaps the new booster in when the future is done, on its own thread,
so there are no locks and processing never waits for a retrain. Every model is
saved as UBJ under ``<data_dir>/models`` with a monotonically increasing version.

When (:class:`RetrainPolicy`): a fixed 300 s timer meant no XGBoost prediction in
a job's first five minutes. Now the first retrain runs as soon as the history
holds ``first_rows`` rows; later ones when the rows grew by ``growth`` since the
last training set (until the history window is full), when the served error
drifted upwards (ADWIN, :class:`ErrorDrift`), or ``max_interval_s`` after the
last one; never two within ``min_interval_s``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from shardsense.settings import Settings
from stream_processors.features import FEATURE_NAMES, LagFeatures

__all__ = [
    "XGB_PARAMS",
    "ErrorDrift",
    "RetrainPolicy",
    "RetrainReason",
    "Retrainer",
    "latest_model",
    "replay_features",
    "save_model",
    "train_booster",
]

log = logging.getLogger(__name__)

XGB_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "tree_method": "hist",
    "max_depth": 4,
    "eta": 0.1,
    "subsample": 0.9,
    "min_child_weight": 5,
    "nthread": 2,
    "seed": 0,
}
_NAME = re.compile(r"^xgb-v(\d+)\.ubj$")


def replay_features(
    series: Iterable[tuple[float, float]], skip: int = 8
) -> tuple[list[list[float]], list[float]]:
    """Inputs and relative targets of one worker from ``(time_per_sample, fleet_median)``.

    >>> X, y = replay_features([(1.0, 1.0)] * 20, skip=8)
    >>> len(X), len(X[0]), y[0]
    (12, 11, 1.0)
    """
    lf = LagFeatures()
    xs: list[list[float]] = []
    ys: list[float] = []
    for i, (value, fleet) in enumerate(series):
        if i >= skip and lf.ref > 0:
            x = lf.features(fleet)
            xs.append([x[f] for f in FEATURE_NAMES])
            ys.append(value / lf.ref)
        lf.update(value, fleet)
    return xs, ys


def train_booster(
    X: Sequence[Sequence[float]] | np.ndarray, y: Sequence[float] | np.ndarray,
    rounds: int = 60,
) -> Any:
    """Fit a booster on relative inputs and targets (hist, 2 threads)."""
    import xgboost as xgb

    dtrain = xgb.DMatrix(np.asarray(X, dtype=np.float32), label=np.asarray(y, dtype=np.float32),
                         feature_names=list(FEATURE_NAMES))
    return xgb.train(XGB_PARAMS, dtrain, num_boost_round=rounds)


def latest_model(model_dir: Path) -> tuple[int, Path] | None:
    """The highest-versioned saved model in ``model_dir``, if any."""
    best: tuple[int, Path] | None = None
    if model_dir.is_dir():
        for p in model_dir.iterdir():
            m = _NAME.match(p.name)
            if m and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), p)
    return best


def save_model(booster: Any, model_dir: Path) -> tuple[int, Path]:
    """Save as the next version (atomic rename), return ``(version, path)``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    last = latest_model(model_dir)
    version = (last[0] if last else 0) + 1
    path = model_dir / f"xgb-v{version}.ubj"
    tmp = path.with_suffix(".tmp.ubj")
    booster.save_model(str(tmp))
    tmp.replace(path)
    return version, path


def load_model(path: Path) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


HISTORY_SQL = """
SELECT worker_id, time_per_sample_s, slowdown, ewma_tps
FROM (
    SELECT worker_id, ts, time_per_sample_s, slowdown, ewma_tps
    FROM v_worker_features
    WHERE job_id = {job:String}
    ORDER BY ts DESC
    LIMIT {limit:UInt32}
)
ORDER BY worker_id, ts
"""


def history_series(client: Any, job_id: str, limit: int) -> dict[int, list[tuple[float, float]]]:
    """Per worker, ``(time_per_sample, fleet_median)`` in time order from ClickHouse.

    The fleet median at each row is recovered as ``ewma_tps / slowdown``.
    """
    rows = client.query(HISTORY_SQL, parameters={"job": job_id, "limit": limit}).result_rows
    out: dict[int, list[tuple[float, float]]] = {}
    for worker, per_sample_s, slowdown, ewma in rows:
        fleet = ewma / slowdown if slowdown > 0 else ewma
        out.setdefault(int(worker), []).append((float(per_sample_s), float(fleet)))
    return out


COUNT_SQL = "SELECT count() FROM worker_features WHERE job_id = {job:String}"
#: Seconds between two probes (row count + policy) while batches arrive.
PROBE_S = 2.0


class RetrainReason(Enum):
    """Why a retrain started (logged, and counted by ``shardsense eval``)."""

    FIRST = "enough rows for a first model"
    GROWTH = "the history grew"
    DRIFT = "the served error drifted up"
    INTERVAL = "the longest interval passed"


@dataclass
class RetrainPolicy:
    """When to retrain: pure bookkeeping over rows, time and a drift flag (no I/O).

    ``rows`` is the training rows the history holds now; ``floor_rows`` is the
    fewest any retrain trains on (the interval trigger alone would otherwise fit a
    model on a handful of rows); ``max_interval_s`` is the longest wait while new
    rows arrive (0: due at every probe; the processor builds no retrainer at all
    when ``processor_retrain_s`` is 0).

    >>> p = RetrainPolicy(first_rows=1000, min_interval_s=30, max_interval_s=300)
    >>> p.due(now=10.0, rows=999, drifted=False) is None
    True
    >>> p.due(now=10.0, rows=1000, drifted=False)
    <RetrainReason.FIRST: 'enough rows for a first model'>
    >>> p.started(10.0, 1000)
    >>> p.due(now=20.0, rows=5000, drifted=True) is None  # the floor between two retrains
    True
    >>> [p.due(45.0, rows, drifted).name for rows, drifted in ((2000, False), (1500, True))]
    ['GROWTH', 'DRIFT']
    >>> p.due(45.0, 1500, drifted=False) is None
    True
    """

    first_rows: int
    min_interval_s: float
    max_interval_s: float
    growth: float = 1.0
    floor_rows: int = 200
    history_rows: int = 200_000
    created: float = field(default_factory=time.monotonic)
    last_start: float = -math.inf
    last_rows: int = 0
    starts: int = 0

    def __post_init__(self) -> None:
        if self.first_rows < 1 or self.floor_rows < 1 or self.history_rows < 1:
            raise ValueError("first_rows, floor_rows and history_rows must be >= 1")
        if self.min_interval_s < 0 or self.max_interval_s < 0 or self.growth <= 0:
            raise ValueError("min_interval_s and max_interval_s must be >= 0, growth > 0")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetrainPolicy:
        """The processor's policy: ``processor_retrain_*`` settings."""
        values: dict[str, Any] = {
            "first_rows": settings.processor_retrain_min_rows,
            "min_interval_s": float(settings.processor_retrain_min_interval_s),
            "max_interval_s": float(settings.processor_retrain_s),
            "growth": settings.processor_retrain_growth_pct / 100.0,
            "history_rows": settings.processor_retrain_rows,
        }
        return cls(**(values | overrides))

    def due(self, now: float, rows: int, drifted: bool) -> RetrainReason | None:
        """The reason to start a retrain now, or None."""
        if now - self.last_start < self.min_interval_s or rows < self.floor_rows:
            return None
        if not self.starts:
            if rows >= self.first_rows:
                return RetrainReason.FIRST
        elif self.last_rows < self.history_rows and rows >= min(
                self.last_rows * (1.0 + self.growth), self.history_rows):
            return RetrainReason.GROWTH
        elif drifted:
            return RetrainReason.DRIFT
        since = now - (self.last_start if self.starts else self.created)
        if since >= self.max_interval_s and rows > self.last_rows:
            return RetrainReason.INTERVAL
        return None

    def interval_deadline(self) -> float:
        """When the interval trigger comes due (a probe then must not wait for its turn)."""
        return (self.last_start if self.starts else self.created) + self.max_interval_s

    def started(self, now: float, rows: int) -> None:
        self.last_start, self.last_rows = now, rows
        self.starts += 1


class ErrorDrift:
    """Flags a lasting rise of the served error (River ADWIN on one value per batch).

    Fed the mean |relative error| of a batch's scored predictions; a drift counts
    only if the mean of the window ADWIN keeps is higher than before it cut (a
    falling error needs no retrain). ``drifted`` stays set until ``clear``.
    """

    def __init__(self, delta: float = 0.002) -> None:
        from river import drift

        self._adwin: Any = drift.ADWIN(delta=delta)
        self.drifted = False
        self.detections = 0

    def update(self, errors: Sequence[float] | np.ndarray | float) -> bool:
        """Add one batch's errors; True if this batch raised the flag."""
        values = np.asarray(errors, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if not len(values):
            return False
        before = float(self._adwin.estimation)
        self._adwin.update(float(values.mean()))
        if self._adwin.drift_detected and float(self._adwin.estimation) > before:
            self.detections += 1
            self.drifted = True
            return True
        return False

    def clear(self) -> None:
        self.drifted = False


class Retrainer:
    """Retrains in a background thread when :class:`RetrainPolicy` says so; never blocks.

    ``poll()`` is called from the event loop on every batch. At most every
    ``probe_s`` (and at once when the longest interval comes due) it starts a
    probe in the thread: count the job's history rows (one cheap query), ask the
    policy, and train if it says so. It returns a
    finished ``(version, booster)`` exactly once. ``observe_error`` feeds the
    served error to the drift detector. Retrains follow traffic: with no new
    reports nothing is polled, and a finished model is swapped in with the next
    batch.
    """

    def __init__(self, client: Any, job_id: str, model_dir: Path, every_s: float,
                 history_rows: int = 200_000, min_rows: int = 200, rounds: int = 60,
                 policy: RetrainPolicy | None = None, probe_s: float | None = None) -> None:
        self.client = client
        self.job_id = job_id
        self.model_dir = model_dir
        self.history_rows = history_rows
        self.rounds = rounds
        # Without a policy: the settings' defaults (use from_settings to honour a deployment's)
        self.policy = policy or RetrainPolicy.from_settings(
            Settings(), max_interval_s=every_s, history_rows=history_rows)
        self.policy.floor_rows = min_rows
        self.drift = ErrorDrift()
        # A probe is one count query; never wait longer than the longest interval for one.
        self.probe_s = min(PROBE_S, self.policy.max_interval_s) if probe_s is None else probe_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="xgb-retrain")
        self._future: Future[tuple[RetrainReason | None, int, tuple[int, Any] | None]] | None
        self._future = None
        self._next_probe = -math.inf
        self._probe_at = -math.inf
        self._closed = False
        self.trainings = 0

    @classmethod
    def from_settings(cls, settings: Settings, client: Any, model_dir: Path) -> Retrainer:
        """The processor's retrainer, every ``processor_retrain_*`` setting applied (with
        ``processor_retrain_s`` 0 the processor builds none: XGBoost is never retrained)."""
        return cls(client, settings.job_id, model_dir, settings.processor_retrain_s,
                   settings.processor_retrain_rows,
                   policy=RetrainPolicy.from_settings(settings))

    def observe_error(self, errors: Sequence[float] | np.ndarray | float) -> None:
        """One batch's |relative errors| of the served forecasts (drift detection)."""
        self.drift.update(errors)

    def count_rows(self) -> int:
        rows = self.client.query(COUNT_SQL, parameters={"job": self.job_id}).result_rows
        return min(int(rows[0][0]), self.history_rows) if rows else 0

    def train_now(self) -> tuple[int, Any] | None:
        """Query, replay, train, save: the whole retrain, synchronously."""
        started = time.perf_counter()
        series = history_series(self.client, self.job_id, self.history_rows)
        X: list[list[float]] = []
        y: list[float] = []
        for values in series.values():
            xs, ys = replay_features(values)
            X.extend(xs)
            y.extend(ys)
        if len(y) < self.policy.floor_rows:
            log.info("retrain skipped: %d rows of history (< %d)", len(y),
                     self.policy.floor_rows)
            return None
        booster = train_booster(X, y, self.rounds)
        version, path = save_model(booster, self.model_dir)
        self.trainings += 1
        log.info("xgboost v%d trained on %d rows in %.2fs -> %s", version, len(y),
                 time.perf_counter() - started, path)
        return version, booster

    def _probe(self, now: float, drifted: bool
               ) -> tuple[RetrainReason | None, int, tuple[int, Any] | None]:
        """In the thread: count, decide, train. The policy is only read here."""
        rows = self.count_rows()
        reason = self.policy.due(now, rows, drifted)
        if reason is None or self._closed:  # closing: no 1 s training to hold the exit up
            return None, rows, None
        log.info("xgboost retrain: %s (%d rows)", reason.value, rows)
        return reason, rows, self.train_now()

    def poll(self, now: float | None = None) -> tuple[int, Any] | None:
        now = time.monotonic() if now is None else now
        finished = None
        fut = self._future
        if fut is not None and fut.done():
            self._future = None
            try:
                reason, rows, finished = fut.result()
            except Exception:
                log.exception("xgboost retrain failed; keeping the current model")
            else:
                if reason is not None:  # bookkeeping on this thread only
                    self.policy.started(self._probe_at, rows)
                    if reason is RetrainReason.DRIFT:
                        self.drift.clear()
        deadline = self.policy.interval_deadline()
        if self._future is None and (now >= self._next_probe
                                     or self._probe_at < deadline <= now):
            self._next_probe = now + self.probe_s
            self._probe_at = now
            self._future = self._pool.submit(self._probe, now, self.drift.drifted)
        return finished

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running probe (and its training) is done; for tests and tools."""
        if self._future is not None:
            self._future.exception(timeout)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
