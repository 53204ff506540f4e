"""``python -m benchmarks.planner_sim``."""

import sys

from benchmarks.planner_sim.report import main

sys.exit(main())
