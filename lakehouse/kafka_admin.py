"""Kafka topics as the pipeline needs them, on any broker (the embedded one or a user's):
``ensure_topic`` creates the states topic, ``end_offsets`` says how far it has been written."""

from __future__ import annotations

import logging
import time

from lakehouse.settings import Settings

log = logging.getLogger("lakehouse.kafka_broker")


def ensure_topic(settings: Settings, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` if it does not exist (one replica: single broker), its
    record timestamps the broker's append time (``message.timestamp.type=LogAppendTime``)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, request_timeout_ms=15000)
    try:
        if topic in admin.list_topics():
            return
        try:
            admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1,
                                          topic_configs={"message.timestamp.type": "LogAppendTime"})])
            log.info("kafka: created topic %s with %d partitions", topic, partitions)
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()
    # Metadata propagates asynchronously; wait until every partition has a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(end_offsets(settings, topic)) == partitions:
            return
        time.sleep(0.2)


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Partition -> end offset (the next offset to be written) of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, request_timeout_ms=15000, enable_auto_commit=False
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()} if tps else {}
    finally:
        consumer.close()

