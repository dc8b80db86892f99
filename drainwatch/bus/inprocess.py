"""The embedded event bus: topics held in memory, with Kafka's consumer-group semantics.

Why mimic Kafka instead of a plain queue: the pipeline is written once against
``drainwatch.ports.EventBus``, and a consumer that is correct here must stay correct on Kafka.
So a topic is an append-only log split into partitions, each consumer group keeps its own
committed offset per partition, an offset moves only after the handler returned, and a handler
that raises leaves its message (``poll``) or its whole batch (``poll_batch``) to be delivered
again.

Partitioning: a topic has ``partitions`` partitions (default 1) and a message goes to
``crc32(key) % partitions``. A stable hash (not ``hash()``, which is salted per process) keeps a
key on one partition, so messages with the same key keep their order.

Groups: members of one group share the group's committed offsets; while one member is inside
``poll`` the others wait (up to their timeout), so a message is never handed to two members of a
group at once. A member holds no position of its own — it always reads from the committed
offset — so dropping a ``Subscription`` without closing it loses nothing, and a new member
resumes exactly where the group left off.

Nothing survives the process: this bus is for the embedded mode and for tests. Thread-safe.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, field

from drainwatch.errors import BusError
from drainwatch.ports import BatchHandler, Handler, Message


@dataclass
class _Topic:
    partitions: list[list[Message]]
    # group -> the next offset to deliver, per partition
    committed: dict[str, list[int]] = field(default_factory=dict)
    # groups that have a member inside poll() right now
    busy: set[str] = field(default_factory=set)

    def offsets(self, group: str) -> list[int]:
        return self.committed.setdefault(group, [0] * len(self.partitions))

    def waiting(self, group: str, max_messages: int) -> list[Message]:
        """Uncommitted messages of ``group``, partition by partition, in offset order."""
        batch: list[Message] = []
        for log, offset in zip(self.partitions, self.offsets(group), strict=True):
            batch.extend(log[offset : offset + max_messages - len(batch)])
            if len(batch) >= max_messages:
                break
        return batch


class InProcessBus:
    """``EventBus`` in memory. ``partitions`` is the count for topics created implicitly."""

    def __init__(self, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._default_partitions = partitions
        self._topics: dict[str, _Topic] = {}
        self._closed = False
        # One condition for the whole bus: publishers wake pollers, finished polls wake the
        # other members of their group. Contention is irrelevant at in-process volumes.
        self._cond = threading.Condition()

    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions unless it exists (then keep it as is,
        like Kafka, where the partition count of a topic is not changed implicitly)."""
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        with self._cond:
            self._check_open()
            self._topic(topic, partitions)

    def publish(self, topic: str, key: str, value: bytes) -> None:
        with self._cond:
            self._check_open()
            t = self._topic(topic, self._default_partitions)
            partition = zlib.crc32(key.encode("utf-8")) % len(t.partitions)
            log = t.partitions[partition]
            log.append(Message(topic, partition, len(log), key, value))
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Nothing to wait for: ``publish`` appends to the log before it returns."""

    def subscribe(self, topic: str, group: str) -> InProcessSubscription:
        with self._cond:
            self._check_open()
            self._topic(topic, self._default_partitions)
        return InProcessSubscription(self, topic, group)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- used by InProcessSubscription ------------------------------------------------------

    def _claim(
        self, sub: InProcessSubscription, max_messages: int, timeout: float
    ) -> list[Message]:
        """Wait up to ``timeout`` for messages of the subscription's group and mark the group
        busy when returning some; the caller must ``_release`` it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_open()
                if sub.closed:
                    raise BusError(f"subscription to {sub.topic} (group {sub.group}) is closed")
                t = self._topics[sub.topic]
                if sub.group not in t.busy:
                    batch = t.waiting(sub.group, max_messages)
                    if batch:
                        t.busy.add(sub.group)
                        return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def _backlog(self, sub: InProcessSubscription) -> int:
        with self._cond:
            self._check_open()
            if sub.closed:
                raise BusError(f"subscription to {sub.topic} (group {sub.group}) is closed")
            t = self._topics[sub.topic]
            return sum(
                len(log) - offset
                for log, offset in zip(t.partitions, t.offsets(sub.group), strict=True)
            )

    def _commit(self, group: str, messages: list[Message]) -> None:
        """Commit up to and including ``messages``, which are in offset order per partition."""
        with self._cond:
            for message in messages:
                self._topics[message.topic].offsets(group)[message.partition] = message.offset + 1

    def _release(self, topic: str, group: str) -> None:
        with self._cond:
            self._topics[topic].busy.discard(group)
            self._cond.notify_all()

    def _topic(self, name: str, partitions: int) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = _Topic([[] for _ in range(partitions)])
        return t

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the in-process bus is closed")


class InProcessSubscription:
    """One member of ``group`` on ``topic``; see the module docstring for the group rules."""

    def __init__(self, bus: InProcessBus, topic: str, group: str) -> None:
        self._bus = bus
        self.topic = topic
        self.group = group
        self.closed = False

    def poll(self, handler: Handler, *, max_messages: int = 500, timeout: float = 1.0) -> int:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        batch = self._bus._claim(self, max_messages, timeout)
        if not batch:
            return 0  # the group was not claimed: another member may hold it
        handled = 0
        try:
            for message in batch:
                handler(message)
                # Commit each message as soon as its handler returned: in memory this costs
                # nothing, and it makes "committed up to the last success" exact.
                self._bus._commit(self.group, [message])
                handled += 1
        finally:
            self._bus._release(self.topic, self.group)
        return handled

    def poll_batch(
        self, handler: BatchHandler, *, max_messages: int = 500, timeout: float = 1.0
    ) -> int:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        batch = self._bus._claim(self, max_messages, timeout)
        if not batch:
            return 0
        try:
            handler(batch)
            self._bus._commit(self.group, batch)
        finally:
            self._bus._release(self.topic, self.group)
        return len(batch)

    def backlog(self) -> int | None:
        """Exact, never None: every member of the group holds every partition, so this is the
        number of messages of the topic past the group's committed offsets — including those a
        member is handling right now, until their handler has returned."""
        return self._bus._backlog(self)

    def close(self) -> None:
        self.closed = True
