"""What Bitcoin blocks and mempool transactions do to the exchange's wallets: pure, no I/O.

``UtxoScanner`` holds the watched coins (outputs paying a watched script, not yet spent) of one
chain as of the last block it scanned. For each transaction of a block it looks up every input's
outpoint and every output's script (two dictionary lookups: a block of 5,000 transactions costs
milliseconds); a transaction that spends a watched coin is an outflow: a ``UtxoSpend`` listing
all its inputs and outputs, the exchange's own outputs (change, sweeps) marked, plus one
``Transfer`` per output that carries value. An output paying a watched script that is not part of
such a spend is an inflow ``Transfer``. An output that pays a derived address moves that
address's gap window ahead (``ScriptBook.mark_used``) before the next transaction is looked at.

Bitcoin inputs carry no address, only the outpoint they spend: an outflow's ``from_address`` is
the address of its first watched input; an inflow's is empty (the sender is not known without
the previous transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from drainwatch.addresses import BitcoinAddressParams
from drainwatch.events import Event, TransferSeen, UtxoSpendSeen
from drainwatch.model import (
    NATIVE_ASSET_ID,
    BlockRef,
    SpendOutput,
    SpentInput,
    Transfer,
    TransferKind,
    TransferStatus,
    Utxo,
    UtxoSpend,
)
from watchers.bitcoin.block import Block, Tx, TxOut, outpoint_key
from watchers.bitcoin.derive import ScriptBook, WatchedScript
from watchers.bitcoin.script import address_script, classify, script_address


@dataclass(frozen=True, slots=True)
class WatchedCoin:
    wallet: str
    address: str
    amount: int


@dataclass
class BlockScan:
    """A block's effect: its events, the watched coins it created and those it spent."""

    events: list[Event] = field(default_factory=list)
    created: list[Utxo] = field(default_factory=list)
    spent: list[tuple[str, int, str]] = field(default_factory=list)
    #: outpoint key → the txid that spent it (for the mempool's verdicts on its pending spends)
    spends: dict[bytes, str] = field(default_factory=dict)


