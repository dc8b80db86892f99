"""Implementation changes of watched contract wallets, read from storage block by block.

An upgrade does not have to announce itself: the Feb 2025 Safe drain swapped the singleton of a
multisig by a delegate call that emitted nothing a log filter would catch, and then moved the
funds. So for every watched address that is a contract, the EIP-1967 implementation slot is
compared with its value in the parent block, and for multisig (Safe) wallets slot 0, where a Safe
proxy keeps its singleton. Slot 0 is read only for multisig wallets: in other contracts it is
ordinary state, and a change there means nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drainwatch.errors import MalformedRpcResponse
from drainwatch.model import ControlChange, ControlKind, TransferStatus
from drainwatch.ports import JsonRpc
from watchers.evm.mapping import EvmBlock

#: bytes32(uint256(keccak256("eip1967.proxy.implementation")) - 1)
EIP1967_IMPLEMENTATION_SLOT = "0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc"
SAFE_SINGLETON_SLOT = "0x0"


@dataclass(frozen=True)
class _Watched:
    address: str
    slot: str
    index: str
    kind: ControlKind


class ImplementationWatch:
    def __init__(
        self, chain: str, rpc: JsonRpc, watched: Iterable[str], safes: Iterable[str] = ()
    ) -> None:
        self.chain = chain
        self._rpc = rpc
        self._watched = sorted({a.lower() for a in watched})
        self._safes = {a.lower() for a in safes}
        self._targets: list[_Watched] | None = None  # found on the first block
        # (address, slot) -> (block hash, value) of the last block read
        self._last: dict[tuple[str, str], tuple[str, str]] = {}

    def changes(self, block: EvmBlock) -> list[ControlChange]:
        if self._targets is None:
            self._targets = self._find_targets()
        found: list[ControlChange] = []
        for target in self._targets:
            now = self._read(target, block.ref.height)
            before = self._before(target, block)
            self._last[(target.address, target.slot)] = (block.ref.hash, now)
            if now != before and not self._deployed_in(target, block, before):
                found.append(
                    ControlChange(
                        chain=self.chain,
                        index=target.index,
                        wallet_address=target.address,
                        kind=target.kind,
                        status=TransferStatus.CONFIRMED,
                        subject="0x" + now[-40:],
                        block=block.ref,
                        block_time=block.time,
                    )
                )
        return found

    def _find_targets(self) -> list[_Watched]:
        targets: list[_Watched] = []
        for address in self._watched:
            code = self._rpc.call("eth_getCode", [address, "latest"])
            if not isinstance(code, str) or not code.startswith("0x"):
                raise MalformedRpcResponse(self._rpc.endpoint, "eth_getCode", f"{code!r}")
            if code in ("0x", "0x0"):
                continue  # an externally owned account: no storage to watch
            targets.append(
                _Watched(
                    address,
                    EIP1967_IMPLEMENTATION_SLOT,
                    "slot:eip1967",
                    ControlKind.IMPLEMENTATION_CHANGED,
                )
            )
            if address in self._safes:
                targets.append(
                    _Watched(
                        address, SAFE_SINGLETON_SLOT, "slot:0", ControlKind.MASTER_COPY_CHANGED
                    )
                )
        return targets

    def _deployed_in(self, target: _Watched, block: EvmBlock, before: str) -> bool:
        """A wallet deployed in this block sets its implementation in its constructor: that is
        its first state, not a change (only asked when the slot was empty before)."""
        if int(before, 16) != 0 or block.ref.height == 0:
            return False
        code = self._rpc.call("eth_getCode", [target.address, hex(block.ref.height - 1)])
        return code in ("0x", "0x0", None)

    def _before(self, target: _Watched, block: EvmBlock) -> str:
        last = self._last.get((target.address, target.slot))
        if last is not None and last[0] == block.parent_hash:
            return last[1]
        if block.ref.height == 0:
            return "0x" + "00" * 32
        return self._read(target, block.ref.height - 1)

    def _read(self, target: _Watched, height: int) -> str:
        value = self._rpc.call("eth_getStorageAt", [target.address, target.slot, hex(height)])
        if not isinstance(value, str) or not value.startswith("0x"):
            raise MalformedRpcResponse(
                self._rpc.endpoint, "eth_getStorageAt", f"not hex data: {value!r}"
            )
        digits = value[2:].lower()
        if len(digits) > 64 or any(c not in "0123456789abcdef" for c in digits):
            raise MalformedRpcResponse(
                self._rpc.endpoint, "eth_getStorageAt", f"not a 32-byte word: {value!r}"
            )
        return "0x" + digits.rjust(64, "0")
