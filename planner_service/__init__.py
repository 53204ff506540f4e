"""The planner: turns per-rank speed predictions into versioned shard maps worth moving to.

- :mod:`planner_service.algorithms`: pure plan functions by name (``get_plan``).
- :mod:`planner_service.policy`: one job's decisions: membership, gain vs cost, evidence,
  maps scheduled ahead of forecasts (``ranks``, ``forecast``, ``weigh``; no I/O).
- :mod:`planner_service.jobs`: a policy per job, when to evaluate it, idle expiry.
- :mod:`planner_service.service`: the Kafka/ClickHouse loop (``Planner``, ``main``); its
  instances split the jobs (``feeds``, ``ownership``) and learn move costs (``learning``).
"""

from planner_service.algorithms import ALGORITHMS, Plan, get_plan
from planner_service.policy import Decision, MoveCost, PlanPolicy, PolicyConfig
from planner_service.service import Planner, main
from planner_service.sink import ClickHouseSink, DecisionSink, MemorySink

__all__ = [
    "ALGORITHMS",
    "ClickHouseSink",
    "Decision",
    "DecisionSink",
    "MemorySink",
    "MoveCost",
    "Plan",
    "PlanPolicy",
    "Planner",
    "PolicyConfig",
    "get_plan",
    "main",
]
