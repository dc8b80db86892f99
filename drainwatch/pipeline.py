"""Drives the followers and the processor: in rounds (batch runs, the drill, tests) or as a
service with one thread per chain.

Each chain fails on its own: an error on one chain (a node down, hanging or answering garbage,
a reorg too deep to locate, an endpoint on the wrong network) is reported and that chain alone
is retried after growing pauses (up to a minute) while the others go on. In the service every
chain has its own thread, so a node that accepts connections and never answers delays only its
own chain. On the in-process bus, which keeps nothing, a follower hands its block to the
processor (``settle``) before it moves its checkpoint; on Kafka a processor thread consumes.

Alerts reach their channels through the outbox: the processor writes them, the notifier sends
them. In the service the notifier has a thread of its own, woken by the processor's commits
(``wake``), so a slow or failing channel never holds back a watcher or the processor; in rounds
it sends what is due after each handed-over batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from drainwatch.errors import BusError, DrainwatchError
from drainwatch.ports import Subscription
from drainwatch.processor import Processor
from watchers.follow import Follower

if TYPE_CHECKING:
    from alerts.notifier import Notifier

log = logging.getLogger(__name__)

ErrorReport = Callable[[str, Exception, float], None]
MAX_PAUSE = 60.0


class Pipeline:
    def __init__(
        self,
        processor: Processor,
        subscription: Subscription,
        poll_timeout: float = 0.2,
        *,
        notifier: Notifier | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        """``wake`` is set by the processor when it has written outbox rows (its
        ``on_commit``); ``notifier`` sends them."""
        self.followers: list[Follower[Any]] = []
        self.processor = processor
        self.notifier = notifier
        self.wake = wake or threading.Event()
        self._service = False
        self._subscription = subscription
        self._poll_timeout = poll_timeout
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._settle_lock = threading.Lock()

    def run_once(
        self,
        until: Mapping[str, int] | None = None,
        *,
        on_error: ErrorReport | None = None,
    ) -> int:
        """One round over every chain. Without ``on_error`` a failure propagates; with it, it
        is reported and that chain alone is paused while the others go on."""
        blocks = 0
        for follower in self.followers:
            name = follower.chain.name
            if time.monotonic() < self._retry_at.get(name, 0.0):
                continue
            try:
                blocks += follower.step((until or {}).get(name))
                self._failures.pop(name, None)
            except DrainwatchError as exc:
                if on_error is None:
                    raise
                pause = self._pause(name)
                self._retry_at[name] = time.monotonic() + pause
                on_error(name, exc, pause)
            self.drain()
            self.deliver()
        return blocks

    def deliver(self) -> int:
        """Send what the outbox holds now (in rounds; the service's notifier thread does it
        there). A channel that fails keeps its rows for the next pass: nothing is lost."""
        if self.notifier is None or self._service:
            return 0
        self.wake.clear()
        return self.notifier.deliver_all()

    def run_service(
        self,
        stop: threading.Event,
        intervals: Mapping[str, float],
        on_error: ErrorReport,
        *,
        consume: bool,
        heads: Mapping[str, threading.Event] | None = None,
    ) -> None:
        """Until ``stop``: a thread per chain, plus a processor thread when ``consume`` (a bus
        that keeps messages, where the processor is not driven by the followers).

        ``heads`` maps a chain to its new-head signal (set by a ``newHeads`` subscription): its
        follow thread waits on it rather than for the whole poll interval, which then only
        bounds the wait."""
        heads = heads or {}
        self._service = True
        threads = [
            threading.Thread(
                target=self._follow,
                args=(f, stop, intervals.get(f.chain.name, 1.0), on_error),
                kwargs={"head": heads.get(f.chain.name)},
                name=f"follow-{f.chain.name}",
                daemon=True,
            )
            for f in self.followers
        ]
        if consume:
            threads.append(
                threading.Thread(
                    target=self._consume, args=(stop, on_error), name="processor", daemon=True
                )
            )
        if self.notifier is not None:
            threads.append(
                threading.Thread(
                    target=self.notifier.run, args=(stop, self.wake), name="notifier", daemon=True
                )
            )
        for thread in threads:
            thread.start()
        stop.wait()
        for head in heads.values():
            head.set()  # a follow thread waiting on its head signal sees ``stop`` now
        self.wake.set()  # so does the notifier
        for thread in threads:
            thread.join(timeout=30)
        if self.notifier is not None:
            # One last pass: an alert written just before the stop goes out now, not at the
            # next start (what fails stays in the outbox for it).
            try:
                self.notifier.deliver_due()
            except DrainwatchError as exc:
                log.warning("notifier: last pass at stop failed: %s", exc)

    def _follow(
        self,
        follower: Follower[Any],
        stop: threading.Event,
        interval: float,
        on_error: ErrorReport,
        *,
        head: threading.Event | None = None,
    ) -> None:
        name = follower.chain.name
        while not stop.is_set():
            if head is not None:
                head.clear()  # a head announced from now on is looked for by the next step
            started = time.monotonic()
            try:
                follower.step()
                self._failures.pop(name, None)
            except Exception as exc:  # a service thread must outlive any one failure
                if not isinstance(exc, DrainwatchError):
                    log.exception("%s: unexpected error", name)
                pause = self._pause(name)
                on_error(name, exc, pause)
                stop.wait(pause)
                continue
            # The node is asked once an interval, whatever the step took: a step's own time does
            # not push the next look at the head further out (it bounds the alert latency).
            (head or stop).wait(max(0.0, interval - (time.monotonic() - started)))

    def _consume(self, stop: threading.Event, on_error: ErrorReport) -> None:
        while not stop.is_set():
            try:
                self.drain()
                self._failures.pop("processor", None)
            except Exception as exc:  # uncommitted: the message comes again after the pause
                if not isinstance(exc, DrainwatchError):
                    log.exception("processor: unexpected error")
                pause = self._pause("processor")
                on_error("processor", exc, pause)
                stop.wait(pause)

    def _pause(self, name: str) -> float:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        return min(MAX_PAUSE, 2.0**failures)

    def drain(self) -> int:
        """Hand the processor what is waiting, a poll's batch at a time: each batch is one
        store transaction, and its offsets are committed only once it was applied."""
        total = 0
        handle = self.processor.handle_messages
        while (taken := self._subscription.poll_batch(handle, timeout=self._poll_timeout)) > 0:
            total += taken
        return total

    def settle(self) -> None:
        """Hand everything published so far to the processor, whichever thread published it:
        on the in-process bus a follower calls this before moving its checkpoint."""
        with self._settle_lock:
            while True:
                self.drain()
                if self._subscription.backlog() == 0:
                    break
        self.deliver()

    def catch_up(self, limit_seconds: float = 60.0) -> None:
        """Poll until the processor has handled everything published so far (bounded): on
        Kafka the group join alone takes seconds, so an empty poll does not mean caught up."""
        deadline = time.monotonic() + limit_seconds
        while True:
            self.drain()
            backlog = self._subscription.backlog()
            if backlog == 0:
                self.deliver()
                return
            if time.monotonic() > deadline:
                raise BusError(
                    f"the processor did not catch up within {limit_seconds:.0f} s "
                    f"(backlog: {'unknown' if backlog is None else backlog} message(s))"
                )

    def close(self) -> None:
        self._subscription.close()
