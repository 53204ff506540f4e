"""The planner's reaction, stage by stage, in a simulated closed loop counted in steps.

``shardsense planner-sim`` runs the real :class:`~planner_service.policy.PlanPolicy`
(and the service's evaluation schedule) inside a simulated job, so that what the
planner itself adds to the loop's latency is measured without Kafka, Faust or
torch, reproducibly, in steps:

- ranks train in lock-step; rank ``r``'s seconds per sample at step ``t`` is the
  scenario's factor times a base, with per-batch noise; a step lasts its slowest
  rank plus a fixed overhead, which is the clock everything else runs on;
- timings become visible to the processor model a report interval plus
  transport after the batch (``SimConfig.visible_after_s``); the processor model
  emits one prediction per rank and tick: an EWMA ramp (today's served level) or
  a level re-set at once on an onset alarm (``relevel``), with the alarm's
  estimate of the change point as ``onset_step``; optionally a forecast of the
  scenario's coming changes (``forecast_confidence`` > 0, the oracle's schedule);
- predictions reach the planner ``prediction_latency_s`` later; maps reach rank 0
  ``map_latency_s`` after publication; rank 0 takes the newest map at its sync
  points (every ``sync_every`` steps) for ``lead_steps`` later, as the runtime's
  agreement does (a map waits while its apply point is beyond that).

For every speed change it reports the step of each stage (alarm, prediction at
the new level, planner decision, map published, map in force, share within 15%),
the maps published in the change's window, and how close the first map of a
change is to the last (step time under the true speeds). ``none-noise`` counts
map changes without any straggler under +-20% noise (goal: zero).
"""

from benchmarks.planner_sim.model import SCENARIOS, Scenario, SimConfig, simulate
from benchmarks.planner_sim.report import main, run_all, stages, summary

__all__ = ["SCENARIOS", "Scenario", "SimConfig", "main", "run_all", "simulate", "stages",
           "summary"]
