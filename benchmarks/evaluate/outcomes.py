"""What each forecaster is worth in steps: a closed-loop replay of a trace.

The synchronous step time is ``max_r(b_r * t_r)``: batch sizes ``b`` follow a
forecaster's predictions, planned by the planner's own ``minmax`` at every sync
point (every ``sync_every`` steps), with what was known ``sync_every +
latency_steps`` earlier (map published, then in force at the next sync point):

* ``static``: the equal split;
* a reactive forecaster: its one-step-ahead prediction then, held flat;
* ``<model>+rec`` (scheduling ahead): the recurrence forecast made then, read
  at the steps the plan covers, where it is confident (>= ``min_confidence``);
  for a recurrence too short to follow, its mean level; else the model's
  prediction;
* ``oracle/sync``: the true mean speed of the steps the plan covers (the best any
  forecast can do with maps that change only at sync points);
* ``clairvoyant``: a plan per step on the true speeds (the bench's oracle).

Time per sample does not depend on the batch (the bench's work is per sample),
so one recorded or synthetic trace replays under every plan. Move costs and the
planner's hysteresis are left out: this measures the forecasts, not the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from planner_service.algorithms import get_plan
from stream_processors.recurrence import Forecast, RecurrenceBank, Verdict

__all__ = ["LoopConfig", "Outcome", "RecurrenceScore", "change_points", "closed_loop",
           "recurrence_forecasts", "score_recurrence"]

#: Steps per epoch of the replayed step counter (it restarts; interference does not).
EPOCH_STEPS = 200
#: A jump of the noiseless level by this much (relative) is a change point.
CHANGE = 0.15


@dataclass(frozen=True)
class LoopConfig:
    """The loop being replayed."""

    sync_every: int = 8  # the runtime's default
    latency_steps: int = 8  # last timing seen -> map published (the product path: ~1 s)
    min_confidence: float = 0.5
    start: int = 200  # steps before this are not counted (every forecaster warms up)

    @property
    def lead(self) -> int:
        return self.sync_every + self.latency_steps


def recurrence_forecasts(tps: np.ndarray, fleet: np.ndarray, cfg: LoopConfig
                         ) -> tuple[dict[int, list[Forecast]], float]:
    """The bank's forecasts per worker, made after each tick a plan is based on.

    Returns them by tick, and the bank's cost per timing (seconds, update + forecasts).
    """
    import time

    ticks, workers = tps.shape
    bank = RecurrenceBank(workers)
    slots = np.arange(workers)
    info = {s0 - cfg.lead for s0 in range(0, ticks, cfg.sync_every) if s0 - cfg.lead >= 0}
    out: dict[int, list[Forecast]] = {}
    started = time.perf_counter()
    for t in range(ticks):
        rel = tps[t] / fleet[t] if fleet[t] > 0 else tps[t] / np.median(tps[t])
        bank.update(slots, np.full(workers, t // EPOCH_STEPS), np.full(workers, t % EPOCH_STEPS),
                    rel)
        if t in info:
            out[t] = bank.forecasts(slots)
    return out, (time.perf_counter() - started) / max(tps.size, 1)


def _window(f: Forecast, offsets: np.ndarray) -> np.ndarray:
    """The forecast's relative level at each of ``offsets`` (steps after its step)."""
    idx = np.searchsorted(f.offsets, offsets, side="right") - 1
    levels = np.asarray([*f.levels, np.nan])
    return np.where(idx < 0, f.level_now, levels[np.maximum(idx, 0)])


def _ahead(reactive: np.ndarray, forecasts: list[Forecast], fleet_s: float, cfg: LoopConfig,
           ) -> np.ndarray:
    """Per rank: the confident recurrence forecast over the plan's steps, else ``reactive``."""
    offsets = np.arange(cfg.lead, cfg.lead + cfg.sync_every)
    out = reactive.copy()
    for w, f in enumerate(forecasts):
        if f.verdict is Verdict.RECURRING and f.confidence >= cfg.min_confidence:
            out[w] = float(np.mean(_window(f, offsets))) * fleet_s
        elif f.verdict is Verdict.TOO_SHORT and np.isfinite(f.level_now):
            out[w] = f.level_now * fleet_s  # what a plan held over the interval meets
    return out


@dataclass
class Outcome:
    """Total step time of each method over the counted steps (seconds)."""

    total_s: dict[str, float] = field(default_factory=dict)

    def ratio(self, method: str) -> float:
        return self.total_s[method] / self.total_s["clairvoyant"]

    def gap_closed(self, method: str) -> float:
        """Share of static's excess over the clairvoyant that ``method`` removed."""
        gap = self.total_s["static"] - self.total_s["clairvoyant"]
        return (self.total_s["static"] - self.total_s[method]) / gap if gap > 0 else 0.0


def _batches(levels: np.ndarray, global_batch: int, owner: np.ndarray) -> np.ndarray:
    speeds = 1.0 / np.clip(levels, 1e-12, None)
    return get_plan("minmax", owner, speeds, global_batch, 0).batch_sizes


