"""Typed logs → changes of control of watched wallets (approvals, Safe owners / threshold /
guard / modules / singleton, EIP-1967 implementation). Pure.

Who counts as "ours" depends on the event:

- ``Approval`` / ``ApprovalForAll``: the approving OWNER must be watched (an approval by someone
  else to a watched spender gives us power, it takes none away); ``contract`` is the token, with
  ``/tokenId`` appended for an ERC-721 approval. EIP-2612 ``permit`` emits a plain ``Approval``.
- Safe events and ``Upgraded``: the EMITTER (the Safe or proxy itself) must be watched.

Safe ≤ 1.3.0 emits its single argument in data (``AddedOwner(address owner)``); Safe 1.4.x
indexes it (``AddedOwner(address indexed owner)``). Both shapes are accepted for every
one-argument event here, ``Upgraded`` included (its standard shape is indexed; a data-word one is
unambiguous and a missed implementation swap is the costlier mistake).

As in ``watchers.evm.logs``: a log of another block raises ``MalformedRpcResponse``; a log with a
control topic but none of the shapes above (wrong topic count or data length, an address word
with non-zero high bytes, a bool that is neither 0 nor 1) is skipped and returned in
``ControlChanges.nonstandard`` for the caller to count, whether or not its emitter is watched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from drainwatch.model import BlockRef, ControlChange, ControlKind, TransferStatus
from watchers.evm.logs import EvmLog, block_logs

#: ERC-20 / ERC-721 ``Approval(address,address,uint256)``.
APPROVAL_TOPIC = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
#: ERC-721 / ERC-1155 ``ApprovalForAll(address,address,bool)``.
APPROVAL_FOR_ALL_TOPIC = "0x17307eab39ab6107e8899845ad3d59bd9653f200f220920489ca2b5937696c31"
#: Safe ``AddedOwner(address)``.
ADDED_OWNER_TOPIC = "0x9465fa0c962cc76958e6373a993326400c1c94f8be2fe3a952adfa7f60b2ea26"
#: Safe ``RemovedOwner(address)``.
REMOVED_OWNER_TOPIC = "0xf8d49fc529812e9a7c5c50e69c20f0dccc0db8fa95c98bc58cc9a4f1c1299eaf"
#: Safe ``ChangedThreshold(uint256)``.
CHANGED_THRESHOLD_TOPIC = "0x610f7ff2b304ae8903c3de74c60c6ab1f7d6226b3f52c5161905bb5ad4039c93"
#: Safe ``ChangedGuard(address)``.
CHANGED_GUARD_TOPIC = "0x1151116914515bc0891ff9047a6cb32cf902546f83066499bcf8ba33d2353fa2"
#: Safe ``EnabledModule(address)``.
ENABLED_MODULE_TOPIC = "0xecdf3a3effea5783a3c4c2140e677577666428d44ed9d474a0b3a4c9943f8440"
#: Safe ``ChangedMasterCopy(address)``: a change of the Safe's singleton.
CHANGED_MASTER_COPY_TOPIC = "0x75e41bc35ff1bf14d81d1d2f649c0084a0f974f9289c803ec9898eeec4c8d0b8"
#: EIP-1967 ``Upgraded(address)``: a change of a proxy's implementation.
UPGRADED_TOPIC = "0xbc7cd75a20ee27fd9adebab32041f755214dbc6bffa90cc0225b39da2e5c2d3b"

#: Topic 0 of every log that changes control: an OR filter for ``eth_getLogs``.
CONTROL_TOPICS = (
    APPROVAL_TOPIC,
    APPROVAL_FOR_ALL_TOPIC,
    ADDED_OWNER_TOPIC,
    REMOVED_OWNER_TOPIC,
    CHANGED_THRESHOLD_TOPIC,
    CHANGED_GUARD_TOPIC,
    ENABLED_MODULE_TOPIC,
    CHANGED_MASTER_COPY_TOPIC,
    UPGRADED_TOPIC,
)

#: The one-argument events of the emitter itself, by topic 0.
_EMITTER_KINDS = {
    ADDED_OWNER_TOPIC: ControlKind.OWNER_ADDED,
    REMOVED_OWNER_TOPIC: ControlKind.OWNER_REMOVED,
    CHANGED_THRESHOLD_TOPIC: ControlKind.THRESHOLD_CHANGED,
    CHANGED_GUARD_TOPIC: ControlKind.GUARD_CHANGED,
    ENABLED_MODULE_TOPIC: ControlKind.MODULE_ENABLED,
    CHANGED_MASTER_COPY_TOPIC: ControlKind.MASTER_COPY_CHANGED,
    UPGRADED_TOPIC: ControlKind.IMPLEMENTATION_CHANGED,
}
_METHOD = "eth_getLogs"
_WORD = 32


@dataclass(frozen=True)
class ControlChanges:
    """The control changes of watched wallets, and the control-topic logs of no known shape."""

    changes: tuple[ControlChange, ...]
    nonstandard: tuple[EvmLog, ...]


class _Decoded(NamedTuple):
    wallet: str
    kind: ControlKind
    subject: str | None
    value: int | None
    contract: str | None


def control_changes(
    chain: str,
    block: BlockRef,
    block_time: datetime,
    logs: Iterable[EvmLog],
    watched: frozenset[str],
    endpoint: str = "node",
) -> ControlChanges:
    """The control changes in one block's logs whose wallet is watched (lower case).

    Removed logs (retracted by a reorg) are skipped; a log of another block means the node mixed
    blocks up, and raises. Logs of other topics are ignored.
    """
    changes: list[ControlChange] = []
    nonstandard: list[EvmLog] = []
    for log in block_logs(block, logs, CONTROL_TOPICS, endpoint):
        decoded = _decode(log)
        if decoded is None:
            nonstandard.append(log)
        elif decoded.wallet in watched:
            changes.append(
                ControlChange(
                    chain=chain,
                    index=f"log:{log.log_index}",
                    wallet_address=decoded.wallet,
                    kind=decoded.kind,
                    status=TransferStatus.CONFIRMED,
                    tx_hash=log.tx_hash,
                    subject=decoded.subject,
                    value=decoded.value,
                    contract=decoded.contract,
                    block=block,
                    block_time=block_time,
                )
            )
    return ControlChanges(tuple(changes), tuple(nonstandard))


def _decode(log: EvmLog) -> _Decoded | None:
    """The change a control-topic log makes, or None when it has none of the standard shapes."""
    topics, data = log.topics, log.data
    if topics[0] == APPROVAL_TOPIC:
        owner, spender = _topic_address(topics, 1), _topic_address(topics, 2)
        if owner is None or spender is None:
            return None
        if len(topics) == 3 and len(data) == _WORD:  # ERC-20: amount in data
            amount = int.from_bytes(data)
            return _Decoded(owner, ControlKind.APPROVAL, spender, amount, log.address)
        if len(topics) == 4 and not data:  # ERC-721: tokenId indexed
            token = f"{log.address}/{int(topics[3], 16)}"
            return _Decoded(owner, ControlKind.APPROVAL, spender, 1, token)
        return None
    if topics[0] == APPROVAL_FOR_ALL_TOPIC:
        owner, operator = _topic_address(topics, 1), _topic_address(topics, 2)
        if owner is None or operator is None or len(topics) != 3 or len(data) != _WORD:
            return None
        approved = int.from_bytes(data)  # an ABI bool: 0 or 1, nothing else
        if approved not in (0, 1):
            return None
        return _Decoded(owner, ControlKind.APPROVAL_FOR_ALL, operator, approved, log.address)
    # one argument, indexed (Safe 1.4.x, EIP-1967) or in data (Safe <= 1.3.0)
    kind = _EMITTER_KINDS[topics[0]]
    if len(topics) == 2 and not data:
        word = bytes.fromhex(topics[1][2:])
    elif len(topics) == 1 and len(data) == _WORD:
        word = data
    else:
        return None
    if kind is ControlKind.THRESHOLD_CHANGED:
        return _Decoded(log.address, kind, None, int.from_bytes(word), None)
    subject = _address(word)
    return None if subject is None else _Decoded(log.address, kind, subject, None, None)


def _topic_address(topics: tuple[str, ...], i: int) -> str | None:
    return _address(bytes.fromhex(topics[i][2:])) if i < len(topics) else None


def _address(word: bytes) -> str | None:
    """The address in a 32-byte ABI word: its low 20 bytes, provided the high 12 are zero."""
    if len(word) != _WORD or any(word[:12]):
        return None
    return "0x" + word[12:].hex()
