"""stream_processors package: the Faust processor and its learning half.

Import-light: names resolve on first use (``__getattr__``), so importing the
package pulls in neither Faust, River nor XGBoost (nor torch, ever).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FleetState": "features", "LagFeatures": "features", "LagColumns": "lags",
    "LearnerColumns": "learners", "OnsetColumns": "onset", "SlotTable": "slots",
    "TickColumns": "ticks",
    "AutoSelect": "models", "EWMAForecaster": "models", "Forecaster": "models",
    "HybridForecaster": "models", "LastValue": "models", "RiverForecaster": "models",
    "XGBoostForecaster": "models", "make_forecaster": "models",
    "StragglerDetector": "drift",
    "Retrainer": "retrain", "train_booster": "retrain",
    "PredictionHook": "hook", "Predictor": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stream_processors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stream_processors.{module}"), name)
