"""Calldata of a pending transaction → what it would move out of, or grant over, a wallet. Pure.

A pending transaction has no logs yet: what it will do is read from its input, for the calls
that move tokens or grant control, by their 4-byte selector:

- token calls, run by ``caller`` (the transaction's sender, or a Safe for its inner call):
  ERC-20 ``transfer``, ``transferFrom``, ``approve``, ``increaseAllowance``; ERC-721
  ``safeTransferFrom`` (with and without data); ERC-1155 ``safeTransferFrom`` and
  ``safeBatchTransferFrom``; ``setApprovalForAll``;
- Safe ``execTransaction`` sent (by anyone: an owner, a relayer) to a Safe: its inner call.
  ``operation == 1`` is a DELEGATECALL, which runs the target's code with the Safe's own
  storage -- how the Feb 2025 Bybit cold Safe was taken (a delegatecall to a contract whose
  ``transfer(address,uint256)`` wrote slot 0, the singleton) -- and is reported as such,
  never read as the token call its data looks like. Otherwise the inner value, the inner
  token call, and the Safe's calls to itself that change its control (owners, threshold,
  guard, modules, singleton, fallback handler) are read.

Strict reading, as a Solidity (ABI coder v2) decoder would refuse: every head word present,
address words with zero high bytes, bools 0 or 1, Safe's ``operation`` 0 or 1, dynamic offsets
and lengths inside the data. Bytes after the last argument are ignored, as every such decoder
ignores them (the contract executes the call all the same). A known selector whose arguments
do not read so is not guessed: it yields a ``malformed_call`` grant naming the contract called,
because an old (ABI coder v1) token masks what a strict reader refuses and executes it anyway.
The grant is the caller's, or for a pull the debited account's (its first word, masked as a v1
token such as USDT masks it). An unknown selector yields nothing.

Two exceptions to the strict reading, where a lax (ABI coder v1) contract would run what a strict
reader calls malformed and the worst reading must win:

- a Safe ``execTransaction`` whose ``operation`` word reads 1 once masked to its 8 bits is a
  DELEGATECALL to its masked ``to``, whatever else is wrong with it: Safe 1.1.1 (solc < 0.7,
  no ABI coder v2) masks address and uint8 words and ignores a lax ``signatures`` offset, so
  dirty encoding must not turn a Bybit-class CRITICAL into a HIGH ``malformed_call``. The grant
  then carries ``value=LAX_ENCODING``, the "malformed encoding" note;
- ``debited_by_pull`` masks the address word (a v1 token debits the masked account).

Two readings are taken on trust, as the selector cannot tell them apart: ERC-20 and ERC-721
share ``transferFrom`` and ``approve``; both are read the ERC-20 way (the word is an amount of
the token contract), and the block's logs say which it was (the rules do not take a pending
``approve(spender, 0)`` for a revocation: it may approve ERC-721 token id 0).
``increaseAllowance`` reports the increment (the allowance it adds to is not known from
calldata).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from eth_utils.crypto import keccak

from drainwatch.model import LAX_ENCODING, NATIVE_ASSET_ID, ControlKind, TransferKind


def selector(signature: str) -> str:
    return "0x" + keccak(signature.encode())[:4].hex()


TRANSFER = selector("transfer(address,uint256)")
TRANSFER_FROM = selector("transferFrom(address,address,uint256)")
APPROVE = selector("approve(address,uint256)")
INCREASE_ALLOWANCE = selector("increaseAllowance(address,uint256)")
SAFE_TRANSFER_FROM_721 = selector("safeTransferFrom(address,address,uint256)")
SAFE_TRANSFER_FROM_721_DATA = selector("safeTransferFrom(address,address,uint256,bytes)")
SAFE_TRANSFER_FROM_1155 = selector("safeTransferFrom(address,address,uint256,uint256,bytes)")
SAFE_BATCH_TRANSFER_FROM = selector(
    "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)"
)
SET_APPROVAL_FOR_ALL = selector("setApprovalForAll(address,bool)")
EXEC_TRANSACTION = selector(
    "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"
)
ADD_OWNER_WITH_THRESHOLD = selector("addOwnerWithThreshold(address,uint256)")
REMOVE_OWNER = selector("removeOwner(address,address,uint256)")
SWAP_OWNER = selector("swapOwner(address,address,address)")
CHANGE_THRESHOLD = selector("changeThreshold(uint256)")
SET_GUARD = selector("setGuard(address)")
ENABLE_MODULE = selector("enableModule(address)")
CHANGE_MASTER_COPY = selector("changeMasterCopy(address)")
SET_FALLBACK_HANDLER = selector("setFallbackHandler(address)")

#: Token calls whose first argument is the account debited: anyone holding an allowance (or an
#: operator approval) over a watched wallet can send them.
PULLS = frozenset(
    {
        TRANSFER_FROM,
        SAFE_TRANSFER_FROM_721,
        SAFE_TRANSFER_FROM_721_DATA,
        SAFE_TRANSFER_FROM_1155,
        SAFE_BATCH_TRANSFER_FROM,
    }
)
_WORD = 32
_DELEGATECALL = 1
_ADDRESS_MASK = (1 << 160) - 1


class Move(NamedTuple):
    """Value a call would move: ``asset`` is ``native``, the token contract, or
    ``contract/tokenId`` for an NFT (as the block's logs name it)."""

    sender: str
    receiver: str
    asset: str
    amount: int
    kind: TransferKind


class Grant(NamedTuple):
    """Control a call would change, with ``ControlChange``'s meaning of every field."""

    wallet: str
    kind: ControlKind
    subject: str | None
    value: int | None
    contract: str | None


Effect = Move | Grant


class _Malformed(Exception):
    pass


class _Args:
    """The arguments of a call (calldata after the selector), read word by word, strictly."""

    def __init__(self, data: bytes, head_words: int) -> None:
        if len(data) < _WORD * head_words:
            raise _Malformed(f"{len(data)} bytes of arguments, {head_words} words needed")
        self.data = data

    def uint(self, i: int, bits: int = 256) -> int:
        return self._word_at(_WORD * i, bits)

    def address(self, i: int) -> str:
        return "0x" + self.uint(i, 160).to_bytes(20).hex()

    def flag(self, i: int) -> bool:
        return bool(self.uint(i, 1))

    def blob(self, i: int) -> bytes:
        start, length = self._tail(i)
        return self._within(start, length)

    def uints(self, i: int) -> list[int]:
        start, length = self._tail(i)
        self._within(start, _WORD * length)
        return [self._word_at(start + _WORD * k, 256) for k in range(length)]

    def _tail(self, i: int) -> tuple[int, int]:
        offset = self.uint(i)
        return offset + _WORD, self._word_at(offset, 256)

    def _word_at(self, offset: int, bits: int) -> int:
        value = int.from_bytes(self._within(offset, _WORD))
        if value >> bits:
            raise _Malformed(f"word at {offset} does not fit {bits} bits")
        return value

    def _within(self, start: int, length: int) -> bytes:
        if start + length > len(self.data):
            raise _Malformed(f"{length} bytes at {start} run past the {len(self.data)} given")
        return self.data[start : start + length]


def token_call(caller: str, contract: str, data: bytes) -> tuple[Effect, ...]:
    """What a token call by ``caller`` to ``contract`` would move or grant; () when ``data`` is
    no token call of the standards above; a ``malformed_call`` grant when it has a token call's
    selector but not its arguments."""
    sig = "0x" + data[:4].hex()
    if sig not in _TOKEN_READERS:
        return ()
    try:
        return _TOKEN_READERS[sig](caller, contract, data[4:])
    except _Malformed:
        # A pull puts at stake the account it debits (masked, as a v1 token reads it), not
        # the caller's: a dirty-``from`` transferFrom against a cold wallet is the cold
        # wallet's business.
        debited = debited_by_pull("0x" + data.hex()) if sig in PULLS else None
        return (malformed(debited or caller, contract),)


def exec_transaction(safe: str, data: bytes) -> tuple[Effect, ...]:
    """What a Safe ``execTransaction`` call to ``safe`` would do; () when ``data`` is not one."""
    if "0x" + data[:4].hex() != EXEC_TRANSACTION:
        return ()
    lax_target = _lax_delegatecall(data[4:])
    try:
        a = _Args(data[4:], 10)
        to, value, inner, operation = a.address(0), a.uint(1), a.blob(2), a.uint(3, 8)
        # Gas and refund words are read only to be checked: the refund (gasPrice > 0) pays
        # the relayer from the Safe, a cost of execution, not reported here.
        _ = (a.uint(4), a.uint(5), a.uint(6), a.address(7), a.address(8), a.blob(9))
        if operation > _DELEGATECALL:  # Safe's Enum.Operation: a strict decoder reverts
            raise _Malformed(f"operation {operation}")
    except _Malformed:
        if lax_target is not None:  # a v1 Safe masks and delegatecalls all the same
            return (Grant(safe, ControlKind.DELEGATE_CALL, lax_target, LAX_ENCODING, None),)
        return (malformed(safe, safe),)
    if operation == _DELEGATECALL:
        # The inner data is the target's business, run in the Safe's storage: whatever its
        # selector says (Bybit's said "transfer"), it is not a token call of the Safe.
        return (Grant(safe, ControlKind.DELEGATE_CALL, to, None, None),)
    effects: list[Effect] = []
    if value:
        effects.append(Move(safe, to, NATIVE_ASSET_ID, value, TransferKind.INTERNAL))
    if to == safe:
        effects += safe_self_call(safe, inner)
    else:
        effects += token_call(safe, to, inner)
    return tuple(effects)


def _lax_delegatecall(args: bytes) -> str | None:
    """The masked ``to`` of an ``execTransaction`` whose ``operation`` word, masked to 8 bits
    as an ABI coder v1 Safe reads it, is DELEGATECALL; None otherwise (or when the head words
    ``to`` .. ``operation`` are not all there: no Safe runs that)."""
    if len(args) < 4 * _WORD:
        return None
    if int.from_bytes(args[3 * _WORD : 4 * _WORD]) & 0xFF != _DELEGATECALL:
        return None
    to = int.from_bytes(args[:_WORD]) & _ADDRESS_MASK
    return "0x" + to.to_bytes(20).hex()


def safe_self_call(safe: str, data: bytes) -> tuple[Effect, ...]:
    """The control changes of a Safe's call to itself (its ``authorized`` functions)."""
    sig = "0x" + data[:4].hex()
    if sig not in _SELF_READERS:
        return ()
    try:
        return _SELF_READERS[sig](safe, _Args(data[4:], _SELF_WORDS[sig]))
    except _Malformed:
        return (malformed(safe, safe),)


def debited_by_pull(data_hex: str) -> str | None:
    """The account a pull (``transferFrom`` / ``safe(Batch)TransferFrom``) in ``0x`` calldata
    would debit: its first word masked to 160 bits, as an ABI coder v1 token (USDT) reads it,
    dirty high bytes or not; None when it is no pull or the word is not there (or not hex). A
    cheap look at any pool transaction, before it is parsed."""
    if data_hex[:10].lower() not in PULLS or len(data_hex) < 10 + 64:
        return None
    word = data_hex[10:74].lower()
    if any(c not in "0123456789abcdef" for c in word):
        return None
    return "0x" + word[24:]


def malformed(wallet: str, contract: str) -> Grant:
    return Grant(wallet, ControlKind.MALFORMED_CALL, None, None, contract)


def _transfer(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 2)
    return (Move(caller, a.address(0), contract, a.uint(1), TransferKind.TOKEN),)


def _transfer_from(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 3)
    return (Move(a.address(0), a.address(1), contract, a.uint(2), TransferKind.TOKEN),)


def _approve(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 2)
    return (Grant(caller, ControlKind.APPROVAL, a.address(0), a.uint(1), contract),)


def _safe_transfer_721(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 3)
    asset = f"{contract}/{a.uint(2)}"
    return (Move(a.address(0), a.address(1), asset, 1, TransferKind.TOKEN),)


def _safe_transfer_721_data(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    _Args(args, 4).blob(3)
    return _safe_transfer_721(caller, contract, args)


def _safe_transfer_1155(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 5)
    a.blob(4)
    asset = f"{contract}/{a.uint(2)}"
    return (Move(a.address(0), a.address(1), asset, a.uint(3), TransferKind.TOKEN),)


def _safe_batch_1155(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 5)
    sender, receiver, ids, amounts = a.address(0), a.address(1), a.uints(2), a.uints(3)
    a.blob(4)
    if len(ids) != len(amounts):  # ERC-1155 requires it: the call reverts
        raise _Malformed(f"{len(ids)} ids, {len(amounts)} amounts")
    return tuple(
        Move(sender, receiver, f"{contract}/{token_id}", amount, TransferKind.TOKEN)
        for token_id, amount in zip(ids, amounts, strict=True)
    )


def _set_approval_for_all(caller: str, contract: str, args: bytes) -> tuple[Effect, ...]:
    a = _Args(args, 2)
    kind = ControlKind.APPROVAL_FOR_ALL
    return (Grant(caller, kind, a.address(0), int(a.flag(1)), contract),)


_TOKEN_READERS = {
    TRANSFER: _transfer,
    TRANSFER_FROM: _transfer_from,
    APPROVE: _approve,
    INCREASE_ALLOWANCE: _approve,
    SAFE_TRANSFER_FROM_721: _safe_transfer_721,
    SAFE_TRANSFER_FROM_721_DATA: _safe_transfer_721_data,
    SAFE_TRANSFER_FROM_1155: _safe_transfer_1155,
    SAFE_BATCH_TRANSFER_FROM: _safe_batch_1155,
    SET_APPROVAL_FOR_ALL: _set_approval_for_all,
}


def _add_owner(safe: str, a: _Args) -> tuple[Effect, ...]:
    return (
        Grant(safe, ControlKind.OWNER_ADDED, a.address(0), None, None),
        Grant(safe, ControlKind.THRESHOLD_CHANGED, None, a.uint(1), None),
    )


def _remove_owner(safe: str, a: _Args) -> tuple[Effect, ...]:
    a.address(0)  # the previous owner in the Safe's linked list: strictly an address too
    return (
        Grant(safe, ControlKind.OWNER_REMOVED, a.address(1), None, None),
        Grant(safe, ControlKind.THRESHOLD_CHANGED, None, a.uint(2), None),
    )


def _swap_owner(safe: str, a: _Args) -> tuple[Effect, ...]:
    a.address(0)
    return (
        Grant(safe, ControlKind.OWNER_REMOVED, a.address(1), None, None),
        Grant(safe, ControlKind.OWNER_ADDED, a.address(2), None, None),
    )


def _one_address(kind: ControlKind) -> Callable[[str, _Args], tuple[Effect, ...]]:
    def read(safe: str, a: _Args) -> tuple[Effect, ...]:
        return (Grant(safe, kind, a.address(0), None, None),)

    return read


def _threshold(safe: str, a: _Args) -> tuple[Effect, ...]:
    return (Grant(safe, ControlKind.THRESHOLD_CHANGED, None, a.uint(0), None),)


_SELF_READERS: dict[str, Callable[[str, _Args], tuple[Effect, ...]]] = {
    ADD_OWNER_WITH_THRESHOLD: _add_owner,
    REMOVE_OWNER: _remove_owner,
    SWAP_OWNER: _swap_owner,
    CHANGE_THRESHOLD: _threshold,
    SET_GUARD: _one_address(ControlKind.GUARD_CHANGED),
    ENABLE_MODULE: _one_address(ControlKind.MODULE_ENABLED),
    CHANGE_MASTER_COPY: _one_address(ControlKind.MASTER_COPY_CHANGED),
    SET_FALLBACK_HANDLER: _one_address(ControlKind.FALLBACK_HANDLER_CHANGED),
}
_SELF_WORDS = {
    ADD_OWNER_WITH_THRESHOLD: 2,
    REMOVE_OWNER: 3,
    SWAP_OWNER: 3,
    CHANGE_THRESHOLD: 1,
    SET_GUARD: 1,
    ENABLE_MODULE: 1,
    CHANGE_MASTER_COPY: 1,
    SET_FALLBACK_HANDLER: 1,
}
