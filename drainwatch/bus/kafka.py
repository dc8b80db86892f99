"""The Kafka event bus (kafka-python 3.x), for deployments of several processes.

Guarantees and how they are kept:

- Per-key order: the key picks the partition (kafka-python's murmur2 partitioner, as in Java),
  and the producer is idempotent, so retries neither reorder nor duplicate. When a caller turns
  idempotence off, ``max_in_flight_requests_per_connection`` is forced to 1 for the same reason.
- Nothing lost silently: ``acks="all"``, and every ``send`` future is kept until a ``flush``
  has seen it succeed; a failed or unacknowledged send makes ``flush`` raise ``BusError``
  naming the topic and the reason. (The mistake this avoids: a producer never flushed and whose
  sends are never checked.)
- At-least-once consumption: auto-commit is off; a poll commits the offsets of the messages
  whose handler returned, and when a handler raises it commits those, seeks every partition of
  the batch back to its first unhandled message and re-raises. The consumer side lives in
  ``drainwatch.bus.kafka_subscription`` and is re-exported here as ``KafkaSubscription``.

Topic names are chosen by the caller (``<prefix>.<name>``); ``ensure_topic`` creates one with
CreateTopics. Growing an existing topic (CreatePartitions) is deliberately not attempted: tansu,
the broker used in tests, does not implement it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError

from drainwatch.bus.kafka_subscription import KafkaSubscription
from drainwatch.errors import BusError

__all__ = ["KafkaBus", "KafkaSubscription"]

log = logging.getLogger(__name__)

# What the guarantees above rest on: callers cannot override these.
_PRODUCER_FIXED: dict[str, Any] = {"acks": "all"}
_CONSUMER_FIXED: dict[str, Any] = {"enable_auto_commit": False}

_PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable_idempotence": True,
    # A few ms of batching costs nothing in latency terms next to block times, and flush()
    # sends lingering batches at once anyway.
    "linger_ms": 5,
    # publish() blocks at most this long when the topic's metadata is unknown (broker down).
    "max_block_ms": 10_000,
}
_CONSUMER_DEFAULTS: dict[str, Any] = {
    # A new group of an at-least-once pipeline must not skip what was published before it
    # first joined.
    "auto_offset_reset": "earliest",
}

# Futures of acknowledged sends are dropped from time to time so that a publisher that flushes
# rarely does not grow without bound; failed ones are kept until a flush reports them.
_COMPACT_AT = 10_000


class KafkaBus:
    """``EventBus`` on Kafka.

    ``producer_options`` / ``consumer_options`` are passed to ``KafkaProducer`` /
    ``KafkaConsumer`` on top of the defaults above (except the fixed settings); tests use them
    for short timeouts. ``connect_timeout`` bounds the first contact with the brokers.
    """

    def __init__(
        self,
        bootstrap_servers: list[str],
        *,
        client_id: str = "drainwatch",
        connect_timeout: float = 10.0,
        producer_options: Mapping[str, Any] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers is empty")
        self.bootstrap_servers = list(bootstrap_servers)
        common: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": client_id,
            "bootstrap_timeout_ms": int(connect_timeout * 1000),
        }
        self._admin_config = common
        self._producer_config = _merge(
            common, _PRODUCER_DEFAULTS, producer_options, _PRODUCER_FIXED
        )
        if not self._producer_config["enable_idempotence"]:
            self._producer_config["max_in_flight_requests_per_connection"] = 1
        self._consumer_config = _merge(
            common, _CONSUMER_DEFAULTS, consumer_options, _CONSUMER_FIXED
        )
        self._lock = threading.Lock()
        self._producer: Any = None  # created on first publish: consumer-only processes need none
        self._pending: list[tuple[str, Any]] = []  # (topic, FutureRecordMetadata)
        self._subscriptions: weakref.WeakSet[KafkaSubscription] = weakref.WeakSet()
        self._closed = False

    @property
    def _where(self) -> str:
        return "Kafka at " + ", ".join(self.bootstrap_servers)

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions (broker-default replication) unless it
        exists. An existing topic is kept as it is, with a warning if it has fewer partitions."""
        admin = self._connect(KafkaAdminClient, **self._admin_config)
        try:
            admin.create_topics(
                {topic: {"num_partitions": partitions, "replication_factor": -1}},
                wait_for_metadata=True,
            )
        except TopicAlreadyExistsError:
            found = len(admin.describe_topics([topic])[0]["partitions"])
            if found < partitions:
                log.warning("topic %s has %d partitions, %d wanted", topic, found, partitions)
        except KafkaError as exc:
            raise BusError(f"cannot create topic {topic} on {self._where}: {exc}") from exc
        finally:
            admin.close()

    def publish(self, topic: str, key: str, value: bytes) -> None:
        producer = self._get_producer()
        try:
            future = producer.send(topic, key=key.encode("utf-8"), value=value)
        except KafkaError as exc:
            raise BusError(f"cannot publish to {topic} on {self._where}: {exc}") from exc
        with self._lock:
            self._pending.append((topic, future))
            if len(self._pending) >= _COMPACT_AT:
                self._pending = [(t, f) for t, f in self._pending if not f.succeeded()]

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            producer, pending = self._producer, list(self._pending)
        if producer is None or not pending:
            return
        # Sends lingering batches now. Its own timeout error is not the report we want: the
        # futures say which messages are missing and why.
        with contextlib.suppress(KafkaError):
            producer.flush(timeout=timeout)
        report = _FlushReport(timeout)
        settled = {id(f) for topic, f in pending if report.settle(topic, f, deadline)}
        orphans = self._retire(producer) if report.failed else None
        if orphans is not None:
            # The old producer's other messages were aborted: report them all.
            report = _FlushReport(timeout)
            for topic, future in orphans:
                report.settle(topic, future, deadline=0.0)
        else:
            with self._lock:
                self._pending = [(t, f) for t, f in self._pending if id(f) not in settled]
        if report.failed or report.unacked:
            raise BusError(f"flush on {self._where}: {report}")

    def _retire(self, producer: Any) -> list[tuple[str, Any]] | None:
        """Replace a producer after a failed send: an idempotent producer can stay broken for
        good (tansu after a restart answers UnknownProducerId, then refuses InitProducerId).
        Returns its pending sends, all settled now; None if another thread retired it first."""
        with self._lock:
            if self._producer is not producer:
                return None
            self._producer = None
            orphans, self._pending = self._pending, []
        _close_producer(producer, 0.0, undelivered=True)
        return orphans

    def subscribe(self, topic: str, group: str) -> KafkaSubscription:
        if self._closed:
            raise BusError(f"the bus on {self._where} is closed")
        consumer = self._connect(KafkaConsumer, topic, group_id=group, **self._consumer_config)
        subscription = KafkaSubscription(consumer, topic, group, self._where)
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def close(self, timeout: float = 10.0) -> None:
        """Close every subscription, then flush and close the producer. Raises ``BusError``
        (after releasing everything) when queued messages could not be delivered."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        lost: BusError | None = None
        try:
            self.flush(timeout)
        except BusError as exc:
            lost = exc
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            _close_producer(producer, timeout, undelivered=lost is not None)
        if lost is not None:
            raise lost

    def _get_producer(self) -> Any:
        with self._lock:
            if self._closed:
                raise BusError(f"the bus on {self._where} is closed")
            if self._producer is None:
                self._producer = self._connect(KafkaProducer, **self._producer_config)
            return self._producer

    def _connect(self, factory: Any, *args: Any, **config: Any) -> Any:
        try:
            return factory(*args, **config)
        except KafkaError as exc:
            raise BusError(f"cannot connect to {self._where}: {exc}") from exc


class _FlushReport:
    """What a flush found missing, per topic."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.failed: dict[str, tuple[int, BaseException]] = {}  # topic -> (count, first error)
        self.unacked: dict[str, int] = {}

    def settle(self, topic: str, future: Any, deadline: float) -> bool:
        """Wait for one send until ``deadline``; True once it is settled (acked or failed)."""
        try:
            future.get(timeout=max(0.0, deadline - time.monotonic()))
            return True
        except Exception as exc:  # the send's own error, whatever its class
            if not future.is_done:
                self.unacked[topic] = self.unacked.get(topic, 0) + 1
                return False
            count, first = self.failed.get(topic, (0, exc))
            self.failed[topic] = (count + 1, first)
            return True

    def __str__(self) -> str:
        parts = [f"{n} message(s) to {t} failed: {exc}" for t, (n, exc) in self.failed.items()]
        parts += [
            f"{n} message(s) to {t} not acknowledged within {self.timeout:g} s"
            for t, n in self.unacked.items()
        ]
        return "; ".join(parts)


def _merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win: defaults, then the caller's options, then the fixed settings."""
    return {key: value for layer in layers for key, value in (layer or {}).items()}


def _close_producer(producer: Any, timeout: float, undelivered: bool) -> None:
    if not undelivered:
        try:
            producer.close(timeout=timeout)
            return
        except KafkaError:
            pass
    # kafka-python's close() re-raises its flush timeout and leaves the sender thread retrying
    # batches that flush() has already reported lost; abort them (no public API does this).
    producer._sender.force_close()
    producer._sender.join(timeout=5.0)  # it aborts the batches and exits at once
    with contextlib.suppress(KafkaError):
        producer.close(timeout=0)