def closed_loop(tps: np.ndarray, preds: dict[str, np.ndarray], fleet: np.ndarray,
                forecasts: dict[int, list[Forecast]], global_batch: int, cfg: LoopConfig,
                ahead_of: Sequence[str] = ("auto",)) -> Outcome:
    """Replay ``tps`` under each method's plans; see the module docstring."""
    ticks, workers = tps.shape
    owner = np.repeat(np.arange(workers), 4)
    static = get_plan("static", owner, np.ones(workers), global_batch, 0).batch_sizes
    out = Outcome(dict.fromkeys(("static", *preds, *(f"{m}+rec" for m in ahead_of),
                                 "oracle/sync", "clairvoyant"), 0.0))
    first = -(-max(cfg.start, cfg.lead) // cfg.sync_every) * cfg.sync_every
    for s0 in range(first, ticks, cfg.sync_every):
        steps = tps[s0 : s0 + cfg.sync_every]
        info = s0 - cfg.lead
        plans = {"static": static,
                 "oracle/sync": _batches(steps.mean(axis=0), global_batch, owner)}
        for name, p in preds.items():
            level = p[info + 1]
            level = np.where(np.isfinite(level), level, tps[info])
            plans[name] = _batches(level, global_batch, owner)
            if name in ahead_of:
                level = _ahead(level, forecasts[info], float(fleet[info]), cfg)
                plans[f"{name}+rec"] = _batches(level, global_batch, owner)
        for name, b in plans.items():
            out.total_s[name] += float((steps * b[None, :]).max(axis=1).sum())
        for row in steps:
            out.total_s["clairvoyant"] += float(
                (row * _batches(row, global_batch, owner)).max())
    return out


def change_points(series: np.ndarray, width: int = 8) -> list[int]:
    """Steps where a level starts: the mean log level of the next ``width`` steps differs
    from the last ``width``'s by >= ``CHANGE``, at the largest such difference nearby.

    Judged on means of a 5-step running median, so a recorded run's hiccups (one slow
    batch, a burst of them from a neighbour on this shared box) are not changes and a
    ramp (0.75% a step) is not one either, but its reset is.

    >>> change_points(np.r_[np.ones(20), 2 * np.ones(20), np.ones(20)])
    [20, 40]
    """
    if len(series) < 2 * width + 1:
        return []
    pad = np.pad(series, 2, mode="edge")
    x = np.log(np.median(np.lib.stride_tricks.sliding_window_view(pad, 5), axis=1))
    c = np.concatenate([[0.0], np.cumsum(x)])
    j = np.arange(width, len(x) - width + 1)
    stat = np.abs((c[j + width] - c[j]) - (c[j] - c[j - width])) / width
    out: list[int] = []
    for i in np.flatnonzero(stat >= np.log1p(CHANGE)).tolist():
        lo, hi = max(0, i - width), min(len(stat), i + width + 1)
        if stat[i] == stat[lo:hi].max() and (not out or j[i] - out[-1] > width):
            out.append(int(j[i]))
    return out


@dataclass
class RecurrenceScore:
    """Forecast error of the recurrence schedules over one trace family."""

    pairs: int = 0  # (worker, plan tick) pairs of workers whose level varies
    confident: int = 0
    too_short: int = 0
    change_errors: list[int] = field(default_factory=list)  # steps, per true change
    level_err_rec: list[float] = field(default_factory=list)  # over the plan's steps
    level_err_flat: list[float] = field(default_factory=list)

    def add(self, other: RecurrenceScore) -> None:
        self.pairs += other.pairs
        self.confident += other.confident
        self.too_short += other.too_short
        self.change_errors += other.change_errors
        self.level_err_rec += other.level_err_rec
        self.level_err_flat += other.level_err_flat


def score_recurrence(truth: np.ndarray, flat: np.ndarray, fleet: np.ndarray,
                     forecasts: dict[int, list[Forecast]], cfg: LoopConfig,
                     horizon: int = 150) -> RecurrenceScore:
    """Change-point error (steps) and level error of confident schedules vs a flat forecast.

    ``truth`` is the level the forecasts are judged on (the noiseless one where
    known); ``flat`` the served one-step-ahead prediction held flat. Only workers
    whose level varies (log-std > 0.05) count.
    """
    score = RecurrenceScore()
    ticks = truth.shape[0]
    varies = np.log(truth).std(axis=0) > 0.05
    window = np.arange(cfg.lead, cfg.lead + cfg.sync_every)
    for info, fs in forecasts.items():
        if info < cfg.start or info + cfg.lead + cfg.sync_every >= ticks:
            continue
        for w in np.flatnonzero(varies).tolist():
            f = fs[w]
            score.pairs += 1
            score.too_short += int(f.verdict is Verdict.TOO_SHORT)
            if f.verdict is not Verdict.RECURRING or f.confidence < cfg.min_confidence:
                continue
            score.confident += 1
            true_w = truth[info + window, w]
            score.level_err_rec.append(float(np.mean(np.abs(
                _window(f, window) * fleet[info] / true_w - 1))))
            score.level_err_flat.append(float(np.mean(np.abs(flat[info + 1, w] / true_w - 1))))
            span = truth[max(0, info - 8) : min(ticks, info + horizon + 9), w]
            jumps = [j - min(info, 8) for j in change_points(span)]
            for j in (j for j in jumps if 0 < j <= horizon):
                near = min((abs(o - j) for o in f.offsets), default=horizon)
                score.change_errors.append(int(near))
    return score
