"""Recorded Ethereum mainnet blocks replayed end to end: the recorded node answers, and the real
follower (or, where no block header is recorded, the real extractor) makes the events. Every
expected value below was read by hand from the recordings in
``../shared/data/ethereum/rpc-recordings`` (blockchain-etl, MIT) and is cited with its file.

- 483920: the full block and all four receipts are recorded, no traces: followed as on a node
  without tracing (said once), native value from block and receipts, ERC-20 transfers from the
  receipts' logs.
- 508110 and 2112234: the header (``false``) and ``trace_block`` are recorded, not the logs:
  the extractor fetches the header as on an erigon-like node and takes every transfer of value
  from the traces alone (no full block, no receipt).
- 1000000, 1000690, 1000895, 1011973: only the traces are recorded (no header, so the follower
  cannot be pointed at them); the extractor reads them from a block reference taken from the
  traces' own ``blockHash``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.rules import RulePolicy, WalletBook
from drainwatch import codec
from drainwatch.bus.inprocess import InProcessBus
from drainwatch.events import BlockConnected, Event, TransferSeen
from drainwatch.model import BlockRef, Chain, ChainKind, Transfer, TransferKind
from drainwatch.ports import Message, Store
from drainwatch.store import open_store
from tests.fixtures.processing import make_processor
from tests.fixtures.recorded_rpc import RecordedNode
from watchers.evm.extract import BlockExtractor, TraceDialect
from watchers.evm.follower import EvmFollower
from watchers.evm.mapping import EvmBlock

ETH = 10**18
TOPIC = "events"
MAINNET = Chain("ethereum", ChainKind.EVM, "mainnet", "ETH", 18, confirmations=1)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'store.db'}")


def _follow(
    height: int, watched: list[str], traces: str | None, store: Store
) -> tuple[list[Event], list[str], RecordedNode]:
    """Follow the recorded chain at ``height`` exactly; the events it published, in order."""
    node = RecordedNode(head=height, traces=traces, eoas=watched)
    bus = InProcessBus()
    sub = bus.subscribe(TOPIC, "test")
    processor = make_processor(
        store, WalletBook([]), {}, {}, RulePolicy(cold_outflow=False), [], clock=_now
    )
    notices: list[str] = []
    follower = EvmFollower(
        MAINNET, node, store, bus, TOPIC, watched, start_height=height, notice=notices.append
    )
    assert follower.step() == 1
    events: list[Event] = []

    def take(message: Message) -> None:
        events.append(codec.loads_event(message.value))
        processor.handle_message(message)

    sub.poll(take, timeout=0.1)
    tip = store.get_checkpoint("ethereum")
    assert tip is not None and tip.height == height
    return events, notices, node


def _now() -> datetime:
    return datetime(2026, 11, 22, tzinfo=UTC)


Move = tuple[str, str, str, str, int, TransferKind]


def _move(t: Transfer) -> Move:
    return (t.tx_hash[:12], t.index, t.from_address, t.to_address, t.amount, t.kind)


def _moves(events: list[Event]) -> list[Move]:
    return [_move(e.transfer) for e in events if isinstance(e, TransferSeen)]


def test_block_483920_native_and_token_transfers_without_traces(store: Store) -> None:
    # test_export_blocks_job/block_with_logs (block), test_export_receipts_job (receipts).
    sender_a = "0x9df428a91ff0f3635c8f0ce752933b9788926804"
    sender_b = "0x2a65aca4d5fc5b5c859090a6c34d164135398226"
    token_holder = "0x1b63142628311395ceafeea5667e7c9026c862ca"
    events, notices, node = _follow(483920, [sender_a, sender_b, token_holder], None, store)
    token = "0xf4eced2f682ce333f96f2d8966c613ded8fc95dd"
    assert _moves(events) == [
        (
            "0x463d53f0ad",
            "tx",
            sender_a,
            "0x9e669f970ec0f49bb735f20799a7e7c4a1c274e2",
            11_000_440_000_000_000,  # 0x27149f7ca5c000 wei
            TransferKind.NATIVE,
        ),
        (
            "0x05287a561f",
            "tx",
            sender_b,
            "0x743b8aeedc163c0e3a0fe9f3910d146c48e70da8",
            1_530_219_620_000_000_000,  # 0x153c4d8d0bb8f000 wei
            TransferKind.NATIVE,
        ),
        (
            "0x04cbcb2360",
            "log:0",
            token_holder,
            "0xac4df82fe37ea2187bc8c011a23d743b4f39019a",
            100_000,  # data 0x...186a0
            TransferKind.TOKEN,
        ),
    ]
    [token_move] = [e.transfer for e in events if isinstance(e, TransferSeen)][2:]
    assert token_move.asset == token
    block = [e for e in events if isinstance(e, BlockConnected)]
    assert [b.block.hash for b in block] == [
        "0x246edb4b351d93c27926f4649bcf6c24366e2a7c7c718dc9158eea20c03bc6ae"
    ]
    # Said once each: no tracing and (nothing recorded of it) no mempool.
    assert len(notices) == 2 and "internal transfers" in notices[0] and "mempool" in notices[1]
    assert ("eth_getBlockByNumber", ("0x76250", True)) in node.calls
    stored = {(t.tx_hash[:12], t.index) for t in store.transfers(chain="ethereum")}
    assert stored == {("0x463d53f0ad", "tx"), ("0x05287a561f", "tx"), ("0x04cbcb2360", "log:0")}


def _from_header(height: int, watched: set[str]) -> tuple[list[Move], RecordedNode]:
    """Where the header and the traces are recorded but not the logs: the extractor's own fetch
    (the header form, as on a node offering trace_block) and its value transfers."""
    node = RecordedNode(head=height, traces="parity", eoas=sorted(watched))
    extractor = BlockExtractor("ethereum", node, frozenset(watched))
    block = extractor.fetch(height)  # the dialect not known yet: the header form, then a probe
    assert block is not None and not block.full
    found = extractor.value_transfers(block)
    assert found is not None and extractor.dialect is TraceDialect.PARITY
    return [_move(t) for t in found], node


def test_block_508110_from_header_and_traces_alone() -> None:
    # test_stream/blocks_508110_508110: eth_getBlockByNumber(false) and trace_block.
    sender = "0xfecab546498f74591d4f6d448a4a63552850f122"
    creator = "0x52de4b32e40ba930679efeb2214357cdf6fec979"
    moves, node = _from_header(508110, {sender, creator})
    assert moves == [
        (
            "0x435f5f7109",
            "tx",
            sender,
            "0x32be343b94f860124dc4fee278fdcbd38c102d88",
            4_949_989_500_000_000_000,  # 0x44b1eec6162f0000 wei
            TransferKind.NATIVE,
        )
    ]  # the creation by `creator` carries no value: nothing to report
    methods = [m for m, _ in node.calls]
    assert methods == ["eth_getBlockByNumber", "trace_block"]  # no full block, no receipt
    assert node.calls[0] == ("eth_getBlockByNumber", ("0x7c0ce", False))


def test_block_2112234_a_creation_without_value_is_no_transfer() -> None:
    # test_stream/blocks_2112234_2112234: one transaction, a contract creation of value 0.
    creator = "0x4b638dd891b0669242742bc0f4198a7c60bfbf00"
    moves, _ = _from_header(2112234, {creator})
    assert moves == []


def _traced(height: int, watched: set[str]) -> tuple[BlockExtractor, list[Move]]:
    """The extractor on a block of which only the traces are recorded."""
    node = RecordedNode(head=height, traces="parity")
    raw = node.call("trace_block", [hex(height)])
    tops = [t for t in raw if t["type"] != "reward" and t["traceAddress"] == []]
    block = EvmBlock(
        ref=BlockRef(height, raw[0]["blockHash"]),
        parent_hash="0x" + "00" * 32,  # not recorded; the extractor does not read it
        time=_now(),
        transactions=(),
        tx_hashes=tuple(t["transactionHash"] for t in tops),
        full=False,
    )
    extractor = BlockExtractor("ethereum", node, frozenset(watched))
    found = extractor.value_transfers(block)
    assert found is not None
    moves = [
        (t.tx_hash[:12], t.index, t.from_address, t.to_address, t.amount, t.kind) for t in found
    ]
    return extractor, moves


def test_block_1000000_the_100_eth_transfer_and_its_internal_callcode() -> None:
    # test_export_traces_job/block_with_subtraces: a 100 ETH call whose contract passes the
    # value on by CALLCODE (which runs in the caller's own account: the value stays there).
    contract = "0xc083e9947cf02b8ffc7d3090ae9aea72df98fd47"
    extractor, moves = _traced(1000000, {contract})
    assert extractor.dialect is TraceDialect.PARITY
    assert moves == [
        (
            "0xea1093d492",
            "tx",
            "0x39fa8c5f2793459d6622857e7d9fbb4bd91766d3",
            contract,
            100 * ETH,
            TransferKind.NATIVE,
        ),
        ("0xea1093d492", "trace:0", contract, contract, 100 * ETH, TransferKind.INTERNAL),
    ]


def test_block_1000690_a_creation_and_a_payment() -> None:
    # test_export_traces_job/block_with_create
    payer = "0xaf21e07e5a929d16026a7b4d88f3906a8d2e4942"
    creator = "0xacdee28d8ca76187883831a37f551a5904cdf191"
    _, moves = _traced(1000690, {payer, creator})
    assert moves == [
        (
            "0x2c3cfb8d7f",
            "tx",
            payer,
            "0x5b3c526b152b1f3d8eabe2ec27f49b904ad51cad",
            64_655_529_900_000_002_048,  # 0x38140bd0e9b3a5000 wei
            TransferKind.NATIVE,
        )
    ]  # the creation moves no value


def test_block_1000895_nothing_from_the_failed_transaction() -> None:
    # test_export_traces_job/block_with_error: 0xa2f08948… ran out of gas (1 ETH not moved).
    failed_sender = "0xad9253df75b066c67aff5cdd9d6d2b9245444726"
    ok_sender = "0x9288fe5be3be048b5c7a68bfd4b9a0746b7e4a00"
    _, moves = _traced(1000895, {failed_sender, ok_sender})
    assert moves == [
        (
            "0xc7fec96b2d",
            "tx",
            ok_sender,
            "0xe05ff93a9978bbb48356accc74088f3841fc5d72",
            1_100_000_000_000_000_000,
            TransferKind.NATIVE,
        )
    ]


def test_block_1011973_a_selfdestruct_pays_its_heir() -> None:
    # test_export_traces_job/block_with_suicide: a value-0 call makes the contract destroy
    # itself and send its 0.05 ETH balance to the caller.
    contract = "0x474faa5018639791952fae334e2911700ac7fe9b"
    heir = "0x83973747eec131bf9a08ac64fb1a518e891bdf4b"
    _, moves = _traced(1011973, {contract})
    assert moves == [
        ("0x91acb43c5f", "trace:0", contract, heir, 50_000_000_000_000_000, TransferKind.INTERNAL)
    ]
