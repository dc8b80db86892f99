"""The bcoin regtest node helpers and the drill wallet, on a real bcoin node (issue #4): mining,
raw blocks, wpkh and 2-of-3 multisig spends pending then mined, a replacement that evicts the
original, invalidateblock and a real two-node reorg."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from bitcoin.core import CBlock, CTransaction, b2lx

from drainwatch.addresses import b58check_encode, check_xpub, decode_extended_key
from drainwatch.config_descriptors import check_descriptor
from drainwatch.devnode_bitcoin import (
    BCOIN_REGTEST,
    SEGWIT_HEIGHT,
    SINK_ADDRESS,
    BcoinError,
    BcoinMissing,
    BcoinNode,
    find_bcoin,
    script_for_address,
)
from drainwatch.regtest_wallet import RBF_SEQUENCE, RegtestWallet


def block_of(node: BcoinNode, block_hash: str) -> CBlock:
    block = CBlock.deserialize(node.raw_block(block_hash))
    assert b2lx(block.GetHash()) == block_hash
    return block


def txids_in(block: CBlock) -> list[str]:
    return [b2lx(tx.GetTxid()) for tx in block.vtx]


def test_missing_bcoin_names_the_setup_step(tmp_path: Path) -> None:
    with pytest.raises(BcoinMissing, match="make setup"):
        find_bcoin([tmp_path])


def test_mining_and_raw_blocks(bcoin_node: BcoinNode) -> None:
    assert bcoin_node.height() == SEGWIT_HEIGHT
    tip = bcoin_node.best_hash()
    wallet = RegtestWallet.single("mining")
    hashes = bcoin_node.mine(3, wallet.address())
    assert bcoin_node.height() == SEGWIT_HEIGHT + 3
    assert bcoin_node.best_hash() == hashes[-1] == bcoin_node.block_hash(SEGWIT_HEIGHT + 3)
    first = block_of(bcoin_node, hashes[0])
    assert b2lx(first.hashPrevBlock) == tip
    assert bytes(first.vtx[0].vout[0].scriptPubKey) == wallet.script()
    assert b2lx(block_of(bcoin_node, hashes[2]).hashPrevBlock) == hashes[1]


def test_bcoin_regtest_address_prefixes(bcoin_node: BcoinNode) -> None:
    h160 = hashlib.sha256(b"drainwatch").digest()[:20]
    p2pkh = b58check_encode(bytes([BCOIN_REGTEST.p2pkh]) + h160)
    p2sh = b58check_encode(bytes([BCOIN_REGTEST.p2sh]) + h160)
    assert p2pkh.startswith("R")
    multisig = RegtestWallet.multisig("prefixes")
    for address in (p2pkh, p2sh, SINK_ADDRESS, multisig.address(1, 3)):
        answer = bcoin_node.rpc("validateaddress", address)
        assert answer["isvalid"], address
        assert answer["scriptPubKey"] == script_for_address(address).hex()
    assert multisig.address().startswith("rb1q")


def test_wallet_config_material_is_public_and_well_formed() -> None:
    single, multisig = RegtestWallet.single("hot"), RegtestWallet.multisig("cold")
    assert decode_extended_key(single.xpub_slip132()).prefix == "vpub"
    for xpub in single.xpubs() + multisig.xpubs():
        assert check_xpub(xpub, mainnet=False).prefix == "tpub"
    check_descriptor(single.descriptor(), mainnet=False)  # checksum verified
    check_descriptor(multisig.descriptor(), mainnet=False)
    assert multisig.descriptor().startswith("wsh(sortedmulti(2,")
    assert "prv" not in single.descriptor() + multisig.descriptor()
    assert RegtestWallet.single("hot").address(0, 1) == single.address(0, 1)  # deterministic
    assert len(set(multisig.xpubs())) == 3


def test_wpkh_spend_is_pending_then_mined(
    bcoin_node: BcoinNode, wpkh_wallet: RegtestWallet
) -> None:
    funded = wpkh_wallet.balance()
    target = RegtestWallet.single("elsewhere").address()
    sent = wpkh_wallet.send(bcoin_node, [(target, 150_000_000)], fee=3_000)
    assert bcoin_node.mempool() == [sent.txid]
    assert wpkh_wallet.balance() == funded - 150_000_000 - 3_000
    tx = CTransaction.deserialize(bytes.fromhex(sent.raw))
    assert tx.vin[0].nSequence == RBF_SEQUENCE
    assert bytes(tx.vout[0].scriptPubKey) == script_for_address(target)

    [block_hash] = bcoin_node.mine(1, SINK_ADDRESS)
    assert bcoin_node.mempool() == []
    assert sent.txid in txids_in(block_of(bcoin_node, block_hash))


def test_multisig_2_of_3_spend_is_pending_then_mined(
    bcoin_node: BcoinNode, multisig_wallet: RegtestWallet
) -> None:
    target = RegtestWallet.single("elsewhere").address()
    sent = multisig_wallet.send(bcoin_node, [(target, 100_000_000)])
    assert sent.txid in bcoin_node.mempool()
    witness = CTransaction.deserialize(bytes.fromhex(sent.raw)).wit.vtxinwit[0].scriptWitness
    assert len(witness.stack) == 4 and witness.stack[0] == b""  # dummy, 2 signatures, script

    [block_hash] = bcoin_node.mine(1, SINK_ADDRESS)
    assert sent.txid in txids_in(block_of(bcoin_node, block_hash))
    assert sent.change is not None
    again = multisig_wallet.send(bcoin_node, [(target, 1_000_000)])  # spends the change
    assert again.spent == (sent.change,)


def test_wallets_pay_each_other(
    bcoin_node: BcoinNode, wpkh_wallet: RegtestWallet, multisig_wallet: RegtestWallet
) -> None:
    deposit = wpkh_wallet.send(bcoin_node, [(multisig_wallet.address(0, 4), 40_000_000)])
    bcoin_node.mine(1, SINK_ADDRESS)
    [received] = multisig_wallet.receive(deposit.raw)
    assert (received.value, received.branch, received.index) == (40_000_000, 0, 4)
    back = multisig_wallet.build([(wpkh_wallet.address(), 10_000_000)], inputs=[received])
    assert bcoin_node.send_raw(back.raw) == back.txid


def test_send_raw_raises_when_the_node_refuses(
    bcoin_node: BcoinNode, wpkh_wallet: RegtestWallet
) -> None:
    first = wpkh_wallet.build([(SINK_ADDRESS, 10_000)])
    double = wpkh_wallet.build([(SINK_ADDRESS, 20_000)])  # the same coin again
    bcoin_node.send_raw(first.raw)
    with pytest.raises(BcoinError, match="bad-txns-inputs-spent"):
        bcoin_node.send_raw(double.raw)
    assert bcoin_node.mempool() == [first.txid]


def test_replacement_mined_evicts_the_pending_original(
    bcoin_node: BcoinNode, wpkh_wallet: RegtestWallet
) -> None:
    target = RegtestWallet.single("thief").address()
    original = wpkh_wallet.send(bcoin_node, [(target, 70_000_000)], fee=1_000)
    replacement = wpkh_wallet.build_replacement(original, fee=5_000)
    assert replacement.spent == original.spent and replacement.txid != original.txid
    with pytest.raises(BcoinError):  # bcoin 1.0.2's mempool has no replace-by-fee
        bcoin_node.send_raw(replacement.raw)

    block_hash = bcoin_node.mine_block([replacement.raw], SINK_ADDRESS)
    assert bcoin_node.best_hash() == block_hash
    assert original.txid not in bcoin_node.mempool()
    assert replacement.txid in txids_in(block_of(bcoin_node, block_hash))
    wpkh_wallet.record(replacement, replaces=original)
    assert wpkh_wallet.utxos == [replacement.change]


def test_invalidateblock_rewinds_and_mining_again_gives_another_block(
    bcoin_node: BcoinNode, wpkh_wallet: RegtestWallet
) -> None:
    sent = wpkh_wallet.send(bcoin_node, [(SINK_ADDRESS, 5_000_000)])
    height = bcoin_node.height()
    [mined] = bcoin_node.mine(1, SINK_ADDRESS)
    bcoin_node.invalidate(mined)
    assert bcoin_node.height() == height
    # bcoin quirk: invalidateblock resets the chain and empties the whole mempool (Bitcoin Core
    # would put the block's transactions back); the signed transaction is still valid.
    assert bcoin_node.mempool() == []
    bcoin_node.send_raw(sent.raw)
    [again] = bcoin_node.mine(1, RegtestWallet.single("other-miner").address())
    assert again != mined and bcoin_node.block_hash(height + 1) == again
    assert sent.txid in txids_in(block_of(bcoin_node, again))


def test_two_node_reorg_replaces_a_block_of_a_with_those_of_b(
    bcoin_pair: tuple[BcoinNode, BcoinNode],
) -> None:
    a, b = bcoin_pair
    wallet = RegtestWallet.single("pair-hot")
    wallet.fund(a)
    # Coins that are not coinbases: bcoin drops spends of coinbases from the mempool on a reorg.
    split = wallet.send(a, [(wallet.address(0, 9), 300_000_000)])
    a.mine(1, SINK_ADDRESS)
    coin, change = wallet.receive(split.raw)  # the payment to itself, and the change
    assert coin.index == 9 and change == split.change
    a.wait_synced(b)
    height = a.height()

    a.disconnect(b)
    spend = wallet.build([(SINK_ADDRESS, 30_000_000)], inputs=[coin])
    a.send_raw(spend.raw)
    [a_block] = a.mine(1, SINK_ADDRESS)
    assert spend.txid in txids_in(block_of(a, a_block))
    # bcoin puts a disconnected block's transactions back only into a mempool that is not
    # empty: keep one spend pending.
    pending = wallet.build([(SINK_ADDRESS, 40_000_000)], inputs=[change])
    a.send_raw(pending.raw)
    b_blocks = b.mine(2, RegtestWallet.single("other-miner").address())
    assert b.mempool() == []  # B never saw either spend

    a.connect(b)
    assert a.best_hash() == b_blocks[-1] and a.height() == height + 2
    assert a.block_hash(height + 1) == b_blocks[0] != a_block  # A's block is stale now
    assert b2lx(block_of(a, b_blocks[0]).hashPrevBlock) == a.block_hash(height)
    assert sorted(a.mempool()) == sorted([spend.txid, pending.txid])  # pending again
