"""Applies the watchers' events: store the facts, evaluate the rules, deliver new alerts.

Idempotent: a replayed event stores nothing new and delivers nothing twice. An alert is delivered
before it is saved, so a crash in between repeats a delivery rather than losing one
(at-least-once; the outbox of issue #5 makes delivery exactly-once). An alert follows its
transaction: re-mined in another block after a reorg, it carries the new block, so that a later
disconnect of that block retracts it again. A replay from an older offset re-runs the same
sequence of states and may repeat intermediate updates, never lose the final one.

A batch of messages (``handle_messages``, what a poll of the bus hands over) is applied in one
store transaction: one commit for a block's events instead of one per event. Its alerts are
delivered as the batch goes, each before the commit that saves it; when anything in the batch
fails, none of its writes is kept, and the bus, which commits the batch's offsets only after it
was applied, hands the whole batch over again (its delivered alerts are then delivered again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from alerts.render import render
from alerts.rules import RulePolicy, WalletBook, evaluate
from drainwatch import codec
from drainwatch.errors import BusError, CodecError
from drainwatch.events import (
    BlockDisconnected,
    ControlChangeSeen,
    Event,
    TransferSeen,
    UtxoSpendSeen,
)
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
        self.handle_messages([message])

    def handle_messages(self, messages: Sequence[Message]) -> None:
        """Apply ``messages`` in order, their store writes in one transaction.

        An unreadable message is never skipped: it may be an event of a newer drainwatch (a
        rolling upgrade) that carries a leak. The messages before it are applied (their alerts
        must not wait for an upgrade), then ``BusError`` leaves the batch uncommitted on the
        bus, so it stops there until a version that reads it runs; the replays of the messages
        before it change nothing.
        """
        events: list[Event] = []
        unreadable: tuple[Message, CodecError] | None = None
        for message in messages:
            try:
                events.append(codec.loads_event(message.value))
            except CodecError as exc:
                unreadable = (message, exc)
                break
        self.handle_events(events)
        if unreadable is not None:
            bad, error = unreadable
            raise BusError(
                f"cannot read message {bad.topic}[{bad.partition}]@{bad.offset}: {error}. It "
                "was not consumed: if a newer drainwatch wrote it, upgrade this process too"
            ) from error

    def handle(self, event: Event) -> None:
        self.handle_events([event])

    def handle_events(self, events: Sequence[Event]) -> None:
        """Apply ``events`` in order, their store writes in one transaction: all or none.

        The facts of a run of sightings are upserted in one call before their rules run (the
        rules read no fact, only the alerts): one statement for a block's transfers."""
        if not events:
            return
        with self._store.batch():
            for run in _runs(events):
                self._store.upsert_transfers(e.transfer for e in run if isinstance(e, TransferSeen))
                self._store.upsert_control_changes(
                    e.change for e in run if isinstance(e, ControlChangeSeen)
                )
                for event in run:
                    self._apply(event)

    def _apply(self, event: Event) -> None:
        """The rules on a sighting (its fact is stored already), or a disconnect's retraction."""
        if isinstance(event, TransferSeen | ControlChangeSeen):
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


_MINED = (AlertState.PROVISIONAL, AlertState.CONFIRMED, AlertState.SUPERSEDED, AlertState.EXECUTED)


def _runs(events: Sequence[Event]) -> Iterator[list[Event]]:
    """``events`` cut into runs whose facts one upsert call stores as one call per event would:
    consecutive sightings with no key twice (one call keeps only the last sighting of a key,
    while a second call may refuse it, e.g. a pending one after a confirmed one), and every
    other event (a disconnect, which must see the facts before it) alone."""
    run: list[Event] = []
    keys: set[tuple[str, tuple[str, str, str]]] = set()
    for event in events:
        key = _fact_key(event)
        if key is None or key in keys:
            if run:
                yield run
            run, keys = [], set()
        if key is None:
            yield [event]
        else:
            run.append(event)
            keys.add(key)
    if run:
        yield run


def _fact_key(event: Event) -> tuple[str, tuple[str, str, str]] | None:
    if isinstance(event, TransferSeen):
        return ("transfer", event.transfer.key)
    if isinstance(event, ControlChangeSeen):
        return ("change", event.change.key)
    if isinstance(event, UtxoSpendSeen):
        return ("spend", event.spend.key)  # carried on the bus for its consumers; not stored
    return None


def _unknown_chain(name: str) -> Chain:
    """A chain no longer in the config still gets its alert (amounts shown in base units)."""
    return Chain(name, ChainKind.EVM, "unknown", "base units", 0)
