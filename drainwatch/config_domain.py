"""Validated config sections → domain objects (drainwatch.model), and the value conversions
that both the checks and the conversion need: address normalisation and exact base units."""

from __future__ import annotations

from decimal import Decimal

from drainwatch.addresses import InvalidAddress, normalise_bitcoin_address, to_checksum
from drainwatch.config_models import ChainSettings, LimitSettings, WalletSettings
from drainwatch.model import Asset, AssetKind, Chain, ChainKind, Custody, Limit, Wallet


def normalise_address(chain: ChainSettings, address: str) -> str:
    """EIP-55 form on EVM chains; bech32 lower-cased on Bitcoin. Raises ``InvalidAddress``."""
    if chain.kind is ChainKind.EVM:
        return to_checksum(address)
    if chain.network not in ("mainnet", "testnet", "signet", "regtest"):
        raise InvalidAddress("the chain's network is not a Bitcoin network")
    return normalise_bitcoin_address(address, chain.address_params())


def address_key(chain: ChainSettings, address: str) -> str:
    """The form two addresses are compared in (EVM: case-insensitive)."""
    normal = normalise_address(chain, address)
    return normal.lower() if chain.kind is ChainKind.EVM else normal


def to_base_units(amount: Decimal, decimals: int) -> int:
    """Display units → base units, exactly; more fractional digits than ``decimals`` is an error."""
    scaled = amount.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"has more than {decimals} decimal places, the asset's precision")
    return int(scaled)


def chain_assets(name: str, chain: ChainSettings) -> list[Asset]:
    """The native coin first, then the configured tokens (contracts in EIP-55 form)."""
    assets = [Asset(chain=name, symbol=chain.native_symbol, decimals=chain.native_decimals)]
    for token in chain.tokens:
        assets.append(
            Asset(
                chain=name,
                symbol=token.symbol,
                decimals=token.decimals,
                kind=AssetKind.TOKEN,
                contract=to_checksum(token.contract),
            )
        )
    return assets


def to_chain(name: str, chain: ChainSettings) -> Chain:
    return Chain(
        name=name,
        kind=chain.kind,
        network=chain.network,
        native_symbol=chain.native_symbol,
        native_decimals=chain.native_decimals,
        chain_id=chain.chain_id,
        confirmations=chain.confirmations,
        explorer_tx_url=chain.explorer_tx_url,
    )


def to_limit(asset: Asset, limit: LimitSettings) -> Limit:
    def units(amount: Decimal | None) -> int | None:
        return None if amount is None else to_base_units(amount, asset.decimals)

    return Limit(
        asset=asset.asset_id,
        max_single=units(limit.max_single),
        max_window=units(limit.max_window),
        window_seconds=limit.window_seconds,
    )


def to_wallet(name: str, wallet: WalletSettings, chain: ChainSettings) -> Wallet:
    by_symbol = {a.symbol: a for a in chain_assets(wallet.chain, chain)}
    custody = Custody(
        kind=wallet.custody.kind,
        threshold=wallet.custody.threshold,
        signers=wallet.custody.signers,
        location=wallet.location,
    )
    return Wallet(
        name=name,
        chain=wallet.chain,
        role=wallet.role,
        custody=custody,
        addresses=tuple(normalise_address(chain, a) for a in wallet.addresses),
        xpubs=wallet.xpubs,
        descriptors=wallet.descriptors,
        limits=tuple(to_limit(by_symbol[s], lim) for s, lim in wallet.limits.items()),
        allowlist=tuple(normalise_address(chain, a) for a in wallet.allowlist),
        location=wallet.location,
    )
