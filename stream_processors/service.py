"""``shardsense processor``: the stream processor as its own process."""

from __future__ import annotations

import json
import logging
import resource
from pathlib import Path
from typing import Any

from shardsense.clickhouse import connect
from shardsense.kafka import create_topics, wait_for_broker
from shardsense.schema import apply_schema
from shardsense.settings import Settings
from stream_processors.app import ReportHook, create_app, run_worker

__all__ = ["STATS_FILE", "default_hooks", "main", "write_stats"]

log = logging.getLogger(__name__)


def default_hooks(settings: Settings, client: object) -> list[ReportHook]:
    """The learning hooks (features, models, predictions) run after raw rows are stored.

    A job is warm-started from its stored ticks when this instance first sees it
    (after a restart, or a partition handed over by another instance), so the
    models resume trained, not blank, and only for the jobs this instance owns.
    """
    from stream_processors.hook import PredictionHook
    from stream_processors.predictor import Predictor

    return [PredictionHook(settings, client, predictor=Predictor(settings, client))]


def main(settings: Settings) -> int:
    """Connect, make sure topics and schema exist, then process until SIGINT/SIGTERM.

    On the way out the processor's counters go to ``<data_dir>/processor-stats.json``
    (batches, reports, seconds per stage, CPU): what ``shardsense throughput`` reads.
    """
    wait_for_broker(settings)
    create_topics(settings)
    client = connect(settings.resolved_clickhouse_url)
    apply_schema(client)
    hooks = default_hooks(settings, client)
    app = create_app(settings, client, hooks)
    code = run_worker(app, settings.log_level)
    write_stats(Path(settings.data_dir) / STATS_FILE, app, hooks)
    return code


#: Where ``main`` leaves the processor's counters on exit (in the data dir).
STATS_FILE = "processor-stats.json"


def write_stats(path: Path, app: Any, hooks: list[Any]) -> None:
    """The pipeline's and the hooks' counters, plus this process's CPU seconds, as JSON."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = {"pipeline": dict(getattr(app, "shardsense_stats", {})),
             "hooks": [{**getattr(h, "stats", {}), **getattr(h, "state", dict)()} for h in hooks],
             "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_kb": usage.ru_maxrss}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats))
