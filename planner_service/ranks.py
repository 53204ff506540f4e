"""What the planner knows of one rank: its level now, its noise, where it began, its forecast.

Steps: events carry a rank's own step counter within an epoch (``based_on_step``
in ``based_on_epoch``); the planner works in *global* steps ``epoch *
steps_per_epoch + step`` (``steps_per_epoch = num_samples // global_batch_size``
of the job's map; 0 when unknown, then global = the epoch step). A processor
that reports no epoch (an older one: always 0) has its wraps counted: a newer
prediction whose step went back starts the next epoch.

The level is the processor's ``time_per_sample_s``, EWMA-smoothed by
``smoothing`` (1 = as it comes), restarted whenever a new level begins: a new
``onset_step``, a flip of the straggler flag, a rank back from silence. The
noise is the EW variance of the predictions (weight :data:`NOISE_ALPHA`), from
a ``prior_cv`` prior for a new rank; a new level keeps the rank's relative
noise. The level's error is that noise through the smoothing.

>>> from shardsense.events import Prediction
>>> p = Prediction("j", 0, "e", 10.0, time_per_sample_s=0.02, based_on_step=30,
...                based_on_epoch=2, onset_step=25, forecast_offsets=[10, 40],
...                forecast_time_per_sample_s=[0.01, 0.02], forecast_confidence=0.9)
>>> r = RankState.first(p, now=10.0, smoothing=1.0, prior_cv=0.1)
>>> r.global_step(100), r.onset_global(100)
(230, 225)
>>> r.changes(100, min_confidence=0.5)
[(240, 0.01), (270, 0.02)]
>>> r.level_at(245, 100, min_confidence=0.5), r.level_at(239, 100, min_confidence=0.5)
(0.01, 0.02)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from shardsense.events import Prediction
from shardsense.ewma import EwmaVar

__all__ = ["MIN_TIME_PER_SAMPLE_S", "NOISE_ALPHA", "RankState", "global_step"]

#: Weight of each prediction in the EW variance that measures a rank's noise.
NOISE_ALPHA = 0.3
#: Smallest time per sample a prediction counts with (a zero would mean infinite speed).
MIN_TIME_PER_SAMPLE_S = 1e-9
#: Predictions a ramp is judged over, and the least relative noise a trend must beat.
RAMP_POINTS = 3
MIN_RAMP_CV = 0.01


def _ramping(values: tuple[float, ...], jump: float, trend: float) -> bool:
    """Whether the newest ``values`` still move: by more than ``jump`` of the level from the
    previous one, or one way only by more than ``trend`` over the last :data:`RAMP_POINTS`.

    >>> _ramping((1.5, 1.8), 0.1, 0.04), _ramping((2.5, 2.49, 2.47), 0.1, 0.04)
    (True, False)
    >>> _ramping((1.8, 1.85, 1.9), 0.1, 0.04), _ramping((1.8, 1.9, 1.85), 0.1, 0.04)
    (True, False)
    """
    if len(values) < 2:
        return False
    if abs(values[-1] - values[-2]) > jump * values[-1]:
        return True
    if len(values) < RAMP_POINTS:
        return False
    steps = [b - a for a, b in itertools.pairwise(values)]
    one_way = all(d > 0 for d in steps) or all(d < 0 for d in steps)
    return one_way and abs(values[-1] - values[0]) > trend * values[-1]


def global_step(epoch: int, step: int, steps_per_epoch: int) -> int:
    """``epoch * steps_per_epoch + step`` (just ``step`` when the epoch length is unknown).

    >>> global_step(2, 5, 100), global_step(2, 5, 0)
    (205, 5)
    """
    return epoch * steps_per_epoch + step if steps_per_epoch > 0 else step


@dataclass
class RankState:
    """One rank's latest prediction, folded into a level and a noise estimate."""

    level: EwmaVar  # the level now (seconds per sample), smoothed since it began
    noise: EwmaVar  # EW mean/variance of the predictions: the noise
    seen: float  # clock of the newest prediction
    straggler: bool
    epoch: int  # as reported, plus the wraps of the step counter seen without one
    step: int
    onset_step: int  # where the current level began, epoch step (0 = unknown)
    reported_epoch: int = 0
    started: tuple[int, int] = (0, 0)  # (epoch, step) where the level began
    moved: tuple[int, int] = (0, 0)  # (epoch, step) the level last moved (a ramp's newest)
    recent: tuple[float, ...] = ()  # the newest predictions as they came (up to RAMP_POINTS)
    ref_cv: float = 0.0  # the rank's relative noise when the level began (ramps are beyond it)
    uncertainty_s: float = 0.0
    offsets: tuple[int, ...] = ()
    levels: tuple[float, ...] = ()
    confidence: float = 0.0

    @classmethod
    def first(cls, p: Prediction, now: float, smoothing: float, prior_cv: float,
              before: RankState | None = None, wraps: int = 0) -> RankState:
        """A rank's state from its first prediction, or the first of a new level.

        A new level keeps the rank's relative noise (a property of the rank and
        the processor's forecaster, not of the level), but at least half the
        prior: the first re-levelled value rests on few batches. ``wraps``: the
        epochs the job's other ranks counted without the processor saying so.
        """
        t = max(p.time_per_sample_s, MIN_TIME_PER_SAMPLE_S)
        level, noise = EwmaVar(smoothing), EwmaVar(NOISE_ALPHA)
        level.reset(t, 0.0)
        ref = prior_cv
        if before is not None and before.noise.value > 0:
            ref = math.sqrt(max(before.noise.var, 0.0)) / before.noise.value
        noise.reset(t, max(ref, prior_cv / 2))
        epoch = before.epoch_of(p) if before is not None else p.based_on_epoch + wraps
        state = cls(level, noise, now, p.straggler, epoch, p.based_on_step, p.onset_step,
                    p.based_on_epoch, recent=(t,), ref_cv=max(ref, MIN_RAMP_CV))
        state.started = (epoch, p.based_on_step)
        if 0 < p.onset_step <= p.based_on_step:  # the level began at the alarm's change point
            state.started = (epoch, p.onset_step)
        state.moved = state.started
        state._forecast(p)
        return state

    @property
    def wraps(self) -> int:
        """Epochs inferred from the step counter going back (a processor without epochs)."""
        return self.epoch - self.reported_epoch

    def epoch_of(self, p: Prediction) -> int:
        """``p``'s epoch: as reported, plus one more wrap if its step went back in the same one.

        >>> from shardsense.events import Prediction
        >>> r = RankState.first(Prediction("j", 0, "a", 1.0, based_on_step=99), 1.0, 1.0, 0.1)
        >>> r.epoch_of(Prediction("j", 0, "b", 2.0, based_on_step=3))
        1
        """
        epoch = p.based_on_epoch + self.wraps
        if p.based_on_epoch == self.reported_epoch and p.based_on_step < self.step:
            epoch += 1
        return epoch

    def new_level(self, p: Prediction) -> bool:
        """Whether ``p`` starts a new level (restart the smoothing rather than ramp into it)."""
        return p.straggler != self.straggler or (
            p.onset_step != 0 and p.onset_step != self.onset_step)

    def fold(self, p: Prediction, now: float, jump: float, noise_z: float) -> None:
        """Fold a prediction of the same level in; only a newer one moves the step.

        Predictions still moving (by more than ``jump`` of the level from the
        previous one, or one way by more than ``noise_z`` times the rank's noise
        before the change over the last :data:`RAMP_POINTS`) are a forecaster
        ramping up to a new level: ``moved`` says where, so evidence is counted
        from there.
        """
        t = max(p.time_per_sample_s, MIN_TIME_PER_SAMPLE_S)
        self.level.update(t)
        self.noise.update(t)
        if now >= self.seen:
            self.epoch, self.step = self.epoch_of(p), p.based_on_step
            self.recent = (*self.recent, t)[-RAMP_POINTS:]
            if _ramping(self.recent, jump, noise_z * self.ref_cv):
                self.moved = (self.epoch, self.step)
            self.reported_epoch = p.based_on_epoch
            self.onset_step = p.onset_step or self.onset_step
            self._forecast(p)
            self.seen = now

    def _forecast(self, p: Prediction) -> None:
        self.uncertainty_s = p.uncertainty_s
        self.offsets = tuple(p.forecast_offsets)
        self.levels = tuple(max(v, MIN_TIME_PER_SAMPLE_S) for v in p.forecast_time_per_sample_s)
        self.confidence = p.forecast_confidence if self.offsets else 0.0

    # ------------------------------------------------------------ in global steps

    def global_step(self, steps_per_epoch: int) -> int:
        return global_step(self.epoch, self.step, steps_per_epoch)

    def moved_global(self, steps_per_epoch: int) -> int:
        """The global step of the level's last move (its start, or where a ramp was seen)."""
        return global_step(*self.moved, steps_per_epoch)

    def started_global(self, steps_per_epoch: int) -> int:
        """The global step the current level began at (its onset, or its first prediction)."""
        return global_step(*self.started, steps_per_epoch)

    def onset_global(self, steps_per_epoch: int) -> int | None:
        """The global step the current level began at (an onset after the step: last epoch)."""
        if self.onset_step <= 0:
            return None
        epoch = self.epoch if self.onset_step <= self.step else self.epoch - 1
        return global_step(epoch, self.onset_step, steps_per_epoch)

    def changes(self, steps_per_epoch: int, min_confidence: float) -> list[tuple[int, float]]:
        """``(global step, level from then)`` of the forecast, if it is trusted enough."""
        if not self.offsets or self.confidence < min_confidence or self.confidence <= 0:
            return []
        base = self.global_step(steps_per_epoch)
        return [(base + o, v) for o, v in zip(self.offsets, self.levels, strict=True)]

    def level_at(self, step: int, steps_per_epoch: int, min_confidence: float) -> float:
        """The level at global ``step``: the forecast's once it has passed, else the level now."""
        level = self.level.value
        for at, v in self.changes(steps_per_epoch, min_confidence):
            if at > step:
                break
            level = v
        return level

    def error(self) -> float:
        """Standard error of the level: the spread of the rank's predictions, through the smoothing.

        Not the processor's ``uncertainty_s``: that is the error of its one-report
        forecast, which holds the jump itself for a while after a change and
        would hide every onset from the guard just when it matters.
        """
        a = self.level.alpha
        return math.sqrt(max(self.noise.var, 0.0) * a / (2.0 - a))
