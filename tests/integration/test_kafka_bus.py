"""Kafka-only behaviour of ``KafkaBus`` on a real tansu broker: a group split across members, a
consumer process killed with SIGKILL, and a broker that goes away under a producer.

Group rebalances on tansu take seconds (a join waits about half the session timeout, and a
killed member is only dropped when its session expires), so every wait here is a bounded loop.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.structs import TopicPartition

from drainwatch.bus.kafka import KafkaBus
from drainwatch.errors import BusError
from drainwatch.ports import Message
from tests.fixtures.kafka import TansuBroker, free_port, poll_until

pytestmark = pytest.mark.kafka

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEST_CONSUMER_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
# A producer that notices a dead broker within seconds instead of minutes.
IMPATIENT_PRODUCER = {"request_timeout_ms": 2000, "max_block_ms": 2000, "retry_backoff_ms": 100}


def unique(name: str) -> str:
    return f"test.{name}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bus(kafka_broker: str) -> Iterator[KafkaBus]:
    adapter = KafkaBus([kafka_broker], consumer_options=TEST_CONSUMER_OPTIONS)
    yield adapter
    adapter.close()


def test_two_members_of_a_group_split_the_partitions(bus: KafkaBus) -> None:
    topic, group = unique("topic"), unique("group")
    bus.ensure_topic(topic, 4)
    members = [bus.subscribe(topic, group), bus.subscribe(topic, group)]
    received: list[list[Message]] = [[], []]
    stop = threading.Event()

    # Each member polls in a thread of its own: a member that is not polling while the group
    # rebalances holds the rebalance up (on tansu it then starts over, again and again).
    def run(n: int) -> None:
        while not stop.is_set():
            members[n].poll(received[n].append, max_messages=5, timeout=0.2)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in (0, 1)]
    for thread in threads:
        thread.start()
    # Publish in rounds until both members have a share: whichever joins first may briefly own
    # every partition, so messages published before the split proves nothing.
    published: list[bytes] = []
    deadline = time.monotonic() + 45
    try:
        while not (received[0] and received[1]) and time.monotonic() < deadline:
            for _ in range(8):
                published.append(f"v{len(published)}".encode())
                bus.publish(topic, f"address-{len(published)}", published[-1])
            bus.flush(timeout=10)
            time.sleep(0.5)
        while len(received[0]) + len(received[1]) < len(published):
            assert time.monotonic() < deadline, "the group never delivered every message"
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

    assert received[0] and received[1], "one member got no share of the partitions"
    together = [m.value for m in received[0] + received[1]]
    assert sorted(together) == sorted(published), "not every message exactly once"
    assert {m.partition for m in received[0] + received[1]} == {0, 1, 2, 3}


def test_backlog_is_none_until_the_member_holds_partitions_and_has_fetched(
    bus: KafkaBus,
) -> None:
    topic, group = unique("topic"), unique("group")
    bus.ensure_topic(topic, 2)
    for i in range(6):
        bus.publish(topic, f"address-{i}", f"v{i}".encode())
    bus.flush(timeout=10)
    subscription = bus.subscribe(topic, group)
    assert subscription.backlog() is None, "no poll yet, so no partition assigned"

    answers: list[int | None] = []
    received: list[Message] = []
    deadline = time.monotonic() + 30
    while not answers or answers[-1] != 0:
        assert time.monotonic() < deadline, f"never caught up: {answers[-5:]}"
        subscription.poll(received.append, timeout=0.5)
        answers.append(subscription.backlog())
    assert sorted(m.value for m in received) == sorted(f"v{i}".encode() for i in range(6))
    # None while joining and before the first fetches, then counts that only go down.
    known = [a for a in answers if a is not None]
    assert answers[: len(answers) - len(known)] == [None] * (len(answers) - len(known))
    assert known == sorted(known, reverse=True) and known[0] <= 6


CHILD_CONSUMER = """
import sys, time
from drainwatch.bus.kafka import KafkaBus

bootstrap, topic, group = sys.argv[1:4]
bus = KafkaBus([bootstrap], consumer_options={"session_timeout_ms": 6000,
                                              "heartbeat_interval_ms": 1000})
subscription = bus.subscribe(topic, group)

def handle(message):
    print(message.partition, message.offset, flush=True)
    time.sleep(0.05)  # slow enough to be killed mid-stream

