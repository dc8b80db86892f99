"""The notifier: sends the outbox's rows to their sinks, and never loses one.

An alert change is written to the outbox, one row per sink, in the transaction that records
it; only then is anything sent. The notifier leases a row before sending it (a second notifier
on the same store skips it; a notifier that died leaves a lease that runs out), sends it, and
marks it delivered together with where the message went. A process that dies after sending and
before marking leaves a row that is sent again: the sinks make that harmless (Slack looks for
its earlier message by its metadata, the webhook carries an ``Idempotency-Key``).

A failure is a retry, whatever raised it: exponential back-off capped at ``max_retry_seconds``;
a refusal (a 4xx, a Slack error such as ``channel_not_found``) waits the cap and is logged as
something to fix; a 429's ``Retry-After`` pauses the whole sink. The store offers only the
oldest undelivered row of each alert, so an alert's changes go out in order while a blocked
alert holds up no other. One synchronous pass at a time: ``run`` is the service thread's loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from drainwatch.errors import DeliveryError, StoreError
from drainwatch.model import Alert
from drainwatch.ports import AlertCard, Delivery, DeliverySink, Store

log = logging.getLogger(__name__)

Describe = Callable[[Alert], AlertCard]

#: The shortest and longest pause of ``run`` between two passes: rows can be written by other
#: processes (``drainwatch alerts ack``), so the store is asked at least once a second.
MIN_WAIT = 0.1
POLL_SECONDS = 1.0


class Notifier:
    """Delivers the outbox rows of ``sinks`` (each sink's ``name`` is its outbox name).

    ``describe`` makes the card of an alert (``alerts.blocks.CardMaker``); ``clock`` is the
    time in UTC. ``lease_seconds`` must exceed the longest send (a Slack send is a few calls of
    at most its client's timeout each): a lease that runs out mid-send lets another notifier
    send the row too.
    """

    def __init__(
        self,
        store: Store,
        sinks: Sequence[DeliverySink],
        describe: Describe,
        *,
        clock: Callable[[], datetime],
        max_retry_seconds: float = 300.0,
        first_retry_seconds: float = 1.0,
        lease_seconds: float = 120.0,
        batch_size: int = 50,
    ) -> None:
        self._store = store
        self._sinks = tuple(sinks)
        self._describe = describe
        self._clock = clock
        self._max_retry = max_retry_seconds
        self._first_retry = min(first_retry_seconds, max_retry_seconds)
        self._lease = timedelta(seconds=lease_seconds)
        self._batch_size = batch_size
        #: Sink name → when its receiver's Retry-After runs out.
        self._paused: dict[str, datetime] = {}

    @property
    def sink_names(self) -> list[str]:
        """The outbox names of the sinks: what the processor writes rows for."""
        return [sink.name for sink in self._sinks]

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """One pass over every sink: send each due row; returns how many were delivered."""
        delivered = 0
        for sink in self._sinks:
            if stop is not None and stop.is_set():
                break
            try:
                delivered += self._deliver_sink(sink, stop)
            except StoreError as exc:
                log.warning(
                    "outbox of %s: %s; trying again shortly / 送信キューの読み書きに失敗、"
                    "後で再試行します",
                    shown(sink.name),
                    exc,
                )
        return delivered

    def deliver_all(self, max_passes: int = 1000) -> int:
        """Passes until nothing more goes out now (an alert's next row is due once the one
        before is delivered): what a batch run does after each handed-over batch. A row that
        fails waits for its retry time, so this ends."""
        total = 0
        for _ in range(max_passes):
            delivered = self.deliver_due()
            total += delivered
            if not delivered:
                break
        return total

    def run(self, stop: threading.Event, wake: threading.Event) -> None:
        """Deliver until ``stop`` is set; ``wake`` says new rows were written."""
        while not stop.is_set():
            try:
                delivered = self.deliver_due(stop)
            except Exception:  # never let the service thread die: the rows stay in the outbox
                log.exception("notifier pass failed; trying again / 通知処理に失敗、再試行します")
                delivered = 0
            if delivered or stop.is_set():
                continue  # an alert's next row becomes due when the previous one is delivered
            wake.wait(self.wait_seconds())
            wake.clear()

    def wait_seconds(self) -> float:
        """How long ``run`` may sleep before the next row falls due (at most a second)."""
        now = self._clock()
        try:
            due = [self._due_at(sink.name) for sink in self._sinks]
        except StoreError:
            return POLL_SECONDS
        earliest = min((d for d in due if d is not None), default=None)
        if earliest is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(MIN_WAIT, (earliest - now).total_seconds()))

    def _due_at(self, sink: str) -> datetime | None:
        due = self._store.next_delivery_at(sink)
        paused = self._paused.get(sink)
        if due is None or paused is None:
            return due
        return max(due, paused)

    def _deliver_sink(self, sink: DeliverySink, stop: threading.Event | None) -> int:
        now = self._clock()
        if self._paused.get(sink.name, now) > now:
            return 0
        delivered = 0
        for row in self._store.due_deliveries(sink.name, now, self._batch_size):
            if stop is not None and stop.is_set():
                break
            delivered += self._deliver_row(sink, row)
            if self._paused.get(sink.name, now) > now:
                break  # the receiver asked for a pause: the rest waits with this row
        return delivered

    def _deliver_row(self, sink: DeliverySink, row: Delivery) -> int:
        now = self._clock()
        attempts = self._store.claim_delivery(row.id, now, now + self._lease)
        if attempts is None:
            return 0  # another notifier has it, or it is delivered already
        row = replace(row, attempts=attempts)
        previous = self._store.delivery_ref(sink.name, row.alert.id)
        try:
            ref = sink.send(row, self._describe(row.alert), previous)
        except DeliveryError as exc:
            self._failed(sink, row, previous, exc)
            return 0
        except Exception as exc:  # a sink's bug is a retry too: the row must not be lost
            log.exception("alert %s to %s: unexpected error", row.alert.id, shown(sink.name))
            self._failed(sink, row, previous, DeliveryError(f"{type(exc).__name__}: {exc}"))
            return 0
        with self._store.batch():
            if ref is not None and ref != previous:
                self._store.set_delivery_ref(sink.name, row.alert.id, ref, self._clock())
            self._store.finish_delivery(row.id, self._clock())
        return 1

    def _failed(
        self, sink: DeliverySink, row: Delivery, previous: str | None, exc: DeliveryError
    ) -> None:
        now = self._clock()
        delay = self._backoff(row.attempts)
        if exc.refused:
            delay = self._max_retry
        if exc.retry_after is not None:
            delay = max(exc.retry_after, MIN_WAIT)
            self._paused[sink.name] = now + timedelta(seconds=delay)
        with self._store.batch():
            if exc.ref is not None and previous is None:
                self._store.set_delivery_ref(sink.name, row.alert.id, exc.ref, now)
            self._store.retry_delivery(row.id, exc.reason, now + timedelta(seconds=delay))
        where = f"alert {row.alert.id} to {shown(sink.name)} (attempt {row.attempts})"
        if exc.refused:
            log.error(
                "%s refused: %s; fix the channel or its settings, retrying every %g s / "
                "受信側が拒否しました。設定を確認してください（%g 秒ごとに再試行）",
                where,
                exc.reason,
                delay,
                delay,
            )
        else:
            log.warning(
                "%s failed: %s; next try in %.1f s / 配信に失敗、%.1f 秒後に再試行します",
                where,
                exc.reason,
                delay,
                delay,
            )

    def _backoff(self, attempts: int) -> float:
        return float(min(self._max_retry, self._first_retry * 2 ** min(max(attempts - 1, 0), 32)))


def shown(sink: str) -> str:
    """A sink's name for logs: a webhook's URL may carry a token in its path or query, so only
    its scheme and host are shown."""
    kind, _, rest = sink.partition(":")
    if kind != "webhook":
        return sink
    parts = urlsplit(rest)
    return f"webhook:{parts.scheme}://{parts.hostname or '?'}/…"
