"""A tiny signing wallet for bcoin regtest: DRILL AND TEST KEY MATERIAL ONLY.

drainwatch is watch-only and never holds a private key (DESIGN §6): nothing in the watcher,
the rules or the reports imports this module. It exists so that the drill and the tests can
make real Bitcoin transactions on a throw-away regtest chain. Its keys come from a public label
(``sha256(label)`` is the BIP32 seed), so anyone can re-derive them: they must never guard value.

What it offers the drill and the tests:

- the public config material a watcher is given: the account tpubs, a SLIP-132 ``vpub`` for a
  single-key wallet (a bare tpub means pkh / BIP44 to the watcher), and BIP380 descriptors with
  checksums — ``wpkh([fp/84h/1h/0h]tpub…/<0;1>/*)`` and
  ``wsh(sortedmulti(2,[fp/48h/1h/0h/2h]tpub…/<0;1>/*,…))``;
- addresses for (branch, index) with bcoin's regtest prefixes;
- funding from a coinbase, its own UTXO bookkeeping (what it was funded with, received and sent;
  it never scans the chain), and signed spends with change back to itself: segwit v0,
  SIGHASH_ALL, 2 of the 3 keys for the multisig, an RBF-signalling sequence by default and a
  fee of the caller's choosing, so that a test can build a replacement of a pending spend.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from embit import bip32, compact
from embit.hashes import hash160
from embit.script import Script, Witness, multisig, p2pkh
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from drainwatch.addresses import BitcoinAddressParams, encode_segwit_address
from drainwatch.config_descriptors import descriptor_checksum
from drainwatch.devnode_bitcoin import (
    BCOIN_REGTEST,
    COINBASE_MATURITY,
    SINK_ADDRESS,
    BcoinNode,
    script_for_address,
)

TPRV = bytes.fromhex("04358394")
TPUB = bytes.fromhex("043587cf")
VPUB = bytes.fromhex("045f1cf6")  # SLIP-132: a test-network xpub of a p2wpkh account
RECEIVE, CHANGE = 0, 1
RBF_SEQUENCE = 0xFFFFFFFD  # BIP125: replaceable
FINAL_SEQUENCE = 0xFFFFFFFF
DEFAULT_FEE = 2_000  # satoshi; bcoin's regtest relay floor is 1 sat/vB
DUST = 546
GAP = 20  # how far past the last handed-out index ``receive`` looks for its scripts

Kind = Literal["wpkh", "wsh-sortedmulti"]


@dataclass(frozen=True)
class Utxo:
    txid: str
    vout: int
    value: int
    branch: int
    index: int


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction of the wallet; ``raw`` is what ``sendrawtransaction`` takes."""

    txid: str
    raw: str
    spent: tuple[Utxo, ...]
    payments: tuple[tuple[str, int], ...]
    fee: int
    change: Utxo | None
    rbf: bool


