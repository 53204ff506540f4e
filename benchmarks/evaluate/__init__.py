"""``shardsense eval``: the forecasters measured in errors and in step time, side by side.

For every synthetic family (``families``) and every recorded run
(``--traces``, written by ``shardsense bench --traces``):

1. progressive validation (``progressive``): MAE of each forecaster, each
   predicting a tick before learning it, XGBoost retrained on the processor's
   cadence (``RetrainPolicy`` on a simulated clock); ``oracle`` knows the
   noiseless level, so its MAE is the noise floor;
2. outcomes (``outcomes``): the step time of a closed loop whose batch sizes
   follow each forecaster (planner's minmax at every sync point, with what was
   known a sync interval + latency earlier), against static and the
   clairvoyant oracle, including the recurrence forecast scheduling ahead;
3. the recurrence forecast's own error: change points (steps) and levels;
4. XGBoost's contribution: hybrid vs River alone under the new cadence and
   the old 300 s timer;
5. onset detection: delay and false alarms.
"""

from benchmarks.evaluate.cli import main
from benchmarks.evaluate.detection import detection
from benchmarks.evaluate.families import (
    FAMILIES,
    RECURRING,
    load_recorded,
    load_run,
    make_fleet,
    make_trace,
)
from benchmarks.evaluate.progressive import MODELS, Scores, progressive

__all__ = [
    "FAMILIES", "MODELS", "RECURRING", "Scores", "detection", "load_recorded", "load_run",
    "main", "make_fleet", "make_trace", "progressive",
]
