"""Applies the watchers' events: store the facts, evaluate the rules, deliver new alerts.

Idempotent: a replayed event stores nothing new and delivers nothing twice. An alert is delivered
before it is saved, so a crash in between repeats a delivery rather than losing one
(at-least-once; the outbox of issue #5 makes delivery exactly-once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from alerts.render import render
from alerts.rules import RulePolicy, WalletBook, evaluate
from drainwatch import codec
from drainwatch.errors import CodecError
from drainwatch.events import BlockDisconnected, Event, TransferSeen
from drainwatch.model import Alert, AlertState, Asset, Chain
from drainwatch.ports import AlertSink, Message, Store

log = logging.getLogger(__name__)


class Processor:
    def __init__(
        self,
        store: Store,
        book: WalletBook,
        chains: Mapping[str, Chain],
        assets: Mapping[str, Mapping[str, Asset]],
        policy: RulePolicy,
        sinks: Sequence[AlertSink],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._book = book
        self._chains = chains
        self._assets = assets
        self._policy = policy
        self._sinks = sinks
        self._clock = clock
        self.alerts_delivered = 0

    def handle_message(self, message: Message) -> None:
        try:
            event = codec.loads_event(message.value)
        except CodecError as exc:
            # A message no version of drainwatch wrote: keep the consumer moving, loudly.
            log.error(
                "skipping malformed message %s[%d]@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                exc,
            )
            return
        self.handle(event)

    def handle(self, event: Event) -> None:
        if isinstance(event, TransferSeen):
            self._store.upsert_transfers([event.transfer])
            for alert in evaluate(event, self._book, self._policy, self._clock()):
                self._raise(alert)
        elif isinstance(event, BlockDisconnected):
            self._store.orphan_block(event.chain, event.block)
            for alert in self._store.alerts():
                if alert.block == event.block and alert.state is not AlertState.RETRACTED:
                    self._raise(_with_state(alert, AlertState.RETRACTED))

    def _raise(self, alert: Alert) -> None:
        known = self._store.get_alert(alert.id)
        if known is not None and known.state is alert.state:
            return
        if known is not None:
            alert = _with_state(known, alert.state)
        text = render(
            alert, self._chains[alert.chain], self._assets.get(alert.chain, {}), self._book
        )
        for sink in self._sinks:
            sink.deliver(alert, text.en, text.ja)
        self.alerts_delivered += 1
        if known is None:
            self._store.save_alert(alert)
        else:
            self._store.set_alert_state(alert.id, alert.state)


def _with_state(alert: Alert, state: AlertState) -> Alert:
    from dataclasses import replace

    return replace(alert, state=state)
