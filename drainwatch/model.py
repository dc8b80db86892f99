"""The domain model: frozen value objects shared by every part of drainwatch.

Amounts are ``int`` base units (satoshi, wei, token units) everywhere; decimals appear only when
a value is displayed. Every on-chain fact carries its chain and, once mined, its block (height and
hash), so that a reorg can retract it. Nothing here performs I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

#: Marks an ``int`` field that is an amount of base units: its canonical JSON form is a decimal
#: string, so that values above 2**53 survive JavaScript and spreadsheet consumers intact.
AMOUNT = {"json": "decimal-string"}


class ChainKind(StrEnum):
    EVM = "evm"
    BITCOIN = "bitcoin"


class AssetKind(StrEnum):
    NATIVE = "native"
    TOKEN = "token"


class WalletRole(StrEnum):
    HOT = "hot"
    WARM = "warm"
    COLD = "cold"


class CustodyKind(StrEnum):
    SINGLE_KEY = "single_key"
    MULTISIG = "multisig"
    MPC = "mpc"
    HSM = "hsm"


class TransferKind(StrEnum):
    NATIVE = "native"
    TOKEN = "token"
    INTERNAL = "internal"
    UTXO = "utxo"


class ControlKind(StrEnum):
    """A change of who or what controls a watched wallet (DESIGN.md §1: a signed transaction is
    not proof of a legitimate one; the Feb 2025 Safe drain swapped the implementation first)."""

    APPROVAL = "approval"  # ERC-20 Approval (EIP-2612 permits show as one), ERC-721 Approval
    APPROVAL_FOR_ALL = "approval_for_all"  # ERC-721 / ERC-1155 operator approval
    OWNER_ADDED = "owner_added"
    OWNER_REMOVED = "owner_removed"
    THRESHOLD_CHANGED = "threshold_changed"
    GUARD_CHANGED = "guard_changed"
    MODULE_ENABLED = "module_enabled"
    MASTER_COPY_CHANGED = "master_copy_changed"  # a Safe's singleton, by its event
    IMPLEMENTATION_CHANGED = "implementation_changed"  # EIP-1967 Upgraded, or seen in storage
    #: Seen pending only, read from calldata: a Safe transaction with operation DELEGATECALL,
    #: which runs another contract's code on the Safe's own storage (Bybit, Feb 2025).
    DELEGATE_CALL = "delegate_call"
    #: Seen pending only: a call with a token-movement or Safe selector whose arguments do not
    #: decode strictly; what it would do is not guessed.
    MALFORMED_CALL = "malformed_call"
    #: Seen pending only, read from calldata: a Safe's ``setFallbackHandler`` self-call. The
    #: handler answers every call the Safe does not know, EIP-1271 ``isValidSignature`` among
    #: them (a rogue one can approve what no owner signed).
    FALLBACK_HANDLER_CHANGED = "fallback_handler_changed"


#: Kinds read from a pending transaction's calldata that nothing in a block reports (no log,
#: trace or slot read emits them): once their transaction is mined and succeeds, the pending
#: reading is the only record of what happened, so it ends EXECUTED, never SUPERSEDED.
#: (Slot 0 is read only for Safes configured as multisig, and only shows a singleton change.)
PENDING_ONLY_KINDS = frozenset(
    {ControlKind.DELEGATE_CALL, ControlKind.MALFORMED_CALL, ControlKind.FALLBACK_HANDLER_CHANGED}
)
#: ``ControlChange.value`` of a ``delegate_call`` whose Safe transaction does not decode strictly
#: (None when it does): an ABI coder v1 Safe (1.1.1) masks the dirty words and runs it anyway.
LAX_ENCODING = 1


class TransferStatus(StrEnum):
    """Where a transfer or control change stands. ``SUPERSEDED`` closes a reading of a pending
    transaction's calldata (index ``pending:N``) once the transaction is mined: the block's own
    events (``log:N``, ``trace:...``, ``slot:...``) carry what it did from then on, once the
    block has its confirmations. ``EXECUTED`` closes a reading of a kind no block event reports
    (``PENDING_ONLY_KINDS``) whose transaction was mined and succeeded: it is the final word.
    Both carry the block; like CONFIRMED, neither goes back to pending from a mempool sighting."""

    PENDING = "pending"
    #: In a block of the best chain that has not yet reached the chain's confirmations.
    PROVISIONAL = "provisional"
    CONFIRMED = "confirmed"
    ORPHANED = "orphaned"
    SUPERSEDED = "superseded"
    EXECUTED = "executed"


class Direction(StrEnum):
    INFLOW = "inflow"
    OUTFLOW = "outflow"
    INTERNAL = "internal"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


class AlertState(StrEnum):
    PENDING = "pending"
    PROVISIONAL = "provisional"
    CONFIRMED = "confirmed"
    RETRACTED = "retracted"
    #: A pending alert whose transaction was mined: the block's alerts take over from it (they
    #: follow once the block has its confirmations).
    SUPERSEDED = "superseded"
    #: A pending alert of a kind no block event reports whose transaction was mined and
    #: succeeded: delivered again at its full severity, it is the record of what happened.
    EXECUTED = "executed"


class IncidentStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class TimelineKind(StrEnum):
    DETECTION = "detection"
    ALERT = "alert"
    TRACE = "trace"
    ACTION = "action"
    NOTE = "note"
    STATUS = "status"


NATIVE_ASSET_ID = "native"
#: The index prefix of what is read from a pending transaction's calldata (``pending:N``):
#: never the index of anything a block carries.
PENDING_INDEX = "pending:"


@dataclass(frozen=True)
class Chain:
    """A chain the exchange holds assets on, as configured (``name`` is the config's key)."""

    name: str
    kind: ChainKind
    network: str
    native_symbol: str
    native_decimals: int
    chain_id: int | None = None
    confirmations: int = 12
    explorer_tx_url: str | None = None


@dataclass(frozen=True)
class Asset:
    """A native coin (``contract`` is None) or a token identified by its contract address."""

    chain: str
    symbol: str
    decimals: int
    kind: AssetKind = AssetKind.NATIVE
    contract: str | None = None

    @property
    def asset_id(self) -> str:
        return self.contract.lower() if self.contract else NATIVE_ASSET_ID


@dataclass(frozen=True)
class Custody:
    """How a wallet's keys are held: single key, m-of-n multisig, MPC or HSM."""

    kind: CustodyKind
    threshold: int | None = None
    signers: tuple[str, ...] = ()
    location: str | None = None


@dataclass(frozen=True)
class Limit:
    """Per-asset outflow limits of a wallet, in base units."""

    asset: str
    max_single: int | None = field(default=None, metadata=AMOUNT)
    max_window: int | None = field(default=None, metadata=AMOUNT)
    window_seconds: int | None = None


@dataclass(frozen=True)
class Wallet:
    """One of the exchange's own wallets on one chain."""

    name: str
    chain: str
    role: WalletRole
    custody: Custody
    addresses: tuple[str, ...] = ()
    xpubs: tuple[str, ...] = ()
    descriptors: tuple[str, ...] = ()
    limits: tuple[Limit, ...] = ()
    allowlist: tuple[str, ...] = ()
    location: str | None = None


@dataclass(frozen=True)
class BlockRef:
    """A block by height and hash: the pair that a reorg check compares."""

    height: int
    hash: str


@dataclass(frozen=True)
class Transfer:
    """One movement of value, keyed by (chain, tx_hash, index).

    ``index`` names the position inside the transaction: ``tx`` for an EVM transaction's own
    value, ``log:N`` for a token log, ``trace:0.1`` for an internal call frame, ``out:N`` for a
    Bitcoin output, ``pending:N`` for the N-th movement read from a pending transaction's
    calldata (before execution, so no log index is known yet; status ``pending``, then
    ``superseded`` once mined or ``orphaned`` once withdrawn). ``asset`` is ``native`` or the
    token contract address in lower case.
    """

    chain: str
    tx_hash: str
    index: str
    from_address: str
    to_address: str
    asset: str
    amount: int = field(metadata=AMOUNT)
    kind: TransferKind
    status: TransferStatus
    block: BlockRef | None = None
    block_time: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.chain, self.tx_hash, self.index)


