"""Balances of watched EVM wallets after a block that moved value out of them.

The balance-fall rule compares a wallet's balance over a window; an EVM chain keeps no history a
watcher could sum (an address's balance at the start of watching is unknown), so the node is
asked, at the block's height, for exactly the wallets and assets the block's outflows touched:
``eth_getBalance`` for the native coin and ERC-20 ``balanceOf`` (an ``eth_call``) for tokens,
at the block and at the block before it. A wallet with several addresses has their sum.
Nothing is asked for a block without an outflow.

A node that cannot answer for that height (a pruned node catching up on old blocks, a token
whose ``balanceOf`` reverts) loses that one reading, said once per wallet and asset: the
transfers and their alerts never wait for a balance. A transient failure (timeout, rate limit)
holds the block back like any other read, so that it is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from drainwatch.errors import BadInput, RetriableRpcError, RpcError
from drainwatch.events import BalanceSeen
from drainwatch.model import NATIVE_ASSET_ID, Balance, BlockRef, Transfer
from drainwatch.ports import JsonRpc
from watchers.evm.mapping import parse_quantity

log = logging.getLogger(__name__)

_BALANCE_OF = "0x70a08231"  # balanceOf(address)


class BalanceReader:
    def __init__(
        self,
        chain: str,
        rpc: JsonRpc,
        wallets: Mapping[str, str],
        *,
        notice: Callable[[str], None] = log.warning,
    ) -> None:
        """``wallets`` maps each watched address (any case) to its wallet's name."""
        self._chain = chain
        self._rpc = rpc
        self._wallet_of = {a.lower(): w for a, w in wallets.items()}
        self._addresses: dict[str, list[str]] = {}
        for address, wallet in self._wallet_of.items():
            self._addresses.setdefault(wallet, []).append(address)
        self._notice = notice
        self._unreadable: set[tuple[str, str]] = set()

    def after(
        self, block: BlockRef, time: datetime, transfers: Iterable[Transfer]
    ) -> list[BalanceSeen]:
        """The balances of every (wallet, asset) that ``transfers`` moved value out of."""
        wanted: dict[tuple[str, str], None] = {}
        for t in transfers:
            wallet = self._wallet_of.get(t.from_address.lower())
            if wallet is not None and t.amount > 0:
                wanted[(wallet, t.asset)] = None
        out: list[BalanceSeen] = []
        for wallet, asset in wanted:
            after = self._read(wallet, asset, block.height)
            before = self._read(wallet, asset, block.height - 1) if block.height else 0
            if after is not None and before is not None:
                balance = Balance(self._chain, wallet, asset, after, before, block, time)
                out.append(BalanceSeen(balance))
        return out

    def _read(self, wallet: str, asset: str, height: int) -> int | None:
        total = 0
        try:
            for address in self._addresses[wallet]:
                total += self._one(address, asset, height)
        except RetriableRpcError:
            raise
        except (RpcError, BadInput) as exc:
            if (wallet, asset) not in self._unreadable:
                self._unreadable.add((wallet, asset))
                self._notice(
                    f"{self._chain}: the balance of {wallet} in {asset} at block {height} could "
                    f"not be read ({exc}): the balance-fall rule skips that reading / {wallet} の"
                    f"残高（{asset}、ブロック {height}）を取得できないため、"
                    "残高急減ルールの判定から除外します"
                )
            return None
        return total

    def _one(self, address: str, asset: str, height: int) -> int:
        where = hex(height)
        if asset == NATIVE_ASSET_ID:
            raw = self._rpc.call("eth_getBalance", [address, where])
            return parse_quantity(raw, self._rpc.endpoint, "eth_getBalance")
        data = _BALANCE_OF + address.removeprefix("0x").rjust(64, "0")
        raw = self._rpc.call("eth_call", [{"to": asset, "data": data}, where])
        if not isinstance(raw, str) or not raw.startswith("0x") or len(raw) != 66:
            raise BadInput(f"{self._rpc.endpoint}: balanceOf of {asset} answered {raw!r}")
        return int(raw, 16)