class UtxoScanner:
    def __init__(
        self,
        chain: str,
        book: ScriptBook,
        params: BitcoinAddressParams,
        coins: Iterable[Utxo] = (),
    ) -> None:
        self.chain = chain
        self.book = book
        self.params = params
        self.coins: dict[bytes, WatchedCoin] = {}
        self.load(coins)

    def load(self, coins: Iterable[Utxo]) -> None:
        """Replace the watched coins with the unspent ones of ``coins`` (the store's coins at a
        checkpoint). Every address that ever received one counts as used, spent or not: the
        gap window moves past it again after a restart, as it did when the coin arrived."""
        coins = list(coins)
        self.coins = {
            outpoint_key(c.txid, c.vout): WatchedCoin(c.wallet, c.address, c.amount)
            for c in coins
            if c.spent_by is None
        }
        self.mark_used(coin.address for coin in coins)

    def mark_used(self, addresses: Iterable[str]) -> None:
        """Each address as used, in any order: one beyond the window (index 9 of a window
        ending at 4) is taken again once another (index 4) has moved the window to it."""
        scripts = {address_script(a, self.params) for a in set(addresses)}
        while scripts:
            known = {s for s in scripts if self.book.get(s) is not None}
            if not known:
                return
            for script in known:
                self.book.mark_used(script)
            scripts -= known

    def scan_block(self, block: Block, ref: BlockRef, time: datetime) -> BlockScan:
        """Apply ``block`` to the watched coins and say what it did."""
        scan = BlockScan()
        coins = self.coins
        get_script = self.book.get
        for tx in block.txs:
            spent = None
            if not tx.is_coinbase:
                for inp in tx.inputs:
                    if inp.outpoint in coins:
                        spent = self._spent(tx, coins)
                        break
            paid: list[tuple[int, TxOut, WatchedScript]] = []
            for out in tx.outputs:  # inline: this loop runs for every output of every block
                if get_script(out.script) is not None:
                    paid = self._paid(tx, get_script)
                    break
            if spent is None and not paid:
                continue
            txid = tx.txid
            if spent is not None:
                for key, _coin in spent:
                    del coins[key]
                    scan.spends[key] = txid
                    scan.spent.append((_display(key), int.from_bytes(key[32:], "little"), txid))
            for n, out, watched in paid:
                coins[outpoint_key(txid, n)] = WatchedCoin(
                    watched.wallet, watched.address, out.value
                )
                scan.created.append(
                    Utxo(self.chain, txid, n, watched.wallet, watched.address, out.value, ref)
                )
            scan.events.extend(self._events(tx, spent, TransferStatus.CONFIRMED, ref, time))
        return scan

    def scan_pending(self, tx: Tx) -> list[Event] | None:
        """The events of a mempool transaction that spends a watched coin (None when it spends
        none); the coins themselves change only when a block carries it."""
        if tx.is_coinbase or not any(inp.outpoint in self.coins for inp in tx.inputs):
            return None
        return self._events(tx, self._spent(tx, self.coins), TransferStatus.PENDING, None, None)

    def withdrawn(self, events: Iterable[Event]) -> list[Event]:
        """The pending ``events`` of a transaction that left the mempool unmined, orphaned."""
        out: list[Event] = []
        for event in events:
            if isinstance(event, TransferSeen):
                out.append(TransferSeen(_with_status(event.transfer, TransferStatus.ORPHANED)))
            elif isinstance(event, UtxoSpendSeen):
                s = event.spend
                out.append(UtxoSpendSeen(_replace_spend(s, TransferStatus.ORPHANED)))
        return out

    def _paid(
        self, tx: Tx, get_script: Callable[[bytes], WatchedScript | None]
    ) -> list[tuple[int, TxOut, WatchedScript]]:
        """The outputs paying a watched script, with the gap window moved past each one used:
        a transaction paying indexes 4 and 9 of a wallet whose window ends at 4 pays both
        (the first use opens the window to the second), so the outputs are looked at again
        until the window stops moving."""
        paid: list[tuple[int, TxOut, WatchedScript]] = []
        while True:
            paid = [
                (n, out, watched)
                for n, out in enumerate(tx.outputs)
                if (watched := get_script(out.script)) is not None
            ]
            if not sum(self.book.mark_used(out.script) for _, out, _ in paid):
                return paid

    @staticmethod
    def _spent(tx: Tx, coins: dict[bytes, WatchedCoin]) -> list[tuple[bytes, WatchedCoin]]:
        return [(i.outpoint, coins[i.outpoint]) for i in tx.inputs if i.outpoint in coins]

    def _events(
        self,
        tx: Tx,
        spent: list[tuple[bytes, WatchedCoin]] | None,
        status: TransferStatus,
        ref: BlockRef | None,
        time: datetime | None,
    ) -> list[Event]:
        txid = tx.txid
        # An inflow's outputs that pay others are nobody's business here: not even encoded.
        outputs = list(self._outputs(tx, only_watched=not spent))
        events: list[Event] = []
        if spent:
            mine = dict(spent)
            inputs = tuple(
                SpentInput(i.prev_txid, i.prev_vout, c.address, c.amount, c.wallet)
                if (c := mine.get(i.outpoint)) is not None
                else SpentInput(i.prev_txid, i.prev_vout)
                for i in tx.inputs
            )
            source = spent[0][1].address
            spend = UtxoSpend(self.chain, txid, status, inputs, tuple(outputs), ref, time)
            events.append(UtxoSpendSeen(spend))
            paid = [o for o in outputs if o.amount > 0]
        else:
            source = ""
            paid = [o for o in outputs if o.amount > 0]
        for out in paid:
            to = out.address if out.address is not None else f"script:{out.script}"
            events.append(
                TransferSeen(
                    Transfer(
                        self.chain,
                        txid,
                        f"out:{out.index}",
                        source,
                        to,
                        NATIVE_ASSET_ID,
                        out.amount,
                        TransferKind.UTXO,
                        status,
                        ref,
                        time,
                    )
                )
            )
        return events

    def _outputs(self, tx: Tx, *, only_watched: bool) -> Iterator[SpendOutput]:
        for n, out in enumerate(tx.outputs):
            watched = self.book.get(out.script)
            if watched is not None:
                kind = classify(out.script)
                yield SpendOutput(n, out.value, kind, watched.address, watched.wallet)
                continue
            if only_watched:
                continue
            kind = classify(out.script)
            address = script_address(out.script, self.params)
            script = None if address is not None else out.script.hex()
            yield SpendOutput(n, out.value, kind, address, None, script)


def _display(key: bytes) -> str:
    return key[:32][::-1].hex()


def _with_status(t: Transfer, status: TransferStatus) -> Transfer:
    return Transfer(
        t.chain, t.tx_hash, t.index, t.from_address, t.to_address, t.asset, t.amount, t.kind, status
    )


def _replace_spend(s: UtxoSpend, status: TransferStatus) -> UtxoSpend:
    return UtxoSpend(s.chain, s.txid, status, s.inputs, s.outputs)