@dataclass(frozen=True)
class ControlChange:
    """A change of control of a watched wallet, keyed by (chain, tx_hash or block hash, index).

    ``wallet_address`` is the watched address whose control changed: the Safe or proxy for
    owner, threshold, guard, module and implementation changes; the approving owner for
    approvals, with ``contract`` the token. ``subject`` is the owner, spender, operator, guard,
    module, new implementation or delegatecall target; ``value`` the new threshold or the
    approved amount (for ``approval_for_all``: 1 approved, 0 revoked; for ``delegate_call``:
    ``LAX_ENCODING`` when the Safe transaction does not decode strictly, else None; for
    ``fallback_handler_changed`` the handler is the subject). ``index`` is ``log:N``
    for an event, ``slot:eip1967`` / ``slot:0`` for a change seen in storage, which has no
    ``tx_hash``, or ``pending:N`` for one read from a pending transaction's calldata (see
    ``Transfer``), ending ``superseded`` or, for ``PENDING_ONLY_KINDS``, ``executed`` once
    mined; a ``malformed_call`` names the contract called in ``contract``.
    """

    chain: str
    index: str
    wallet_address: str
    kind: ControlKind
    status: TransferStatus
    tx_hash: str | None = None
    subject: str | None = None
    value: int | None = field(default=None, metadata=AMOUNT)
    contract: str | None = None
    block: BlockRef | None = None
    block_time: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        anchor = self.tx_hash or (self.block.hash if self.block else "")
        return (self.chain, anchor, self.index)


