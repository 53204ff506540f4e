"""Predictions: the processor's forecast of one rank's speed, read by the planner."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shardsense.errors import InvalidEvent
from shardsense.events.checks import (
    Envelope,
    check_float,
    check_int,
    check_int_list,
    require,
)

__all__ = ["MAX_FORECAST_POINTS", "Prediction"]


@dataclass(frozen=True)
class Prediction(Envelope):
    """The processor's forecast for one rank (``worker_id``), consumed by the planner.

    ``time_per_sample_s`` is the predicted compute+wait seconds per sample of the
    rank's next batches (the level now: re-levelled at once after an onset);
    ``slowdown`` is that divided by the fleet median.

    The optional forecast says how that level will change over the coming steps,
    so the planner can schedule a map ahead of a change instead of after it: from
    ``based_on_step + forecast_offsets[i]`` (steps of the rank's own counter, in
    epoch ``based_on_epoch``, carrying over epoch ends) the level is
    ``forecast_time_per_sample_s[i]``. Empty means flat (the level holds).
    ``forecast_confidence`` (0..1) is how far the processor trusts the schedule;
    ``onset_step`` is where the current level began (0 = unknown), so evidence can
    be counted in batches since the change.

    >>> p = Prediction.from_dict({"job_id": "j", "worker_id": 1, "event_id": "e", "ts": 1.0,
    ...     "time_per_sample_s": 0.01, "uncertainty_s": 0.001, "slowdown": 1.0,
    ...     "straggler": False, "based_on_step": 40})
    >>> p.forecast_offsets, p.forecast_confidence
    ([], 0.0)
    >>> try:
    ...     Prediction.from_dict({**p.to_dict(), "forecast_offsets": [5, 3],
    ...                           "forecast_time_per_sample_s": [0.02, 0.01]})
    ... except InvalidEvent as exc:
    ...     print(exc.code)
    bad_value
    """

    time_per_sample_s: float = 0.0
    uncertainty_s: float = 0.0
    slowdown: float = 1.0
    straggler: bool = False
    based_on_step: int = 0
    model_versions: dict[str, str] = field(default_factory=dict)
    based_on_epoch: int = 0
    onset_step: int = 0
    forecast_offsets: list[int] = field(default_factory=list)
    forecast_time_per_sample_s: list[float] = field(default_factory=list)
    forecast_confidence: float = 0.0

    kind: ClassVar[str] = "prediction"

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Prediction:
        env = cls._envelope(obj)
        if env["worker_id"] < 0:
            raise InvalidEvent("bad_value", "a prediction's worker_id must be a rank >= 0")
        straggler = require(obj, "straggler")
        if not isinstance(straggler, bool):
            raise InvalidEvent("bad_type", "field 'straggler' must be a boolean")
        versions = obj.get("model_versions", {})
        if not isinstance(versions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in versions.items()
        ):
            raise InvalidEvent("bad_type", "field 'model_versions' must map strings to strings")
        return cls(
            **env,
            time_per_sample_s=check_float(obj, "time_per_sample_s"),
            uncertainty_s=check_float(obj, "uncertainty_s"),
            slowdown=check_float(obj, "slowdown"),
            straggler=straggler,
            based_on_step=check_int(obj, "based_on_step"),
            model_versions=versions,
            based_on_epoch=_optional_int(obj, "based_on_epoch"),
            onset_step=_optional_int(obj, "onset_step"),
            **_forecast(obj),
        )


#: Most level changes one prediction may forecast (bounds the planner's work per event).
MAX_FORECAST_POINTS = 64


def _optional_int(obj: dict[str, Any], name: str) -> int:
    return check_int(obj, name) if name in obj else 0


def _forecast(obj: dict[str, Any]) -> dict[str, Any]:
    """The optional forecast fields, checked together (same length, increasing offsets)."""
    offsets = check_int_list(obj, "forecast_offsets", 1) if "forecast_offsets" in obj else []
    levels = obj.get("forecast_time_per_sample_s", [])
    if not isinstance(levels, list) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
        for v in levels
    ):
        raise InvalidEvent("bad_type", "field 'forecast_time_per_sample_s' must be a list of "
                           "finite numbers >= 0")
    if len(levels) != len(offsets):
        raise InvalidEvent("bad_value", "fields 'forecast_offsets' and "
                           "'forecast_time_per_sample_s' must have the same length")
    if len(offsets) > MAX_FORECAST_POINTS:
        raise InvalidEvent("bad_value", f"a forecast holds at most {MAX_FORECAST_POINTS} points")
    if any(b <= a for a, b in itertools.pairwise(offsets)):
        raise InvalidEvent("bad_value", "field 'forecast_offsets' must be strictly increasing "
                           "offsets >= 1")
    confidence = check_float(obj, "forecast_confidence", 0.0, 1.0) if (
        "forecast_confidence" in obj) else 0.0
    return {"forecast_offsets": offsets, "forecast_time_per_sample_s": [float(v) for v in levels],
            "forecast_confidence": confidence}