while True:
    subscription.poll(handle, max_messages=2, timeout=0.5)
"""


def test_consumer_killed_with_sigkill_resumes_from_its_committed_offset(
    bus: KafkaBus, kafka_broker: str
) -> None:
    topic, group = unique("topic"), unique("group")
    bus.ensure_topic(topic, 4)
    for i in range(60):
        bus.publish(topic, f"address-{i}", f"v{i}".encode())
    bus.flush(timeout=10)

    kill_consumer_process_mid_stream(kafka_broker, topic, group, after=15)

    committed = committed_offsets(kafka_broker, group, topic, 4)
    assert sum(committed.values()) >= 1, "the child committed nothing before it was killed"

    def resumed_all(received: list[Message]) -> bool:
        return len(received) >= 60 - sum(committed.values())

    # The killed member stays in the group until its session expires, hence the long wait.
    resumed = poll_until(bus.subscribe(topic, group), resumed_all, timeout=45)
    by_partition: dict[int, list[int]] = {}
    for message in resumed:
        by_partition.setdefault(message.partition, []).append(message.offset)
    for partition, offsets in by_partition.items():
        start = committed.get(partition, 0)
        assert offsets == list(range(start, start + len(offsets))), (
            f"partition {partition} did not resume at its committed offset {start}: {offsets}"
        )
    assert len(resumed) == 60 - sum(committed.values()), "lost or repeated messages"


def kill_consumer_process_mid_stream(bootstrap: str, topic: str, group: str, after: int) -> None:
    """Run CHILD_CONSUMER, let it handle ``after`` messages, then SIGKILL it."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_CONSUMER, bootstrap, topic, group],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in child.stdout or []:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            for _ in range(after):
                try:
                    lines.get(timeout=30)
                except queue.Empty:
                    errors.seek(0)
                    pytest.fail(f"the consumer process stalled:\n{errors.read()[-3000:]}")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=[bootstrap])
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        found = admin.list_group_offsets({group: wanted})[group]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in found.items() if om.offset >= 0}


def test_flush_raises_bus_error_when_the_broker_is_gone(tansu_broker: TansuBroker) -> None:
    bus = KafkaBus([tansu_broker.bootstrap], producer_options=IMPATIENT_PRODUCER)
    topic = unique("topic")
    bus.ensure_topic(topic, 1)
    bus.publish(topic, "k", b"before")
    bus.flush(timeout=10)

    tansu_broker.stop()
    bus.publish(topic, "k", b"while the broker is gone")
    with pytest.raises(BusError, match=topic):
        bus.flush(timeout=3)
    with pytest.raises(BusError, match=tansu_broker.bootstrap):
        bus.publish(unique("unknown-topic"), "k", b"no metadata for this one")
    # Closing still releases everything, and still says that a message was not delivered.
    with pytest.raises(BusError):
        bus.close(timeout=2)


def test_unreachable_brokers_are_named_in_the_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    bus = KafkaBus([address], connect_timeout=1)
    with pytest.raises(BusError, match=address):
        bus.subscribe(unique("topic"), unique("group"))
    with pytest.raises(BusError, match=address):
        bus.publish(unique("topic"), "k", b"v")
    with pytest.raises(BusError, match=address):
        bus.ensure_topic(unique("topic"), 1)
    bus.close()


def test_after_a_broker_restart_lost_messages_are_reported_and_the_bus_recovers(
    tansu_broker: TansuBroker,
) -> None:
    bus = KafkaBus(
        [tansu_broker.bootstrap],
        producer_options=IMPATIENT_PRODUCER,
        consumer_options=TEST_CONSUMER_OPTIONS,
    )
    topic = unique("topic")
    bus.ensure_topic(topic, 1)
    bus.publish(topic, "k", b"before")
    bus.flush(timeout=10)

    tansu_broker.restart()  # memory storage: it comes back empty, not knowing the producer
    bus.publish(topic, "k", b"lost in the restart")
    with pytest.raises(BusError, match=topic):
        bus.flush(timeout=10)

    bus.ensure_topic(topic, 1)
    bus.publish(topic, "k", b"after")
    bus.flush(timeout=10)
    received = poll_until(bus.subscribe(topic, unique("group")), lambda r: len(r) >= 1)
    assert [m.value for m in received] == [b"after"]
    bus.close()
