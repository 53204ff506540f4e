"""One trace through every measurement of ``shardsense eval``, and sums over a family."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmarks.evaluate.outcomes import (
    LoopConfig,
    Outcome,
    RecurrenceScore,
    closed_loop,
    recurrence_forecasts,
    score_recurrence,
)
from benchmarks.evaluate.progressive import MODELS, PolicyCadence, Scores, progressive
from shardsense.settings import Settings
from stream_processors.retrain import RetrainPolicy

__all__ = ["LOOP_MODELS", "FamilyResult", "evaluate_trace"]

#: Forecasters replayed in the closed loop (``last`` and bare ``xgboost`` only in the MAE).
LOOP_MODELS = ("ewma", "river", "hybrid", "auto")


@dataclass
class FamilyResult:
    """Everything measured over a family's traces (summed over seeds)."""

    name: str
    scores: Scores = field(default_factory=lambda: Scores(dict.fromkeys((*MODELS, "oracle"),
                                                                        0.0)))
    old: Scores = field(default_factory=lambda: Scores({"xgboost": 0.0, "hybrid": 0.0}))
    outcome: Outcome = field(default_factory=Outcome)
    rec: RecurrenceScore = field(default_factory=RecurrenceScore)
    first_retrain_s: list[float] = field(default_factory=list)  # per trace; inf = none
    retrains: int = 0
    old_first_retrain_s: list[float] = field(default_factory=list)
    cost_s: list[float] = field(default_factory=list)
    traces: int = 0

    def add(self, other: FamilyResult) -> None:
        for mine, theirs in ((self.scores, other.scores), (self.old, other.old)):
            for k, v in theirs.abs_err.items():
                mine.abs_err[k] = mine.abs_err.get(k, 0.0) + v
            mine.n += theirs.n
        for k, v in other.outcome.total_s.items():
            self.outcome.total_s[k] = self.outcome.total_s.get(k, 0.0) + v
        self.rec.add(other.rec)
        self.first_retrain_s += other.first_retrain_s
        self.old_first_retrain_s += other.old_first_retrain_s
        self.retrains += other.retrains
        self.cost_s += other.cost_s
        self.traces += other.traces


def _clock(tick_s: float | np.ndarray, tick: int) -> float:
    if np.isscalar(tick_s):
        return float(tick) * float(tick_s)  # type: ignore[arg-type]
    return float(np.sum(np.asarray(tick_s)[:tick]))


def _rolling_median(tps: np.ndarray, width: int = 5) -> np.ndarray:
    """A recorded run's level where nothing better is known: a centred running median."""
    pad = np.pad(tps, ((width // 2, width // 2), (0, 0)), mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(pad, width, axis=0)
    return np.asarray(np.median(view, axis=-1))


def evaluate_trace(name: str, tps: np.ndarray, clean: np.ndarray | None,
                   tick_s: float | np.ndarray, global_batch: int, loop: LoopConfig,
                   settings: Settings, warmup: int = 200) -> FamilyResult:
    """MAE (new and old retrain cadence), closed loop and recurrence error of one trace."""
    new = PolicyCadence(RetrainPolicy.from_settings(settings), tick_s)
    scores = progressive(tps, warmup=warmup, clean=clean, cadence=new, keep=True,
                         served=settings.processor_forecaster)
    old_cadence = PolicyCadence.fixed_timer(float(settings.processor_retrain_s), tick_s)
    old = progressive(tps, models=("xgboost", "hybrid"), warmup=warmup, cadence=old_cadence)
    forecasts, cost_s = recurrence_forecasts(tps, scores.fleet, loop)
    preds = {m: scores.preds[m] for m in LOOP_MODELS}
    outcome = closed_loop(tps, preds, scores.fleet, forecasts, global_batch, loop)
    truth = clean if clean is not None else _rolling_median(tps)
    rec = score_recurrence(truth, scores.preds["auto"], scores.fleet, forecasts, loop)
    scores.preds, old.preds = {}, {}
    return FamilyResult(
        name, scores, old, outcome, rec,
        first_retrain_s=[_clock(tick_s, new.starts[0]) if new.starts else float("inf")],
        retrains=len(new.starts),
        old_first_retrain_s=[_clock(tick_s, old_cadence.starts[0]) if old_cadence.starts
                             else float("inf")],
        cost_s=[cost_s], traces=1)
