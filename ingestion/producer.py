"""Kafka side of ingestion: one record per state vector, key ``icao24``, value JSON.

``StateProducer(settings, source)`` wraps a kafka-python ``KafkaProducer`` configured for no
loss and no duplicates on retry: ``enable_idempotence=True`` (the broker drops a retried batch it
already has), ``acks="all"``, compression and batching from ``producer.*`` settings. Every send
has a delivery callback: ``delivered`` and ``failed`` are counted from what the broker
acknowledged, never assumed. ``flush()`` waits (bounded by ``producer.flush_timeout_s``) and
returns the counts of the records sent since the previous flush.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from ingestion.states import response_to_records

log = logging.getLogger(__name__)


class ProducerError(RuntimeError):
    """The broker could not be reached or the producer could not be built."""


@dataclass
class Delivery:
    """Counts for the records handed over since the previous flush."""

    sent: int = 0
    failed: int = 0
    pending: int = 0


# One encoder for every record: json.dumps with options builds a new JSONEncoder per call (~1 us
# of the ~8 us a record's JSON takes). encode() keeps no state between calls (thread-safe).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_value(record: dict) -> bytes:
    """The record as compact JSON (UTF-8); NaN or infinity raises ValueError (not JSON)."""
    return _ENCODER.encode(record).encode()


def key_partitioner(max_keys: int = 200_000):
    """kafka-python's default partitioner (murmur2 of the key, the Java client's choice: the
    same aircraft always lands on the same partition), remembered per key while the topic keeps
    its partition count. The same few thousand aircraft are sent every few seconds, and
    kafka-python hashes each record's key in pure Python and sorts the topic's partitions for
    it: ~7 us of the producer's ~65 us a record (docs/scaling.md). At most ``max_keys`` keys
    are remembered (ICAO addresses are 24 bits; a live sky has ~15,000); later keys are hashed
    every time, as without it."""
    from kafka.partitioner import DefaultPartitioner

    class KeyPartitioner(DefaultPartitioner):
        def __init__(self):
            self._topics: dict[str, tuple[int, dict[bytes, int]]] = {}

        def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
            partitions = cluster.partitions_for_topic(topic)
            if serialized_key is None or partitions is None:  # no key: random; no topic: its error
                return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            count, known = self._topics.get(topic, (None, None))
            if count != len(partitions):
                count, known = self._topics[topic] = (len(partitions), {})
            chosen = known.get(serialized_key)
            if chosen is None:
                chosen = super().partition(topic, key, serialized_key, value, serialized_value, cluster)
                if len(known) < max_keys:
                    known[serialized_key] = chosen
            return chosen

    return KeyPartitioner()


class StateProducer:
    """Send the records of ``/states/all`` responses to ``kafka.topic``.

    ``producer``: an existing kafka-python producer (tests); built from ``settings`` otherwise.
    """

    def __init__(self, settings, source: str, producer=None, topic: str | None = None):
        self.settings = settings
        self.source = source
        self.topic = topic or settings.kafka.topic
        self._lock = threading.Lock()
        self.queued = 0
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self._marks = (0, 0, 0)  # queued, delivered, failed at the previous flush
        self._producer = producer or self._build(settings, self.topic)

    @staticmethod
    def _build(settings, topic: str):
        from kafka import KafkaProducer
        from kafka.errors import KafkaConfigurationError, KafkaError

        from lakehouse.kafka_admin import ensure_topic

        cfg = settings.producer
        max_block_ms = int(cfg.max_block_s * 1000)
        delivery_ms = int(cfg.delivery_timeout_s * 1000)
        try:
            # Built first: its bootstrap is bounded by max_block_s, so an unreachable broker
            # fails in seconds with the message below (the admin client alone waits 30 s).
            producer = KafkaProducer(
                bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
                client_id="opensky-lakehouse-producer",
                enable_idempotence=True,
                acks="all",
                compression_type=None if cfg.compression == "none" else cfg.compression,
                linger_ms=cfg.linger_ms,
                batch_size=cfg.batch_size,
                # bounded: a record not acknowledged within this time is reported as failed
                delivery_timeout_ms=delivery_ms,
                # kafka-python refuses delivery_timeout < linger + request_timeout (30 s by
                # default); one request never needs longer than the whole delivery anyway.
                request_timeout_ms=max(1, min(30000, delivery_ms - cfg.linger_ms)),
                max_block_ms=max_block_ms,
                bootstrap_timeout_ms=max_block_ms,
                partitioner=key_partitioner(),
            )
        except KafkaConfigurationError as exc:
            raise ProducerError(f"Kafka producer settings (producer.*) refused: {exc}") from exc
        except KafkaError as exc:
            raise ProducerError(
                f"cannot reach Kafka at {settings.kafka.bootstrap_servers} within producer.max_block_s="
                f"{cfg.max_block_s:g} s ({type(exc).__name__}); is the broker running? (opensky-lakehouse kafka start)"
            ) from exc
        try:
            # the broker does not auto-create topics: without this, every send would wait for
            # metadata of a topic that never comes
            ensure_topic(settings, topic, settings.kafka.partitions)
        except KafkaError as exc:
            producer.close(timeout=1)
            raise ProducerError(
                f"cannot create topic {topic} on Kafka at {settings.kafka.bootstrap_servers} ({type(exc).__name__})"
            ) from exc
        return producer

    # -- delivery callbacks run on the producer's I/O thread --------------------------------
    def _ok(self, _metadata) -> None:
        # Locked: a future already done when its callback is added runs it on the sending thread.
        with self._lock:
            self.delivered += 1

    def _fail(self, exc) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def send_records(self, records: list[dict]) -> int:
        """Queue records (dicts of the Kafka record format); return how many were queued."""
        from kafka.errors import KafkaError

        queued = 0
        for n, record in enumerate(records):
            key = record.get("icao24")
            try:
                future = self._producer.send(
                    self.topic,
                    key=None if key is None else str(key).encode(),
                    value=encode_value(record),
                )
            except (KafkaError, ValueError, TypeError) as exc:
                # Not even queued (no metadata or buffer full past max_block_ms, unserialisable
                # value): this record and, for a broker problem, the rest of the batch are counted
                # as failed at once instead of each blocking max_block_ms.
                lost = 1 if isinstance(exc, (ValueError, TypeError)) else len(records) - n
                with self._lock:
                    self.queued += queued + lost
                    queued = 0
                    self.failed += lost
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.error("kafka: %d record(s) could not be queued: %s", lost, self.last_error)
                if lost > 1:
                    break
                continue
            queued += 1
            future.add_callback(self._ok)
            future.add_errback(self._fail)
        with self._lock:
            self.queued += queued
        return len(records)

    def send_response(self, response: dict, produced_at_ms: int | None = None) -> int:
        """Queue one record per state of ``response``; return how many."""
        produced_at_ms = int(time.time() * 1000) if produced_at_ms is None else produced_at_ms
        return self.send_records(response_to_records(response, self.source, produced_at_ms))

    def flush(self, timeout: float | None = None) -> Delivery:
        """Wait for outstanding deliveries (at most ``timeout``); counts since the previous flush."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        timeout = self.settings.producer.flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._producer.flush(timeout=max(0.0, deadline - time.monotonic()))
                break
            except KafkaTimeoutError:
                log.error("kafka: deliveries still pending after %.0f s flush timeout", timeout)
                break
            except KafkaError as exc:
                # kafka-python's flush raises while it aborts the batches of a fatal error (the
                # broker refused a batch for good, e.g. MESSAGE_TOO_LARGE); those records still
                # reach _fail, so wait for them until the deadline.
                if time.monotonic() >= deadline:
                    log.error("kafka: flush gave up after %.0f s: %s", timeout, exc)
                    break
                time.sleep(0.1)
        with self._lock:
            q0, d0, f0 = self._marks
            delivery = Delivery(sent=self.delivered - d0, failed=self.failed - f0,
                                pending=self.queued - self.delivered - self.failed)
            self._marks = (self.queued, self.delivered, self.failed)
        if delivery.failed:
            log.error("kafka: %d record(s) failed delivery (last error: %s)", delivery.failed, self.last_error)
        return delivery

    def close(self, timeout: float | None = None) -> Delivery:
        """Flush, then close the producer; the final counts since the previous flush."""
        from kafka.errors import KafkaError

        delivery = self.flush(timeout)
        try:
            self._producer.close(timeout=5)
        except KafkaError as exc:
            log.error("kafka: producer did not close cleanly: %s", exc)
        return delivery
