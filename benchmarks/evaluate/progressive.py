"""Progressive validation of the forecasters, with XGBoost retrained on a cadence.

Every model predicts each tick before it learns it, exactly as the processor
does. XGBoost is retrained on all history so far when the cadence says so: the
fixed tick schedule of the old eval (:class:`EveryTicks`), or the processor's
:class:`~stream_processors.retrain.RetrainPolicy` on a simulated clock
(:class:`PolicyCadence`: the old 300 s timer is that policy with
``first_rows`` out of reach). A retrain lands at once (the processor's takes
~1 s in the background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream_processors.features import FEATURE_NAMES, FleetState, LagFeatures
from stream_processors.models import Forecaster, XGBoostForecaster, make_forecaster
from stream_processors.retrain import ErrorDrift, RetrainPolicy, train_booster

__all__ = ["MODELS", "Cadence", "EveryTicks", "PolicyCadence", "Scores", "progressive"]

MODELS = ("last", "ewma", "river", "xgboost", "hybrid", "auto")


class Cadence(Protocol):
    """When progressive validation retrains XGBoost."""

    starts: list[int]

    def due(self, tick: int, rows: int) -> bool: ...

    def observe(self, errors: np.ndarray) -> None: ...


@dataclass
class EveryTicks:
    """The old eval's schedule: every ``every`` ticks from ``warmup`` on (> 100 rows)."""

    every: int = 300
    warmup: int = 200
    starts: list[int] = field(default_factory=list)

    def due(self, tick: int, rows: int) -> bool:
        hit = tick >= self.warmup and (tick - self.warmup) % self.every == 0 and rows > 100
        if hit:
            self.starts.append(tick)
        return hit

    def observe(self, errors: np.ndarray) -> None:
        pass


class PolicyCadence:
    """The processor's policy on a clock of ``tick_s`` seconds per tick (scalar or per tick).

    The drift detector sees the served model's relative errors, one batch per tick.
    """

    def __init__(self, policy: RetrainPolicy, tick_s: float | np.ndarray,
                 drift: bool = True) -> None:
        self.policy = policy
        self.policy.created = 0.0
        self.tick_s = tick_s
        self.use_drift = drift
        self.drift = ErrorDrift()
        self.starts: list[int] = []
        self.reasons: list[str] = []

    def _now(self, tick: int) -> float:
        if np.isscalar(self.tick_s):
            return float(tick) * float(self.tick_s)  # type: ignore[arg-type]
        return float(np.sum(np.asarray(self.tick_s)[:tick]))

    def due(self, tick: int, rows: int) -> bool:
        now = self._now(tick)
        reason = self.policy.due(now, rows, self.drift.drifted)
        if reason is None:
            return False
        self.policy.started(now, rows)
        self.starts.append(tick)
        self.reasons.append(reason.name.lower())
        if reason.name == "DRIFT":
            self.drift.clear()
        return True

    def observe(self, errors: np.ndarray) -> None:
        if self.use_drift:
            self.drift.update(errors)

    @classmethod
    def fixed_timer(cls, every_s: float, tick_s: float | np.ndarray) -> PolicyCadence:
        """The processor before issue 14: a retrain every ``every_s`` seconds, nothing else."""
        never = 1 << 62
        return cls(RetrainPolicy(first_rows=never, min_interval_s=0.0, max_interval_s=every_s,
                                 growth=float(never)), tick_s, drift=False)


@dataclass
class Scores:
    """Sum of absolute errors and counts per model; with ``keep``, every prediction too."""

    abs_err: dict[str, float]
    n: int = 0
    preds: dict[str, np.ndarray] = field(default_factory=dict)  # (ticks, workers) seconds
    fleet: np.ndarray = field(default_factory=lambda: np.empty(0))  # fleet median per tick
    retrains: list[int] = field(default_factory=list)

    def mae_us(self, model: str) -> float:
        return 1e6 * self.abs_err[model] / max(self.n, 1)


def progressive(tps: np.ndarray, models: Sequence[str] = MODELS, warmup: int = 200,
                retrain_every: int = 300, max_rows: int = 30_000,
                clean: np.ndarray | None = None, cadence: Cadence | None = None,
                keep: bool = False, served: str = "auto") -> Scores:
    """Predict-then-learn over a fleet trace; errors counted after ``warmup`` ticks.

    With ``clean`` (the noiseless level), ``oracle`` scores a predictor that knows
    it: the noise floor no forecaster can beat. ``cadence`` defaults to
    ``EveryTicks(retrain_every, warmup)``; ``served`` names the model whose
    errors the cadence's drift detector sees.
    """
    ticks, workers = tps.shape
    cadence = cadence or EveryTicks(retrain_every, warmup)
    xgb = XGBoostForecaster()
    per_worker: list[dict[str, Forecaster]] = [
        {m: make_forecaster(m, xgb) for m in models} for _ in range(workers)
    ]
    feats = [LagFeatures() for _ in range(workers)]
    fleet = FleetState()
    X: list[list[float]] = []
    Y: list[float] = []
    scores = Scores(dict.fromkeys((*models, "oracle"), 0.0))
    if keep:
        scores.preds = {m: np.full((ticks, workers), np.nan) for m in models}
        scores.fleet = np.zeros(ticks)
    watch = served if served in models else models[-1]
    for t in range(ticks):
        if cadence.due(t, len(Y)):
            xgb.swap(train_booster(X[-max_rows:], Y[-max_rows:]), str(len(cadence.starts)))
        m = fleet.median(default=float(tps[t].mean()))
        if keep:
            scores.fleet[t] = m
        xs = [lf.features(m) if lf.ref > 0 else {} for lf in feats]
        xgb.prime([x for x in xs if x])
        errors = []
        for w in range(workers):
            lf = feats[w]
            y = float(tps[t, w])
            if lf.ref > 0:
                x, ref = xs[w], lf.ref
                for name, model in per_worker[w].items():
                    pred = model.predict_one(x) * ref
                    if keep:
                        scores.preds[name][t, w] = pred
                    if t >= warmup:
                        scores.abs_err[name] += abs(pred - y)
                    if name == watch:
                        errors.append(abs(pred - y) / ref)
                    model.learn_one(x, y / ref)
                X.append([x[f] for f in FEATURE_NAMES])
                Y.append(y / ref)
            lf.update(y, m)
            fleet.set(w, lf.ewma)
        cadence.observe(np.asarray(errors))
        if t >= warmup:
            scores.n += workers
            if clean is not None:
                scores.abs_err["oracle"] += float(np.abs(tps[t] - clean[t]).sum())
    scores.retrains = list(cadence.starts)
    return scores
