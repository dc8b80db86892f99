"""The ``EventBus`` contract, run on every adapter: in-process, and Kafka on a real tansu broker.

Each test uses its own topic and group names, so tests share one broker without interfering.
Waits are bounded by ``poll_until``; "nothing else arrives" is checked by publishing a sentinel
after the messages and reading up to it, never by sleeping.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from drainwatch.bus.inprocess import InProcessBus
from drainwatch.bus.kafka import KafkaBus
from drainwatch.errors import BusError
from drainwatch.ports import Message, Subscription
from tests.fixtures.kafka import poll_until, poll_until_caught_up

# Tansu joins a group in about half the session timeout: keep it short in tests.
TEST_CONSUMER_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

AnyBus = InProcessBus | KafkaBus


class Crash(Exception):
    """What a handler raises to stand for a failure or a consumer dying mid-message."""


@pytest.fixture(params=["inprocess", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Iterator[AnyBus]:
    adapter: AnyBus
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_broker")
        adapter = KafkaBus([bootstrap], consumer_options=TEST_CONSUMER_OPTIONS)
    else:
        adapter = InProcessBus()
    yield adapter
    adapter.close()


def unique(name: str) -> str:
    return f"test.{name}.{uuid.uuid4().hex[:12]}"


def new_topic(bus: AnyBus, partitions: int) -> str:
    topic = unique("topic")
    bus.ensure_topic(topic, partitions)
    return topic


def attempts(seconds: float = 30.0) -> Iterator[None]:
    """Loop for at most ``seconds``: the bound on every wait that poll_until does not cover."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield


def values(messages: list[Message]) -> list[bytes]:
    return [m.value for m in messages]


def has(value: bytes) -> Callable[[list[Message]], bool]:
    return lambda received: value in values(received)


