"""Periodic XGBoost retrain on ClickHouse history, off the event loop.

The training set is rebuilt by replaying :class:`LagFeatures` over each
worker's ``v_worker_features`` history (deduplicated), so the model trains on
exactly the inputs it is served. Training runs in a one-thread executor; the
predictor swaps the new booster in when the future is done, on its own thread,
so there are no locks and processing never waits for a retrain. Every model is
saved as UBJ under ``<data_dir>/models`` with a monotonically increasing version.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from stream_processors.features import FEATURE_NAMES, LagFeatures

__all__ = [
    "XGB_PARAMS",
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


class Retrainer:
    """Retrain every ``every_s`` seconds in a background thread; never blocks the caller.

    ``poll()`` is called from the event loop on every batch: it starts a retrain
    when one is due and returns a finished ``(version, booster)`` exactly once.
    Retrains follow traffic: with no new reports there is nothing new to learn,
    and a finished model is swapped in with the next batch.
    """

    def __init__(self, client: Any, job_id: str, model_dir: Path, every_s: float,
                 history_rows: int = 200_000, min_rows: int = 200, rounds: int = 60) -> None:
        self.client = client
        self.job_id = job_id
        self.model_dir = model_dir
        self.every_s = every_s
        self.history_rows = history_rows
        self.min_rows = min_rows
        self.rounds = rounds
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="xgb-retrain")
        self._future: Future[tuple[int, Any] | None] | None = None
        self._next = time.monotonic() + every_s
        self.trainings = 0

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
        if len(y) < self.min_rows:
            log.info("retrain skipped: %d rows of history (< %d)", len(y), self.min_rows)
            return None
        booster = train_booster(X, y, self.rounds)
        version, path = save_model(booster, self.model_dir)
        self.trainings += 1
        log.info("xgboost v%d trained on %d rows in %.2fs -> %s", version, len(y),
                 time.perf_counter() - started, path)
        return version, booster

    def poll(self, now: float | None = None) -> tuple[int, Any] | None:
        now = time.monotonic() if now is None else now
        finished = None
        fut = self._future
        if fut is not None and fut.done():
            self._future = None
            try:
                finished = fut.result()
            except Exception:
                log.exception("xgboost retrain failed; keeping the current model")
        # The slot is free again: start the next retrain now if it is due, or a batch
        # that only collected a skipped retrain would leave the next one to later traffic.
        if self._future is None and now >= self._next:
            self._next = now + self.every_s
            self._future = self._pool.submit(self.train_now)
        return finished

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
