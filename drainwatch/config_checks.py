"""Checks across fields of a schema-valid config, each naming the exact field path.

``problems(settings)`` yields ``(path, reason)`` pairs in file order; the loader reports the
first. Kept apart from the pydantic models because a model validator can only blame the whole
model, while a user needs to be told which address or which limit is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from drainwatch.addresses import NETWORK_PARAMS, InvalidAddress, check_xpub, is_valid_evm_address
from drainwatch.config_descriptors import check_descriptor
from drainwatch.config_domain import address_key, to_base_units
from drainwatch.config_models import ChainSettings, LimitSettings, WalletSettings
from drainwatch.config_yaml import FieldPath, format_path
from drainwatch.model import ChainKind, CustodyKind

if TYPE_CHECKING:
    from drainwatch.config import Settings

Problem = tuple[FieldPath, str]


def problems(settings: Settings) -> Iterator[Problem]:
    if settings.bus.kind == "kafka" and not settings.bus.bootstrap_servers:
        yield ("bus", "bootstrap_servers"), "kind: kafka needs at least one host:port"
    if settings.bus.kind == "inprocess" and settings.bus.bootstrap_servers:
        yield ("bus", "bootstrap_servers"), "only used with kind: kafka"
    if settings.bus.heartbeat_interval_ms * 3 > settings.bus.session_timeout_ms:
        yield ("bus", "heartbeat_interval_ms"), "must be at most a third of session_timeout_ms"
    if settings.alerts.expectations.kafka and settings.bus.kind != "kafka":
        yield (
            ("alerts", "expectations", "kafka"),
            "needs bus.kind: kafka (an in-process bus cannot be reached by the withdrawal "
            "system: use alerts.expectations.inbox or `drainwatch expect`) / "
            "Kafka バスが必要です（inbox または drainwatch expect を使用してください）",
        )
    for name, chain in settings.chains.items():
        yield from _chain_problems(("chains", name), chain)
    # (chain, normalised address): one EOA or Safe address may be reused on several EVM chains,
    # but an address is listed at most once per chain.
    seen: dict[tuple[str, str], FieldPath] = {}
    for name, wallet in settings.wallets.items():
        wallet_chain = settings.chains.get(wallet.chain)
        path: FieldPath = ("wallets", name)
        if wallet_chain is None:
            declared = ", ".join(settings.chains)
            yield (*path, "chain"), f"chain {wallet.chain!r} is not declared (chains: {declared})"
            continue
        yield from _wallet_problems(path, wallet, wallet_chain, seen)


def _chain_problems(path: FieldPath, chain: ChainSettings) -> Iterator[Problem]:
    evm = chain.kind is ChainKind.EVM
    if evm and chain.chain_id is None:
        yield (*path, "chain_id"), "required for an evm chain (e.g. 1 for Ethereum mainnet)"
    if not evm:
        for field in ("chain_id", "tokens"):
            if field in chain.model_fields_set:
                yield (*path, field), "not allowed on a bitcoin chain"
        if chain.network not in NETWORK_PARAMS:
            yield (*path, "network"), "a bitcoin network is mainnet, testnet, signet or regtest"
    if evm and chain.address_prefixes is not None:
        yield (*path, "address_prefixes"), "only allowed on a bitcoin chain"
    if evm and "gap_limit" in chain.model_fields_set:
        yield (*path, "gap_limit"), "only allowed on a bitcoin chain"
    for i, endpoint in enumerate(chain.rpc):
        if not evm and endpoint.url and urlsplit(endpoint.url).scheme in ("ws", "wss"):
            yield (
                (*path, "rpc", i, "url"),
                "Bitcoin Core serves JSON-RPC over http(s) only, not WebSocket",
            )
    url = chain.explorer_tx_url
    if url is not None and ("{tx}" not in url or urlsplit(url).scheme not in ("http", "https")):
        yield (*path, "explorer_tx_url"), "must be an http(s) URL containing {tx}"
    symbols = {chain.native_symbol}
    for i, token in enumerate(chain.tokens):
        if not is_valid_evm_address(token.contract):
            yield (*path, "tokens", i, "contract"), _EVM_HINT
        if token.symbol in symbols:
            yield (*path, "tokens", i, "symbol"), "symbol used twice on this chain"
        symbols.add(token.symbol)


_EVM_HINT = "not a valid EVM address (0x + 40 hex digits; EIP-55 checksum must match if mixed case)"


def _address_reason(chain: ChainSettings, exc: InvalidAddress) -> str:
    if chain.kind is ChainKind.EVM:
        return _EVM_HINT
    return f"not a valid {chain.network} Bitcoin address: {exc}"


def _wallet_problems(
    path: FieldPath,
    wallet: WalletSettings,
    chain: ChainSettings,
    seen: dict[tuple[str, str], FieldPath],
) -> Iterator[Problem]:
    if not (wallet.addresses or wallet.xpubs or wallet.descriptors):
        yield path, "a wallet needs at least one of addresses, xpubs or descriptors"
    yield from _custody_problems((*path, "custody"), wallet)
    for i, address in enumerate(wallet.addresses):
        try:
            key = (wallet.chain, address_key(chain, address))
        except InvalidAddress as exc:
            yield (*path, "addresses", i), _address_reason(chain, exc)
            continue
        if key in seen:
            yield (
                (*path, "addresses", i),
                f"address already listed on chain {wallet.chain} at {format_path(seen[key])}",
            )
        seen.setdefault(key, (*path, "addresses", i))
    yield from _bitcoin_key_problems(path, wallet, chain)
    for symbol, limit in wallet.limits.items():
        yield from _limit_problems((*path, "limits", symbol), symbol, limit, chain)
    for i, address in enumerate(wallet.allowlist):
        try:
            address_key(chain, address)
        except InvalidAddress as exc:
            yield (*path, "allowlist", i), _address_reason(chain, exc)


def _custody_problems(path: FieldPath, wallet: WalletSettings) -> Iterator[Problem]:
    custody = wallet.custody
    if len(set(custody.signers)) != len(custody.signers):
        yield (*path, "signers"), "a signer is listed twice"
    if custody.kind is CustodyKind.MULTISIG and custody.threshold is None:
        yield (*path, "threshold"), "multisig needs a threshold (m of m-of-n)"
    if custody.threshold is None:
        return
    if custody.kind in (CustodyKind.SINGLE_KEY, CustodyKind.HSM):
        yield (*path, "threshold"), f"not used with kind: {custody.kind.value}"
    elif custody.threshold > len(custody.signers):
        yield (
            (*path, "threshold"),
            (
                f"threshold {custody.threshold} is more than the "
                f"{len(custody.signers)} signers listed"
            ),
        )


def _bitcoin_key_problems(
    path: FieldPath, wallet: WalletSettings, chain: ChainSettings
) -> Iterator[Problem]:
    if chain.kind is ChainKind.EVM:
        for field in ("xpubs", "descriptors"):
            if getattr(wallet, field):
                yield (*path, field), "only for bitcoin wallets"
        return
    mainnet = chain.network == "mainnet"
    for i, xpub in enumerate(wallet.xpubs):
        try:
            check_xpub(xpub, mainnet)
        except InvalidAddress as exc:
            yield (*path, "xpubs", i), f"not a valid extended public key: {exc}"
    for i, descriptor in enumerate(wallet.descriptors):
        try:
            check_descriptor(descriptor, mainnet)
        except InvalidAddress as exc:
            yield (*path, "descriptors", i), f"not an accepted descriptor: {exc}"


def _limit_problems(
    path: FieldPath, symbol: str, limit: LimitSettings, chain: ChainSettings
) -> Iterator[Problem]:
    decimals = {chain.native_symbol: chain.native_decimals}
    decimals.update((t.symbol, t.decimals) for t in chain.tokens)
    if symbol not in decimals:
        yield path, f"unknown asset on this chain (known: {', '.join(decimals)})"
        return
    if limit.max_single is None and limit.max_window is None:
        yield path, "set max_single, max_window (with window_seconds) or both"
    if limit.max_window is not None and limit.window_seconds is None:
        yield (*path, "window_seconds"), "max_window needs window_seconds"
    if limit.window_seconds is not None and limit.max_window is None:
        yield (*path, "max_window"), "window_seconds is only used with max_window"
    for field in ("max_single", "max_window"):
        amount = getattr(limit, field)
        if amount is None:
            continue
        try:
            to_base_units(amount, decimals[symbol])
        except ValueError as exc:
            yield (*path, field), f"{symbol} amount {exc}"
    if limit.max_single and limit.max_window and limit.max_single > limit.max_window:
        yield (*path, "max_single"), "is larger than max_window"
