"""``KafkaSubscription``: one ``KafkaConsumer`` of ``drainwatch.bus.kafka.KafkaBus``.

At-least-once consumption: auto-commit is off (``KafkaBus`` forces it); a poll commits the
offsets of the messages whose handler returned, and when a handler raises it commits those,
seeks every partition of the batch back to its first unhandled message and re-raises. A
``poll_batch`` commits the whole batch once its handler returned, or nothing, seeking every
partition of the batch back to its start, when it raised.

Import it from ``drainwatch.bus.kafka``, which re-exports it; it lives here only to keep each
module readable.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any

from kafka.errors import IllegalStateError, KafkaError
from kafka.structs import OffsetAndMetadata

from drainwatch.errors import BusError
from drainwatch.ports import BatchHandler, Handler, Message

log = logging.getLogger(__name__)

# Bound on each broker round trip of backlog() (committed offsets, then end and start offsets).
BACKLOG_TIMEOUT_MS = 10_000


class KafkaSubscription:
    """One ``KafkaConsumer`` in ``group`` subscribed to ``topic``. Like the consumer, it is not
    thread-safe: call ``poll``, ``backlog`` and ``close`` from one thread."""

    def __init__(self, consumer: Any, topic: str, group: str, where: str) -> None:
        self._consumer = consumer
        self.topic = topic
        self.group = group
        self._where = where
        # A Subscription dropped without close() must still leave the group: the consumer's
        # I/O thread would otherwise keep it a member, holding its partitions indefinitely.
        self._finalizer = weakref.finalize(self, _close_consumer, consumer)

    def poll(self, handler: Handler, *, max_messages: int = 500, timeout: float = 1.0) -> int:
        batch = self._fetch(max_messages, timeout)
        done: dict[Any, Any] = {}  # TopicPartition -> OffsetAndMetadata of the next message
        handled = 0
        try:
            for tp, records in batch.items():
                for record in records:
                    handler(_message(record))
                    done[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                    handled += 1
        except BaseException:
            self._rewind(batch, done)
            try:
                self._commit(done)
            except BusError as exc:
                # The handler's exception is the one the caller must see; the uncommitted
                # successes will merely be delivered again.
                log.warning("%s", exc)
            raise
        self._commit(done)
        return handled

    def poll_batch(
        self, handler: BatchHandler, *, max_messages: int = 500, timeout: float = 1.0
    ) -> int:
        batch = self._fetch(max_messages, timeout)
        messages = [_message(record) for records in batch.values() for record in records]
        if not messages:
            return 0
        try:
            handler(messages)
        except BaseException:
            self._rewind(batch, {})
            raise
        self._commit(
            {
                tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                for tp, records in batch.items()
                if records
            }
        )
        return len(messages)

    def _fetch(self, max_messages: int, timeout: float) -> dict[Any, list[Any]]:
        """The consumer's next records by partition, each partition's in offset order."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self._check_open()
        try:
            batch: dict[Any, list[Any]] = self._consumer.poll(
                timeout_ms=int(timeout * 1000), max_records=max_messages
            )
        except KafkaError as exc:
            raise BusError(f"poll of {self.topic} on {self._where} failed: {exc}") from exc
        return batch

    def backlog(self) -> int | None:
        """Messages on this member's partitions past the group's committed offsets: for each
        assigned partition, its end offset minus the committed offset, or minus the partition's
        start offset when the group has committed nothing there (the bus resets a new group to
        the earliest message).

        The end offset is the larger of ListOffsets(latest) and the high watermark of the
        consumer's last fetch from the partition. Either alone can be short: tansu answers
        ListOffsets with the offset after the *first* record of the last batch (3 records
        published in one batch at offsets 0-2 give 1, not 3), and a fetch's high watermark is
        as old as the fetch. Once this member has handled a record of the last batch, the fetch
        that brought it reported the true end, so the sum is 0 only when nothing is left.

        None while that cannot be told: the consumer holds no partition (its first polls have
        not joined the group yet, a rebalance is under way, or the group has more members than
        the topic has partitions), or has no fetch response yet from one of its partitions.
        Only the brokers are asked (ListOffsets, OffsetFetch): the consumer's position, fetch
        buffers and commits are left untouched.
        """
        self._check_open()
        consumer, wait = self._consumer, BACKLOG_TIMEOUT_MS
        assigned = sorted(consumer.assignment())
        if not assigned:
            return None
        fetched: dict[Any, int] = {}
        for tp in assigned:
            try:
                highwater = consumer.highwater(tp)
            except IllegalStateError:  # revoked since assignment() was asked
                return None
            if highwater is None:
                return None
            fetched[tp] = highwater
        try:
            ends: dict[Any, int] = consumer.end_offsets(assigned, timeout_ms=wait)
            starts: dict[Any, int] = {}
            for tp in assigned:
                committed = consumer.committed(tp, timeout_ms=wait)
                if committed is not None:
                    starts[tp] = committed
            never_committed = [tp for tp in assigned if tp not in starts]
            if never_committed:
                starts.update(consumer.beginning_offsets(never_committed, timeout_ms=wait))
        except KafkaError as exc:
            raise BusError(
                f"cannot read the backlog of {self.topic} for group {self.group} on "
                f"{self._where}: {exc}"
            ) from exc
        return sum(max(0, max(ends[tp], fetched[tp]) - starts[tp]) for tp in assigned)

    def _rewind(self, batch: Mapping[Any, list[Any]], done: Mapping[Any, Any]) -> None:
        """Seek each partition of the batch back to its first unhandled message, so that the
        next poll delivers it again (the consumer's position is already past the batch)."""
        for tp, records in batch.items():
            first_unhandled = done[tp].offset if tp in done else records[0].offset
            if first_unhandled > records[-1].offset:
                continue
            try:
                self._consumer.seek(tp, first_unhandled)
            except (ValueError, KafkaError) as exc:
                # Revoked meanwhile: its next owner starts from the committed offset anyway.
                log.info("not rewinding %s: %s", tp, exc)

    def _commit(self, offsets: dict[Any, Any]) -> None:
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            raise BusError(
                f"commit of {self.topic} offsets for group {self.group} on {self._where} "
                f"failed: {exc}"
            ) from exc

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise BusError(f"subscription to {self.topic} (group {self.group}) is closed")

    def close(self) -> None:
        self._finalizer()


def _message(record: Any) -> Message:
    # Keys are only partitioning hints written by publish() as UTF-8; a foreign key that is not
    # UTF-8 must not make its message undeliverable, hence "replace".
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else ""
    value = record.value if record.value is not None else b""
    return Message(record.topic, record.partition, record.offset, key, value)


def _close_consumer(consumer: Any) -> None:
    try:
        consumer.close(autocommit=False)
    except Exception as exc:  # closing is best effort; the broker expires the member anyway
        log.warning("closing a Kafka consumer failed: %s", exc)
