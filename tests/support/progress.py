"""What a processor did, seen from outside (its committed offsets, its published output)."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from shardsense.kafka import consumer_config
from shardsense.settings import Settings
from stream_processors.app import consumer_group

__all__ = ["Progress"]


class Progress:
    """What the processor did, seen from outside: its group's committed offsets on
    the timings topic, and the predictions topic's high watermark, which moves
    whenever it stored a batch (predictions are published after the inserts).

    Tansu's high watermark is the *base offset + 1 of the last record batch*, not
    the end of the log, so it is only a "something new arrived" signal; the end
    of the timings topic is the number of reports produced.
    """

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.consumer = Consumer(consumer_config(settings, consumer_group(settings)))
        self.parts = [TopicPartition(settings.topic_timings, p)
                      for p in range(settings.topic_partitions)]

    def committed(self) -> int:
        return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.parts, timeout=10))

    def predictions(self) -> int:
        topic = self.s.topic_predictions
        return sum(self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(self.s.topic_partitions))

    def close(self) -> None:
        self.consumer.close()
