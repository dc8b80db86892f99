"""Applies the watchers' events: store the facts, evaluate the rules, write alerts to the outbox.

Idempotent: a replayed event stores nothing new and announces nothing twice. Every new alert and
every change of one (provisional → confirmed, retracted, re-mined in another block) is saved
together with one outbox row per sink, in the same store transaction: nothing is sent from here.
The notifier sends the outbox's rows afterwards (``on_commit`` wakes it), so a crash can neither
lose an alert nor send one that was not saved. An alert follows its transaction: re-mined in
another block after a reorg, it carries the new block, so that a later disconnect of that block
retracts it again. A replay from an older offset re-runs the same sequence of states and may
announce intermediate states again, never lose the final one.

A batch of messages (``handle_messages``, what a poll of the bus hands over) is applied in one
store transaction: one commit for a block's events instead of one per event. When anything in
the batch fails, none of its writes is kept (outbox rows included), and the bus, which commits
the batch's offsets only after it was applied, hands the whole batch over again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from alerts.expectations import Plan
from alerts.rules import (
    COLD_OUTFLOW,
    LIMIT_SINGLE,
    LIMIT_WINDOW,
    UNPLANNED_OUTFLOW,
    RulePolicy,
    WalletBook,
    alert_id,
    evaluate,
)
from alerts.state import RuleStateReader, Verdict
from drainwatch import codec
from drainwatch.errors import BusError, CodecError
from drainwatch.events import (
    BalanceSeen,
    BlockConfirmed,
    BlockDisconnected,
    ControlChangeSeen,
    Event,
    TransferSeen,
    UtxoSpendSeen,
)
from drainwatch.model import Alert, AlertState, Asset, Chain, Transfer, TransferStatus
from drainwatch.ports import Message, Store
from graph.labels import LabelBook


class Processor:
    def __init__(
        self,
        store: Store,
        book: WalletBook,
        chains: Mapping[str, Chain],
        assets: Mapping[str, Mapping[str, Asset]],
        policy: RulePolicy,
        sinks: Sequence[str],
        clock: Callable[[], datetime],
        *,
        on_commit: Callable[[], object] | None = None,
        labels: LabelBook | None = None,
    ) -> None:
        """``sinks`` are the outbox's sink names (``wiring.sink_names``); ``on_commit`` is
        called after a batch that wrote outbox rows has committed (it wakes the notifier);
        ``labels`` name the destinations the labelled-destination rule looks for."""
        self._store = store
        self._book = book
        self._chains = chains
        self._assets = assets
        self._policy = policy
        self._sinks = list(sinks)
        self._clock = clock
        self._on_commit = on_commit
        self._announced = False
        self._state = RuleStateReader(store, book, labels, policy, chains)

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
        self._announced = False
        with self._store.batch():
            # Balances first: the rules of a block's transfers read the balances after it.
            self._store.upsert_balances(e.balance for e in events if isinstance(e, BalanceSeen))
            for run in _runs(events):
                self._state.preload(run, self._clock())  # windows as before this run's facts
                self._store.upsert_transfers(e.transfer for e in run if isinstance(e, TransferSeen))
                self._store.upsert_control_changes(
                    e.change for e in run if isinstance(e, ControlChangeSeen)
                )
                for event in run:
                    self._apply(event)
        if self._announced and self._on_commit is not None:
            self._on_commit()

    def _apply(self, event: Event) -> None:
        """The rules on a sighting (its fact is stored already), or a disconnect's retraction."""
        now = self._clock()
        if isinstance(event, TransferSeen | ControlChangeSeen):
            verdict = evaluate(event, self._state.for_event(event, now), self._policy, now)
            if isinstance(event, TransferSeen) and verdict.plan not in (None, Plan.UNPLANNED):
                verdict = self._planned(event.transfer, verdict, now)
            for alert in verdict.alerts:
                self._raise(alert)
            self._state.observe(event, verdict, now)
        elif isinstance(event, BlockConfirmed):
            self._store.confirm_block(event.chain, event.block)
            for alert in self._store.alerts_in_block(event.chain, event.block):
                if alert.state is AlertState.PROVISIONAL:
                    self._raise(replace(alert, state=AlertState.CONFIRMED))
        elif isinstance(event, BlockDisconnected):
            self._store.orphan_transfers(event.chain, event.block)
            for alert in self._store.alerts_in_block(event.chain, event.block):
                if alert.state is not AlertState.RETRACTED:
                    self._raise(replace(alert, state=AlertState.RETRACTED))
            self._state.observe(event, Verdict([]), now)

    def _planned(self, t: Transfer, verdict: Verdict, now: datetime) -> Verdict:
        """An outflow the rules find planned. Alerted already at an earlier sighting, the alert
        stands if it was about a block (an expectation that arrives after the outflow was mined
        must not silence it, nor be used up by it); one raised while the outflow waited in the
        mempool, before its expectation arrived, is retracted, saying why, so that none stays
        open for an outflow the exchange announced in time."""
        earlier = [
            known
            for rule in _OUTFLOW_RULES
            if (known := self._store.get_alert(alert_id(rule, t.key))) is not None
            and known.state is not AlertState.RETRACTED
            and known.id not in {a.id for a in verdict.alerts}
        ]
        if any(known.block is not None for known in earlier):
            return replace(verdict, consumed=None, plan=Plan.UNPLANNED)
        # A mempool reading's verdict once mined (superseded) leaves the expectation to the
        # block's transfer that took it over.
        reading_closed = t.status is TransferStatus.SUPERSEDED
        if (
            verdict.consumed is not None
            and not reading_closed
            and not self._store.consume_expectation(verdict.consumed, t.key, now)
        ):
            return replace(verdict, consumed=None, plan=Plan.UNPLANNED)  # another outflow won it
        for known in earlier:
            facts = (
                *known.facts,
                ("retracted", "planned"),
                ("planned_by", verdict.consumed or str(verdict.plan)),
            )
            self._raise(replace(known, state=AlertState.RETRACTED, facts=facts), news=_PLANNED)
        return verdict

    def _raise(self, alert: Alert, news: str | None = None) -> None:
        known = self._store.get_alert(alert.id)
        if known is not None and (known.state, known.block) == (alert.state, alert.block):
            return
        if known is not None and alert.block is None and known.state in _MINED:
            return  # a mempool verdict (pending or withdrawn) on what a block already carries
        if (
            known is not None
            and known.state is AlertState.CONFIRMED
            and alert.state is AlertState.PROVISIONAL
            and known.block == alert.block
        ):
            return  # a replayed sighting of a block that has its confirmations since
        if known is not None:  # the same alert, moved on: keep its identity and first time
            alert = replace(known, state=alert.state, block=alert.block, facts=alert.facts)
        if known is None:
            self._store.save_alert(alert)
        else:
            self._store.update_alert(alert)
        previous = None if known is None else known.state
        self._store.enqueue_delivery(alert, self._sinks, previous, news, self._clock())
        self._announced = True


