"""``shardsense processor``: the stream processor as its own process."""

from __future__ import annotations

import logging

from shardsense.clickhouse import connect
from shardsense.kafka import create_topics, wait_for_broker
from shardsense.schema import apply_schema
from shardsense.settings import Settings
from stream_processors.app import ReportHook, create_app, run_worker

__all__ = ["default_hooks", "main"]

log = logging.getLogger(__name__)


def default_hooks(settings: Settings, client: object) -> list[ReportHook]:
    """The learning hooks (features, models, predictions) run after raw rows are stored.

    The predictor first replays recent ``worker_features`` history (warm start),
    so a restarted processor resumes with trained models, not blank ones.
    """
    from stream_processors.hook import PredictionHook
    from stream_processors.predictor import Predictor

    predictor = Predictor(settings, client)
    replayed = predictor.warm_start()
    if replayed:
        log.info("warm start: %d feature rows replayed into the models", replayed)
    return [PredictionHook(settings, client, predictor=predictor)]


def main(settings: Settings) -> int:
    """Connect, make sure topics and schema exist, then process until SIGINT/SIGTERM."""
    wait_for_broker(settings)
    create_topics(settings)
    client = connect(settings.resolved_clickhouse_url)
    apply_schema(client)
    app = create_app(settings, client, default_hooks(settings, client))
    return run_worker(app, settings.log_level)
