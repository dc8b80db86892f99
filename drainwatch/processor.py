"""Applies the watchers' events: store the facts, evaluate the rules, deliver new alerts.

Idempotent: a replayed event stores nothing new and delivers nothing twice. An alert is delivered
before it is saved, so a crash in between repeats a delivery rather than losing one
(at-least-once; the outbox of issue #5 makes delivery exactly-once). An alert follows its
transaction: re-mined in another block after a reorg, it carries the new block, so that a later
disconnect of that block retracts it again. A replay from an older offset re-runs the same
sequence of states and may repeat intermediate updates, never lose the final one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from alerts.render import render
from alerts.rules import RulePolicy, WalletBook, evaluate
from drainwatch import codec
from drainwatch.errors import BusError, CodecError
from drainwatch.events import BlockDisconnected, ControlChangeSeen, Event, TransferSeen
from drainwatch.model import Alert, AlertState, Asset, Chain, ChainKind
from drainwatch.ports import AlertSink, Message, Store


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

    def handle_message(self, message: Message) -> None:
        try:
            event = codec.loads_event(message.value)
        except CodecError as exc:
            # Never skipped: it may be an event of a newer drainwatch (a rolling upgrade) that
            # carries a leak. Stop here, uncommitted, until a version that reads it runs.
            raise BusError(
                f"cannot read message {message.topic}[{message.partition}]@{message.offset}: "
                f"{exc}. It was not consumed: if a newer drainwatch wrote it, upgrade this "
                "process too"
            ) from exc
        self.handle(event)

    def handle(self, event: Event) -> None:
        if isinstance(event, TransferSeen | ControlChangeSeen):
            if isinstance(event, TransferSeen):
                self._store.upsert_transfers([event.transfer])
            else:
                self._store.upsert_control_changes([event.change])
            for alert in evaluate(event, self._book, self._policy, self._clock()):
                self._raise(alert)
        elif isinstance(event, BlockDisconnected):
            self._store.orphan_transfers(event.chain, event.block)
            for alert in self._store.alerts_in_block(event.chain, event.block):
                if alert.state is not AlertState.RETRACTED:
                    self._raise(replace(alert, state=AlertState.RETRACTED))

    def _raise(self, alert: Alert) -> None:
        known = self._store.get_alert(alert.id)
        if known is not None and (known.state, known.block) == (alert.state, alert.block):
            return
        if known is not None and alert.block is None and known.state in _MINED:
            return  # a mempool verdict (pending or withdrawn) on what a block already carries
        if known is not None:  # the same alert, moved on: keep its identity and first time
            alert = replace(known, state=alert.state, block=alert.block)
        chain = self._chains.get(alert.chain) or _unknown_chain(alert.chain)
        text = render(alert, chain, self._assets.get(alert.chain, {}), self._book)
        for sink in self._sinks:
            sink.deliver(alert, text.en, text.ja)
        if known is None:
            self._store.save_alert(alert)
        else:
            self._store.update_alert(alert)


_MINED = (AlertState.PROVISIONAL, AlertState.CONFIRMED)


def _unknown_chain(name: str) -> Chain:
    """A chain no longer in the config still gets its alert (amounts shown in base units)."""
    return Chain(name, ChainKind.EVM, "unknown", "base units", 0)
