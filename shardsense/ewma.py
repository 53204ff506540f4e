"""The one exponentially weighted mean with variance that the predictor and planner share.

``update`` folds a value into the mean and into the EW variance of the values
around it; ``stderr`` is the standard error of the mean (an EWMA keeps
``a / (2 - a)`` of the variance of what it averages), which the planner's
noise guard and the bench's predictor both need. ``reset`` starts over at a
value, with a prior variance ``(prior_cv * value)**2`` until the series'
own noise is known.

>>> e = EwmaVar(alpha=0.5)
>>> e.reset(1.0, prior_cv=0.0), e.update(3.0)
(1.0, 2.0)
>>> round(e.var, 3), round(e.stderr, 3)
(1.0, 0.577)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EwmaVar"]


@dataclass
class EwmaVar:
    """Mean and variance, exponentially weighted by ``alpha`` (0 < alpha <= 1)."""

    alpha: float
    value: float = math.nan
    var: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def reset(self, value: float, prior_cv: float) -> float:
        """Start over at ``value`` with variance ``(prior_cv * value) ** 2``."""
        self.value, self.var = value, (prior_cv * value) ** 2
        return self.value

    def update(self, value: float) -> float:
        """Fold ``value`` in (the first value after construction starts the mean)."""
        if math.isnan(self.value):
            self.value = value
            return value
        a, delta = self.alpha, value - self.value
        self.value += a * delta
        self.var = (1.0 - a) * (self.var + a * delta * delta)
        return self.value

    @property
    def stderr(self) -> float:
        """Standard error of the smoothed value."""
        return math.sqrt(max(self.var, 0.0) * self.alpha / (2.0 - self.alpha))
