"""Predictions: the processor's forecast of one rank's speed, read by the planner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from shardsense.errors import InvalidEvent
from shardsense.events.checks import Envelope, check_float, check_int, require

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction(Envelope):
    """The processor's forecast for one rank (``worker_id``), consumed by the planner.

    ``time_per_sample_s`` is the predicted compute+wait seconds per sample of the
    rank's next batches; ``slowdown`` is that divided by the fleet median.
    """

    time_per_sample_s: float = 0.0
    uncertainty_s: float = 0.0
    slowdown: float = 1.0
    straggler: bool = False
    based_on_step: int = 0
    model_versions: dict[str, str] = field(default_factory=dict)

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
        )
