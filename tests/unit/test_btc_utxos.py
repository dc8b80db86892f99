"""The UTXO scanner on a real mainnet block: which coins it creates and spends, and the events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from bitcoin.core import CBlock, b2lx

from drainwatch.addresses import MAINNET
from drainwatch.events import TransferSeen, UtxoSpendSeen
from drainwatch.model import (
    BlockRef,
    Custody,
    CustodyKind,
    TransferKind,
    TransferStatus,
    Utxo,
    Wallet,
    WalletRole,
)
from watchers.bitcoin.block import parse_block
from watchers.bitcoin.derive import ScriptBook
from watchers.bitcoin.script import script_address
from watchers.bitcoin.utxos import UtxoScanner

BLOCK = "block481815.raw"
HASH = "000000000000000000893c019d81f2d48ee33892c12428f3121bbd16ed6db926"
REF = BlockRef(481815, HASH)
TIME = datetime(2017, 8, 24, tzinfo=UTC)
BOAT = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"  # a well-known mainnet address, absent from the block


@pytest.fixture(scope="module")
def raw(shared_data: Path) -> bytes:
    return (shared_data / "bitcoin" / "mainnet-blocks" / BLOCK).read_bytes()


def _wallet(name: str, role: WalletRole, *addresses: str) -> Wallet:
    return Wallet(name, "btc", role, Custody(CustodyKind.SINGLE_KEY), addresses=addresses)


def _pick(raw: bytes) -> tuple[int, int]:
    """Independently (python-bitcoinlib): a transaction with 2+ inputs and 2+ outputs whose
    outputs all have addresses, and the index of one of its outputs."""
    block = CBlock.deserialize(raw)
    for i, tx in enumerate(block.vtx[1:], start=1):
        if len(tx.vin) >= 2 and len(tx.vout) >= 2:
            scripts = [bytes(o.scriptPubKey) for o in tx.vout]
            if all(script_address(s, MAINNET) for s in scripts) and all(o.nValue for o in tx.vout):
                return i, 0
    raise AssertionError("no such transaction in the block")


def test_a_spend_of_a_watched_coin_lists_every_input_and_output(raw: bytes) -> None:
    reference = CBlock.deserialize(raw)
    i, _ = _pick(raw)
    ref_tx = reference.vtx[i]
    spent_txid = b2lx(ref_tx.vin[0].prevout.hash)
    spent_vout = ref_tx.vin[0].prevout.n
    change = script_address(bytes(ref_tx.vout[1].scriptPubKey), MAINNET)
    assert change is not None
    cold = _wallet("cold", WalletRole.COLD, BOAT)
    hot = _wallet("hot", WalletRole.HOT, change)
    book = ScriptBook([cold, hot], MAINNET)
    coin = Utxo("btc", spent_txid, spent_vout, "cold", BOAT, 7, REF)
    scanner = UtxoScanner("btc", book, MAINNET, [coin])

    scan = scanner.scan_block(parse_block(raw), REF, TIME)

    txid = b2lx(ref_tx.GetTxid())
    assert scan.spent == [(spent_txid, spent_vout, txid)]
    assert scanner.coins.keys().isdisjoint(scan.spends)
    [spend] = [e.spend for e in scan.events if isinstance(e, UtxoSpendSeen)]
    assert spend.txid == txid and spend.status is TransferStatus.CONFIRMED and spend.block == REF
    assert [(x.txid, x.vout) for x in spend.inputs] == [
        (b2lx(v.prevout.hash), v.prevout.n) for v in ref_tx.vin
    ]
    assert spend.inputs[0].wallet == "cold" and spend.inputs[0].amount == 7
    assert all(x.wallet is None and x.amount is None for x in spend.inputs[1:])
    assert spend.fee is None  # not every input is the exchange's: unknown
    assert [o.amount for o in spend.outputs] == [o.nValue for o in ref_tx.vout]
    assert [o.wallet for o in spend.outputs][1] == "hot"  # change back to an own wallet
    assert spend.outputs[0].wallet is None  # left the exchange
    transfers = [e.transfer for e in scan.events if isinstance(e, TransferSeen)]
    own = [t for t in transfers if t.tx_hash == txid]
    assert [t.index for t in own] == [f"out:{n}" for n in range(len(ref_tx.vout))]
    assert {t.from_address for t in own} == {BOAT}
    assert all(t.kind is TransferKind.UTXO and t.asset == "native" for t in own)
    # The change output is a new watched coin of the hot wallet.
    assert [(u.txid, u.vout, u.wallet, u.amount) for u in scan.created if u.txid == txid] == [
        (txid, 1, "hot", ref_tx.vout[1].nValue)
    ]


def test_inflows_to_a_watched_address_equal_an_independent_sum(raw: bytes) -> None:
    reference = CBlock.deserialize(raw)
    script = bytes(reference.vtx[0].vout[0].scriptPubKey)  # the coinbase's payee
    address = script_address(script, MAINNET)
    assert address is not None
    expected = sum(
        o.nValue for tx in reference.vtx for o in tx.vout if bytes(o.scriptPubKey) == script
    )
    book = ScriptBook([_wallet("pool", WalletRole.HOT, address)], MAINNET)
    scanner = UtxoScanner("btc", book, MAINNET)
    scan = scanner.scan_block(parse_block(raw), REF, TIME)
    transfers = [e.transfer for e in scan.events if isinstance(e, TransferSeen)]
    assert sum(t.amount for t in transfers) == expected == sum(u.amount for u in scan.created)
    assert all(t.from_address == "" and t.to_address == address for t in transfers)
    assert not any(isinstance(e, UtxoSpendSeen) for e in scan.events)
    assert len(scanner.coins) == len(scan.created)


def test_a_pending_spend_changes_no_coin_and_withdraws_to_orphaned(raw: bytes) -> None:
    block = parse_block(raw)
    tx = block.txs[5]
    first = tx.inputs[0]
    book = ScriptBook([_wallet("cold", WalletRole.COLD, BOAT)], MAINNET)
    coin = Utxo(
        "btc",
        first.prev_txid,
        first.prev_vout,
        "cold",
        BOAT,
        5,
        REF,
    )
    scanner = UtxoScanner("btc", book, MAINNET, [coin])
    events = scanner.scan_pending(tx)
    assert events is not None
    assert all(
        (e.transfer.status if isinstance(e, TransferSeen) else e.spend.status)  # type: ignore[union-attr]
        is TransferStatus.PENDING
        for e in events
    )
    assert len(scanner.coins) == 1  # a mempool sighting changes no coin
    assert scanner.scan_pending(block.txs[6]) is None
    withdrawn = scanner.withdrawn(events)
    assert len(withdrawn) == len(events)
    assert all(
        (e.transfer.status if isinstance(e, TransferSeen) else e.spend.status)  # type: ignore[union-attr]
        is TransferStatus.ORPHANED
        for e in withdrawn
    )


def test_one_transaction_paying_past_the_gap_window_is_followed_to_its_end(raw: bytes) -> None:
    """A payment to index 4 opens the window to index 9 of the same wallet: a second output of
    the same transaction paying index 9 is a coin too (the window moves inside a transaction)."""
    from watchers.bitcoin.derive import ScriptBook as Book
    from watchers.bitcoin.script import address_script

    xpub = (
        "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDK"
        "f31mGDtKsAYz2oz2AGutZYs"
    )  # the BIP84 test vector's account
    wallet = Wallet("hot", "btc", WalletRole.HOT, Custody(CustodyKind.SINGLE_KEY), xpubs=(xpub,))
    book = Book([wallet], MAINNET, gap_limit=5)
    by_index = {(w.branch, w.index): s for s, w in book.scripts.items()}
    four = by_index[(0, 4)]
    nine = Book([wallet], MAINNET, gap_limit=10).scripts  # index 9 from a wider window
    nine_script = next(s for s, w in nine.items() if (w.branch, w.index) == (0, 9))
    assert book.get(nine_script) is None  # not watched yet
    block = parse_block(raw)
    tx = next(t for t in block.txs[1:] if len(t.outputs) >= 2)
    tx.outputs[0].script = four
    tx.outputs[1].script = nine_script
    scanner = UtxoScanner("btc", book, MAINNET)
    scan = scanner.scan_block(block, REF, TIME)
    paid = {(u.vout, u.address) for u in scan.created}
    assert {vout for vout, _ in paid} == {0, 1}
    assert address_script(next(a for v, a in paid if v == 1), MAINNET) == nine_script