@dataclass(frozen=True)
class Utxo:
    """A Bitcoin output paying one of the exchange's wallets, keyed by (chain, txid, vout).

    Created by a block (``block``); ``spent_by`` / ``spent_block`` name the transaction and block
    that spent it, None while it is unspent. The set of these rows is the watcher's view of the
    wallets at its checkpoint: a reorg removes what the replaced blocks created and un-spends what
    they spent, so balances read from it are exact at every height.
    """

    chain: str
    txid: str
    vout: int
    wallet: str
    address: str
    amount: int = field(metadata=AMOUNT)
    block: BlockRef
    spent_by: str | None = None
    spent_block: BlockRef | None = None

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"


@dataclass(frozen=True)
class SpentInput:
    """One input of a Bitcoin transaction that spends a watched output. ``address``, ``amount``
    and ``wallet`` are known only for the exchange's own outputs (an input carries no address:
    it is what the output it spends paid); for others they are None."""

    txid: str
    vout: int
    address: str | None = None
    amount: int | None = field(default=None, metadata=AMOUNT)
    wallet: str | None = None


@dataclass(frozen=True)
class SpendOutput:
    """One output of a spending transaction: ``wallet`` names the exchange's own wallet it returns
    to (change, a sweep to cold, a refill), None when the value leaves. ``address`` is None for
    scripts without one (OP_RETURN, bare multisig, non-standard: ``script`` holds their hex)."""

    index: int
    amount: int = field(metadata=AMOUNT)
    script_type: str
    address: str | None = None
    wallet: str | None = None
    script: str | None = None


@dataclass(frozen=True)
class UtxoSpend:
    """A Bitcoin transaction spending at least one watched output: every input and output, the
    ones of the exchange's own wallets marked. Keyed by (chain, txid, ``spend``); pending while
    in the mempool, then confirmed in its block, or orphaned (withdrawn, replaced, reorged out).
    """

    chain: str
    txid: str
    status: TransferStatus
    inputs: tuple[SpentInput, ...]
    outputs: tuple[SpendOutput, ...]
    block: BlockRef | None = None
    block_time: datetime | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.chain, self.txid, "spend")

    @property
    def fee(self) -> int | None:
        """The fee, when every input's amount is known (all of them the exchange's own)."""
        amounts = [i.amount for i in self.inputs]
        if any(a is None for a in amounts):
            return None
        return sum(a for a in amounts if a is not None) - sum(o.amount for o in self.outputs)


@dataclass(frozen=True)
class Balance:
    """A watched wallet's balance of one asset (``native`` or a token contract in lower case)
    at the end of a block (``amount``) and of the block before it (``before``), read when the
    block moved value out of it: what the balance-fall rule compares over its window. Keyed by
    (chain, wallet, asset, block hash)."""

    chain: str
    wallet: str
    asset: str
    amount: int = field(metadata=AMOUNT)
    before: int = field(metadata=AMOUNT)
    block: BlockRef
    block_time: datetime

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.chain, self.wallet, self.asset, self.block.hash)


@dataclass(frozen=True)
class Expectation:
    """An outflow the exchange has announced it is about to make (a customer withdrawal, a sweep
    to cold, a refill): from ``wallet`` to ``destination``, ``amount`` base units of ``asset``
    (``native`` or a token contract in lower case), until ``valid_until``. ``reference`` is the
    exchange's own id for it (a withdrawal id): one expectation covers one outflow."""

    reference: str
    chain: str
    wallet: str
    destination: str
    asset: str
    amount: int = field(metadata=AMOUNT)
    valid_until: datetime


@dataclass(frozen=True)
class Alert:
    """A leak alert raised by a rule about one event; ``id`` is derived from rule and event."""

    id: str
    rule_id: str
    severity: Severity
    state: AlertState
    chain: str
    wallet: str
    subject: tuple[str, str, str]
    raised_at: datetime
    tx_hash: str | None = None
    block: BlockRef | None = None
    asset: str | None = None
    amount: int | None = field(default=None, metadata=AMOUNT)
    counterparty: str | None = None
    #: What the rule found, as (name, value) pairs the text is rendered from: a window's sum
    #: and limit, a destination's label, the expectation that was missing... Values are text
    #: (amounts as decimal strings of base units).
    facts: tuple[tuple[str, str], ...] = ()
    acked_by: str | None = None
    acked_at: datetime | None = None


@dataclass(frozen=True)
class Incident:
    id: str
    title: str
    opened_at: datetime
    status: IncidentStatus = IncidentStatus.OPEN
    closed_at: datetime | None = None
    from_alert: str | None = None
    exercise: bool = False


@dataclass(frozen=True)
class TimelineEntry:
    """One line of an incident's timeline; ``section`` names the report section of a note."""

    incident_id: str
    at: datetime
    kind: TimelineKind
    text: str
    actor: str | None = None
    section: str | None = None
    ref: str | None = None