_MINED = (AlertState.PROVISIONAL, AlertState.CONFIRMED, AlertState.SUPERSEDED, AlertState.EXECUTED)
#: The rules about one outflow whose alert an outflow found planned later withdraws.
_OUTFLOW_RULES = (UNPLANNED_OUTFLOW, COLD_OUTFLOW, LIMIT_SINGLE, LIMIT_WINDOW)
_PLANNED = (
    "retracted: the outflow matches what the exchange announced (planned) / "
    "取消：事前登録された予定送金と一致（計画済み）"
)


def _runs(events: Sequence[Event]) -> Iterator[list[Event]]:
    """``events`` cut into runs whose facts one upsert call stores as one call per event would:
    consecutive sightings with no key twice (one call keeps only the last sighting of a key,
    while a second call may refuse it, e.g. a pending one after a confirmed one), and every
    other event (a disconnect, which must see the facts before it) alone."""
    run: list[Event] = []
    keys: set[tuple[str, tuple[str, ...]]] = set()
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


def _fact_key(event: Event) -> tuple[str, tuple[str, ...]] | None:
    if isinstance(event, TransferSeen):
        return ("transfer", event.transfer.key)
    if isinstance(event, ControlChangeSeen):
        return ("change", event.change.key)
    if isinstance(event, BalanceSeen):
        return ("balance", event.balance.key)
    if isinstance(event, UtxoSpendSeen):
        return ("spend", event.spend.key)  # carried on the bus for its consumers; not stored
    return None