@dataclass
class RegtestWallet:
    """A deterministic regtest wallet: ``single(label)`` (wpkh) or ``multisig(label)``
    (2-of-3 wsh(sortedmulti)). Every method but ``fund``/``send`` works without a node."""

    label: str
    kind: Kind
    threshold: int
    roots: list[Any] = field(repr=False)  # embit HDKey, private
    params: BitcoinAddressParams = BCOIN_REGTEST
    utxos: list[Utxo] = field(default_factory=list)
    next_index: dict[int, int] = field(default_factory=lambda: {RECEIVE: 0, CHANGE: 0})
    _account_keys: list[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._account_keys = [root.derive(self.account_path) for root in self.roots]

    @classmethod
    def single(cls, label: str) -> RegtestWallet:
        return cls(label, "wpkh", 1, [_root(label)])

    @classmethod
    def multisig(cls, label: str, threshold: int = 2, keys: int = 3) -> RegtestWallet:
        roots = [_root(f"{label}/cosigner-{i}") for i in range(keys)]
        return cls(label, "wsh-sortedmulti", threshold, roots)

    # --- public config material ---------------------------------------------------------------

    @property
    def account_path(self) -> str:
        return "m/84h/1h/0h" if self.kind == "wpkh" else "m/48h/1h/0h/2h"

    def _accounts(self) -> list[Any]:
        return self._account_keys

    def xpubs(self) -> list[str]:
        """The account tpubs (one per key), in key order."""
        return [str(acc.to_public().to_base58(version=TPUB)) for acc in self._accounts()]

    def xpub_slip132(self) -> str:
        """The single-key account as a ``vpub`` (SLIP-132 for p2wpkh on a test network)."""
        if self.kind != "wpkh":
            raise ValueError("a SLIP-132 xpub describes a single-key wallet; use descriptor()")
        return str(self._accounts()[0].to_public().to_base58(version=VPUB))

    def descriptor(self) -> str:
        """The BIP380 descriptor (receive and change branches as ``<0;1>``) with its checksum."""
        origin = self.account_path.removeprefix("m")
        keys = [
            f"[{root.my_fingerprint.hex()}{origin}]{xpub}/<0;1>/*"
            for root, xpub in zip(self.roots, self.xpubs(), strict=True)
        ]
        if self.kind == "wpkh":
            body = f"wpkh({keys[0]})"
        else:
            body = f"wsh(sortedmulti({self.threshold},{','.join(keys)}))"
        return f"{body}#{descriptor_checksum(body)}"

    # --- addresses ----------------------------------------------------------------------------

    def _keys(self, branch: int, index: int) -> list[Any]:
        return [acc.derive([branch, index]) for acc in self._accounts()]

    def _witness_script(self, branch: int, index: int) -> Script:
        pubs = [k.key.get_public_key() for k in self._keys(branch, index)]
        return multisig(self.threshold, sorted(pubs, key=lambda p: p.sec()))  # BIP67

    def _program(self, branch: int, index: int) -> bytes:
        if self.kind == "wpkh":
            pub = self._keys(branch, index)[0].key.get_public_key().sec()
            return bytes(hash160(pub))
        return hashlib.sha256(self._witness_script(branch, index).data).digest()

    def address(self, branch: int = RECEIVE, index: int = 0) -> str:
        return encode_segwit_address(self.params.bech32_hrp, 0, self._program(branch, index))

    def script(self, branch: int = RECEIVE, index: int = 0) -> bytes:
        program = self._program(branch, index)
        return bytes([0, len(program)]) + program

    def next_address(self, branch: int = RECEIVE) -> tuple[str, int]:
        """A fresh address of ``branch`` and its index."""
        index = self.next_index[branch]
        self.next_index[branch] = index + 1
        return self.address(branch, index), index

    def balance(self) -> int:
        return sum(u.value for u in self.utxos)

    # --- funding and receiving ----------------------------------------------------------------

    def fund(self, node: BcoinNode, blocks: int = 1) -> list[Utxo]:
        """Mine ``blocks`` coinbases to this wallet, then enough blocks (to a sink) for them to
        mature; the new UTXOs."""
        got: list[Utxo] = []
        for _ in range(blocks):
            address, _ = self.next_address(RECEIVE)
            [block_hash] = node.mine(1, address)
            coinbase = _block_transactions(node.raw_block(block_hash))[0]
            got += self._outputs_to_me(coinbase)
        node.mine(COINBASE_MATURITY, SINK_ADDRESS)
        return got

    def receive(self, raw_hex: str) -> list[Utxo]:
        """Take note of the outputs of a transaction that pay this wallet (and of nothing else:
        the caller says which transactions count, e.g. once mined)."""
        tx = Transaction.parse(bytes.fromhex(raw_hex))
        return self._outputs_to_me(tx)

    def _outputs_to_me(self, tx: Any) -> list[Utxo]:
        known = {
            self.script(branch, i): (branch, i)
            for branch in (RECEIVE, CHANGE)
            for i in range(self.next_index[branch] + GAP)
        }
        txid = tx.txid().hex()
        got = [
            Utxo(txid, vout, int(out.value), *known[out.script_pubkey.data])
            for vout, out in enumerate(tx.vout)
            if out.script_pubkey.data in known
        ]
        self.utxos += [u for u in got if u not in self.utxos]
        return got

    # --- spending -----------------------------------------------------------------------------

    def build(
        self,
        payments: Sequence[tuple[str, int]],
        *,
        fee: int = DEFAULT_FEE,
        rbf: bool = True,
        inputs: Sequence[Utxo] | None = None,
    ) -> SignedTx:
        """Sign a spend paying ``payments`` (address, satoshi) with change back to the wallet.
        ``inputs`` pins the coins (a replacement spends the same ones); by default the largest
        coins first. The wallet's books are not touched: ``send`` or ``record`` do that."""
        wanted = sum(amount for _, amount in payments) + fee
        coins = list(inputs) if inputs is not None else _select(self.utxos, wanted)
        total = sum(u.value for u in coins)
        if total < wanted:
            raise ValueError(f"{self.label}: {total} sat cannot pay {wanted} sat (fee included)")
        sequence = RBF_SEQUENCE if rbf else FINAL_SEQUENCE
        vin = [TransactionInput(bytes.fromhex(u.txid), u.vout, sequence=sequence) for u in coins]
        vout = [TransactionOutput(amount, Script(script_for_address(a))) for a, amount in payments]
        change: tuple[int, int] | None = None
        if total - wanted >= DUST:
            change = (self.next_index[CHANGE], total - wanted)
            vout.append(TransactionOutput(change[1], Script(self.script(CHANGE, change[0]))))
        tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
        for i, coin in enumerate(coins):
            tx.vin[i].witness = self._witness(tx, i, coin)
        txid = tx.txid().hex()
        change_utxo = Utxo(txid, len(vout) - 1, change[1], CHANGE, change[0]) if change else None
        return SignedTx(
            txid,
            tx.serialize().hex(),
            tuple(coins),
            tuple(payments),
            total - sum(out.value for out in vout),
            change_utxo,
            rbf,
        )

    def _witness(self, tx: Any, i: int, coin: Utxo) -> Witness:
        keys = self._keys(coin.branch, coin.index)
        if self.kind == "wpkh":
            pub = keys[0].key.get_public_key()
            digest = tx.sighash_segwit(i, p2pkh(pub), coin.value, SIGHASH.ALL)
            return Witness([_der(keys[0].key.sign(digest)), pub.sec()])
        script = self._witness_script(coin.branch, coin.index)
        digest = tx.sighash_segwit(i, script, coin.value, SIGHASH.ALL)
        # The first ``threshold`` keys sign; CHECKMULTISIG wants the signatures in key order.
        signers = sorted(keys[: self.threshold], key=lambda k: k.key.get_public_key().sec())
        sigs = [_der(k.key.sign(digest)) for k in signers]
        return Witness([b"", *sigs, script.data])

    def record(self, signed: SignedTx, replaces: SignedTx | None = None) -> None:
        """Book a spend: its coins leave, its change arrives (and a replaced spend's change
        goes, since it will never confirm)."""
        if replaces is not None and replaces.change in self.utxos:
            self.utxos.remove(replaces.change)
        self.utxos = [u for u in self.utxos if u not in signed.spent]
        if signed.change is not None:
            self.utxos.append(signed.change)
            self.next_index[CHANGE] = max(self.next_index[CHANGE], signed.change.index + 1)

    def send(
        self,
        node: BcoinNode,
        payments: Sequence[tuple[str, int]],
        *,
        fee: int = DEFAULT_FEE,
        rbf: bool = True,
    ) -> SignedTx:
        """Build, broadcast (checked: it is in the mempool) and book a spend."""
        signed = self.build(payments, fee=fee, rbf=rbf)
        node.send_raw(signed.raw)
        self.record(signed)
        return signed

    def build_replacement(self, original: SignedTx, fee: int) -> SignedTx:
        """The same payments from the same coins with a higher fee (BIP125 style). bcoin's
        mempool refuses it while ``original`` is pending: mine it with ``node.mine_block``."""
        if fee <= original.fee:
            raise ValueError(f"a replacement must pay more than {original.fee} sat")
        return self.build(original.payments, fee=fee, rbf=original.rbf, inputs=original.spent)


def _root(label: str) -> Any:
    return bip32.HDKey.from_seed(hashlib.sha256(label.encode()).digest(), version=TPRV)


def _der(signature: Any) -> bytes:
    return bytes(signature.serialize()) + bytes([SIGHASH.ALL])


def _select(utxos: Sequence[Utxo], wanted: int) -> list[Utxo]:
    chosen: list[Utxo] = []
    for coin in sorted(utxos, key=lambda u: u.value, reverse=True):
        if sum(u.value for u in chosen) >= wanted:
            break
        chosen.append(coin)
    return chosen


def _block_transactions(raw_block: bytes) -> list[Any]:
    stream = io.BytesIO(raw_block[80:])
    return [Transaction.read_from(stream) for _ in range(compact.read_from(stream))]