def test_round_trip(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    for i in range(5):
        bus.publish(topic, "tx-key", f"v{i}".encode())
    bus.flush(timeout=10)

    subscription = bus.subscribe(topic, unique("group"))
    received: list[Message] = []
    counts: list[int] = []
    for _ in attempts():
        if len(received) >= 5:
            break
        counts.append(subscription.poll(received.append, max_messages=2, timeout=0.5))
    assert all(c <= 2 for c in counts), "max_messages was not honoured"
    assert sum(counts) == 5
    assert values(received) == [f"v{i}".encode() for i in range(5)]
    assert {(m.topic, m.key, m.partition) for m in received} == {(topic, "tx-key", 0)}
    assert [m.offset for m in received] == sorted({m.offset for m in received})


def test_order_per_key(bus: AnyBus) -> None:
    topic = new_topic(bus, 3)
    keys = [f"chain:{n}" for n in range(6)]
    for seq in range(15):
        for key in keys:
            bus.publish(topic, key, f"{key}/{seq}".encode())
    bus.flush(timeout=10)

    received = poll_until(bus.subscribe(topic, unique("group")), lambda r: len(r) >= 90)
    assert len(received) == 90
    for key in keys:
        mine = [m for m in received if m.key == key]
        assert values(mine) == [f"{key}/{seq}".encode() for seq in range(15)]
        assert len({m.partition for m in mine}) == 1, "a key must stay on one partition"


def test_handler_that_raises_commits_nothing_and_sees_the_message_again(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    for i in range(5):
        bus.publish(topic, "k", f"v{i}".encode())
    bus.publish(topic, "k", b"end")
    bus.flush(timeout=10)
    group = unique("group")
    subscription = bus.subscribe(topic, group)

    seen: list[bytes] = []
    failed_once = False

    def handler(message: Message) -> None:
        nonlocal failed_once
        if message.value == b"v2" and not failed_once:
            failed_once = True
            raise Crash("handler failed on v2")
        seen.append(message.value)

    for _ in attempts():
        try:
            subscription.poll(handler, timeout=0.5)
        except Crash:
            break
    assert failed_once, "the handler never saw v2"
    assert seen == [b"v0", b"v1"]

    rest = poll_until(subscription, has(b"end"))
    assert values(rest) == [b"v2", b"v3", b"v4", b"end"], "v2 must come back first, once"
    subscription.close()

    # Everything was committed: a new member of the group gets only what comes next.
    bus.publish(topic, "k", b"later")
    bus.flush(timeout=10)
    after = poll_until(bus.subscribe(topic, group), has(b"later"))
    assert values(after) == [b"later"]


def test_a_failure_rewinds_every_partition_of_the_batch(bus: AnyBus) -> None:
    topic = new_topic(bus, 3)
    published = [f"v{i}".encode() for i in range(30)]
    for i, value in enumerate(published):
        bus.publish(topic, f"key{i % 5}", value)
    bus.flush(timeout=10)
    subscription = bus.subscribe(topic, unique("group"))

    succeeded: list[bytes] = []
    failures = 0

    def fails_every_fourth(message: Message) -> None:
        nonlocal failures
        if (len(succeeded) + failures) % 4 == 3:
            failures += 1
            raise Crash(f"failed on {message.value!r}")
        succeeded.append(message.value)

    for _ in attempts():
        if len(succeeded) == len(published):
            break
        with contextlib.suppress(Crash):
            subscription.poll(fails_every_fourth, max_messages=10, timeout=0.5)
    assert failures > 0
    # Whatever partition the failed message was on, the batch's other partitions were not
    # skipped past either: every message succeeded exactly once.
    assert sorted(succeeded) == sorted(published)


def test_concurrent_publishers_keep_per_key_order(bus: AnyBus) -> None:
    topic = new_topic(bus, 2)

    def publisher(n: int) -> None:
        for seq in range(40):
            bus.publish(topic, f"writer-{n}", f"{n}/{seq}".encode())

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    bus.flush(timeout=10)

    received = poll_until(bus.subscribe(topic, unique("group")), lambda r: len(r) >= 160)
    assert len(received) == 160
    for n in range(4):
        mine = [m.value for m in received if m.key == f"writer-{n}"]
        assert mine == [f"{n}/{seq}".encode() for seq in range(40)]


@pytest.mark.parametrize("how", ["close", "drop"])
def test_killed_consumer_resumes_from_its_committed_offset(bus: AnyBus, how: str) -> None:
    topic = new_topic(bus, 2)
    published = [f"v{i}".encode() for i in range(20)]
    for i, value in enumerate(published):
        bus.publish(topic, f"key{i % 4}", value)
    bus.publish(topic, "key0", b"end")  # on the partition of key0, after its v-messages
    bus.flush(timeout=10)
    group = unique("group")

    subscription = bus.subscribe(topic, group)
    handled: list[bytes] = []

    def dies_after_seven(message: Message) -> None:
        if len(handled) == 7:
            raise Crash("consumer killed while handling a message")
        handled.append(message.value)

    crashed = False
    for _ in attempts():
        try:
            subscription.poll(dies_after_seven, max_messages=3, timeout=0.5)
        except Crash:
            crashed = True
            break
    assert crashed
    if how == "close":
        subscription.close()
    else:
        del subscription  # no close(): the consumer is simply gone
        gc.collect()

    def everything(received: list[Message]) -> bool:
        got = set(values(received))
        return b"end" in got and set(published) - set(handled) <= got

    resumed = values(poll_until(bus.subscribe(topic, group), everything))
    assert not set(resumed) & set(handled), "committed messages were delivered again"
    assert set(handled) | set(resumed) == {*published, b"end"}, "messages were lost"
    assert len(resumed) == len(set(resumed)), "a message was delivered twice"


def test_two_groups_each_see_every_message(bus: AnyBus) -> None:
    topic = new_topic(bus, 2)
    published = {f"v{i}".encode() for i in range(12)}
    for i, value in enumerate(sorted(published)):
        bus.publish(topic, f"key{i % 3}", value)
    bus.flush(timeout=10)

    first = bus.subscribe(topic, unique("group"))
    second = bus.subscribe(topic, unique("group"))
    for subscription in (first, second):
        received = poll_until(subscription, lambda r: len(r) >= len(published))
        assert sorted(values(received)) == sorted(published)


def test_backlog_counts_what_the_group_has_not_handled(bus: AnyBus) -> None:
    topic = new_topic(bus, 2)
    published = [f"v{i}".encode() for i in range(7)]
    for i, value in enumerate(published):
        bus.publish(topic, f"key{i % 3}", value)
    bus.flush(timeout=10)

    subscription = bus.subscribe(topic, unique("group"))
    before = subscription.backlog()
    assert before is None or before >= len(published)
    if isinstance(bus, InProcessBus):
        assert before == len(published), "the in-process backlog is exact"
    received = poll_until(subscription, lambda r: len(r) >= len(published))
    assert sorted(values(received)) == sorted(published)
    assert subscription.backlog() == 0

    bus.publish(topic, "key0", b"later")
    bus.flush(timeout=10)
    assert subscription.backlog() == 1
    assert values(poll_until(subscription, has(b"later"))) == [b"later"]
    assert subscription.backlog() == 0


def test_polling_until_the_backlog_is_zero_delivers_everything_once(bus: AnyBus) -> None:
    topic = new_topic(bus, 3)
    published = [f"v{i}".encode() for i in range(40)]
    for i, value in enumerate(published):
        bus.publish(topic, f"key{i % 7}", value)
    bus.flush(timeout=10)

    subscription = bus.subscribe(topic, unique("group"))
    received: list[Message] = []
    # backlog() is asked between polls: it must neither move the position nor commit.
    assert poll_until_caught_up(subscription, received.append) == len(published)
    assert sorted(values(received)) == sorted(published), "lost or repeated messages"


@pytest.mark.parametrize("max_messages", [1, 500])
def test_polling_until_the_backlog_is_zero_waits_for_empty_partitions_too(
    bus: AnyBus, max_messages: int
) -> None:
    topic = new_topic(bus, 4)
    for i in range(5):  # one key, so at least three partitions stay empty
        bus.publish(topic, "only-key", f"v{i}".encode())
    bus.flush(timeout=10)

    subscription = bus.subscribe(topic, unique("group"))
    received: list[Message] = []
    assert poll_until_caught_up(subscription, received.append, max_messages=max_messages) == 5
    assert values(received) == [f"v{i}".encode() for i in range(5)]


def test_backlog_counts_down_as_messages_are_handled(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    for i in range(4):  # published together: one batch on Kafka
        bus.publish(topic, "k", f"v{i}".encode())
    bus.flush(timeout=10)
    subscription = bus.subscribe(topic, unique("group"))

    received: list[Message] = []
    backlogs: list[int | None] = []
    for _ in attempts():
        if len(received) == 4:
            break
        if subscription.poll(received.append, max_messages=1, timeout=0.5):
            backlogs.append(subscription.backlog())
    assert values(received) == [f"v{i}".encode() for i in range(4)]
    assert backlogs == [3, 2, 1, 0], "the whole batch counts, not just its first record"


def test_a_handler_that_raises_leaves_its_message_in_the_backlog(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    for i in range(3):
        bus.publish(topic, "k", f"v{i}".encode())
    bus.flush(timeout=10)
    subscription = bus.subscribe(topic, unique("group"))

    def fails_on_v1(message: Message) -> None:
        if message.value == b"v1":
            raise Crash("handler failed on v1")

    crashed = False
    for _ in attempts():
        try:
            subscription.poll(fails_on_v1, timeout=0.5)
        except Crash:
            crashed = True
            break
    assert crashed, "the handler never saw v1"
    assert subscription.backlog() == 2, "v1 failed, so v1 and v2 are still to be handled"
    assert subscription.backlog() == 2, "asking twice changes nothing"

    rest = poll_until(subscription, has(b"v2"))
    assert values(rest) == [b"v1", b"v2"], "backlog() moved the position or committed"
    assert subscription.backlog() == 0


def test_each_group_has_its_own_backlog(bus: AnyBus) -> None:
    topic = new_topic(bus, 2)
    published = [f"v{i}".encode() for i in range(10)]
    for i, value in enumerate(published):
        bus.publish(topic, f"key{i % 4}", value)
    bus.flush(timeout=10)

    first = bus.subscribe(topic, unique("group"))
    assert poll_until_caught_up(first, lambda message: None) == len(published)
    second = bus.subscribe(topic, unique("group"))
    ahead = second.backlog()
    assert ahead is None or ahead >= len(published), "the first group's commits leaked"
    received = poll_until(second, lambda r: len(r) >= len(published))
    assert sorted(values(received)) == sorted(published)
    assert second.backlog() == 0
    assert first.backlog() == 0


def test_a_closed_subscription_has_no_backlog(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    subscription = bus.subscribe(topic, unique("group"))
    subscription.close()
    with pytest.raises(BusError):
        subscription.backlog()


def test_a_closed_bus_refuses_to_publish(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    bus.publish(topic, "k", b"v")
    bus.flush(timeout=10)
    bus.close()
    with pytest.raises(BusError):
        bus.publish(topic, "k", b"after close")


# -- poll_batch: a batch at a time, committed whole or not at all ------------------------------


def poll_batches_until(
    subscription: Subscription, done: Callable[[list[Message]], bool], *, max_messages: int = 500
) -> list[list[Message]]:
    """The batches ``poll_batch`` hands over until ``done(all received)``; bounded."""
    batches: list[list[Message]] = []
    for _ in attempts():
        if done([m for batch in batches for m in batch]):
            return batches
        subscription.poll_batch(
            lambda batch: batches.append(list(batch)), max_messages=max_messages, timeout=0.5
        )
    pytest.fail(f"gave up with {sum(map(len, batches))} message(s) in {len(batches)} batch(es)")


def test_poll_batch_hands_over_batches_in_order_and_commits_them(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    for i in range(7):
        bus.publish(topic, "k", f"v{i}".encode())
    bus.flush(timeout=10)
    group = unique("group")
    subscription = bus.subscribe(topic, group)

    batches = poll_batches_until(subscription, lambda r: len(r) >= 7, max_messages=3)
    assert all(0 < len(batch) <= 3 for batch in batches), "max_messages was not honoured"
    assert values([m for batch in batches for m in batch]) == [f"v{i}".encode() for i in range(7)]
    assert subscription.backlog() == 0
    subscription.close()

    bus.publish(topic, "k", b"later")
    bus.flush(timeout=10)
    after = poll_batches_until(bus.subscribe(topic, group), lambda r: len(r) >= 1)
    assert [values(batch) for batch in after] == [[b"later"]], "a committed batch came back"


def test_a_batch_handler_that_raises_commits_none_of_its_batch(bus: AnyBus) -> None:
    topic = new_topic(bus, 3)
    published = [f"v{i}".encode() for i in range(12)]
    for i, value in enumerate(published):
        bus.publish(topic, f"key{i % 4}", value)
    bus.flush(timeout=10)
    group = unique("group")
    subscription = bus.subscribe(topic, group)

    failed: list[Message] = []

    def fails(batch: Sequence[Message]) -> None:
        failed.extend(batch)
        raise Crash("failed in the middle of the batch")

    for _ in attempts():
        try:
            subscription.poll_batch(fails, timeout=0.5)
        except Crash:
            break
    assert failed, "the handler never got a batch"
    assert subscription.backlog() == len(published), "part of a failed batch was committed"

    # The failed batch comes again, every message of it, each once, in partition order.
    again = [m for b in poll_batches_until(subscription, lambda r: len(r) >= len(published))
             for m in b]  # fmt: skip
    assert sorted(values(again)) == sorted(published)
    assert {m.value for m in failed} <= set(values(again))
    for key in {m.key for m in again}:
        mine = [m.value for m in again if m.key == key]
        assert mine == [v for i, v in enumerate(published) if f"key{i % 4}" == key]
    assert subscription.backlog() == 0


def test_a_batch_handler_that_raises_leaves_the_batch_to_the_next_member(bus: AnyBus) -> None:
    topic = new_topic(bus, 1)
    for i in range(4):
        bus.publish(topic, "k", f"v{i}".encode())
    bus.flush(timeout=10)
    group = unique("group")
    subscription = bus.subscribe(topic, group)

    def dies(batch: Sequence[Message]) -> None:
        raise Crash("the consumer died while applying the batch")

    for _ in attempts():
        try:
            subscription.poll_batch(dies, timeout=0.5)
        except Crash:
            break
    subscription.close()
    resumed = poll_batches_until(bus.subscribe(topic, group), lambda r: len(r) >= 4)
    assert values([m for batch in resumed for m in batch]) == [f"v{i}".encode() for i in range(4)]
