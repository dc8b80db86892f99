"""The scripts a Bitcoin watcher looks for: each wallet's configured addresses, plus the scripts
derived from its xpubs and output descriptors, kept a gap limit ahead of the highest used index.

A bare xpub is read by its SLIP-132 prefix: ``xpub``/``tpub`` → ``pkh`` (BIP44), ``ypub``/``upub``
→ ``sh(wpkh)`` (BIP49), ``zpub``/``vpub`` → ``wpkh`` (BIP84), each on the receive chain ``/0/*``
and the change chain ``/1/*``. A BIP84 or BIP86 account exported as a plain ``xpub`` must be
written as a descriptor (``wpkh(xpub…/<0;1>/*)``, ``tr(xpub…/<0;1>/*)``): guessing the script
type would watch the wrong addresses and miss every outflow. ``Ypub``/``Zpub``/``Upub``/``Vpub``
are keys of one multisig cosigner, which says nothing of the others: refused, with a pointer to
``wsh(sortedmulti(…))``.

embit parses descriptors, derives keys and builds scripts; addresses come from
``watchers.bitcoin.script`` with the chain's ``BitcoinAddressParams`` (embit's network tables
know no custom prefixes such as bcoin regtest's). embit does not verify a ``#checksum``: it is
checked here. Every ranged (source, branch) keeps an embit descriptor whose keys are already
derived down to the step before the wildcard, so one more index costs one child derivation per
key (about twice embit's own ``derive(i, branch_index=b)``, which starts from the xpub).

A non-ranged descriptor (no ``*``) is one script with index None (branch None unless it is
multipath). A single-path ranged descriptor's branch is the step before ``*`` when that is 0
or 1, else 0; a multipath one's is the position in ``<0;1>``.

Errors are ``ValueError`` naming the wallet and config entry; they show the descriptor's shape
with every key replaced by ``KEY``, never key material.

Concurrency: one thread writes (``mark_used``), others read (``get``, ``owner_of_address``).
Reads are single dict look-ups, writes only add entries (never iterate a dict under change),
and ``scripts`` copies under the writer's lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from embit.descriptor import Descriptor
from embit.descriptor.arguments import AllowedDerivation, KeyOrigin

from drainwatch.addresses import (
    BitcoinAddressParams,
    InvalidAddress,
    decode_extended_key,
    normalise_bitcoin_address,
)
from drainwatch.config_descriptors import descriptor_checksum
from drainwatch.model import Wallet
from watchers.bitcoin.script import address_script, script_address

#: Bare-xpub script types by SLIP-132 prefix: (descriptor opening, closing).
_XPUB_FORMS = {
    "xpub": ("pkh(", ")"),
    "tpub": ("pkh(", ")"),
    "ypub": ("sh(wpkh(", "))"),
    "upub": ("sh(wpkh(", "))"),
    "zpub": ("wpkh(", ")"),
    "vpub": ("wpkh(", ")"),
}
_MULTISIG_PREFIXES = ("Ypub", "Zpub", "Upub", "Vpub")
#: An extended key (111 base58 characters) with the derivation steps that follow it.
_EXTENDED_WITH_PATH = re.compile(r"[1-9A-HJ-NP-Za-km-z]{100,}((?:/[^/,()]+)*)")
_KEY_LIKE = re.compile(r"[0-9A-Za-z]{20,}")
_NO_ORIGIN = b"\x00\x00\x00\x00"


@dataclass(frozen=True)
class WatchedScript:
    """One scriptPubKey of a wallet and where it came from."""

    wallet: str
    address: str  # for the chain's params; bech32 in lower case
    source: str | None  # "xpubs[0]", "descriptors[1]"; None for a configured address
    branch: int | None  # 0 receive, 1 change; None for an address or a non-ranged descriptor
    index: int | None  # child index; None for an address or a non-ranged descriptor


@dataclass
class _Chain:
    """One ranged (source, branch): indices ``0 .. derived-1`` are watched."""

    wallet: str
    source: str
    branch: int
    template: Any  # embit Descriptor whose keys stop just before the wildcard
    derived: int = 0


class ScriptBook:
    """Every watched script of the given wallets, by scriptPubKey bytes."""

    def __init__(
        self, wallets: Sequence[Wallet], params: BitcoinAddressParams, *, gap_limit: int = 20
    ) -> None:
        if gap_limit < 1:
            raise ValueError("gap_limit must be at least 1")
        self._params = params
        self._gap = gap_limit
        self._hrp = params.bech32_hrp.lower() + "1"
        self._scripts: dict[bytes, WatchedScript] = {}
        self._owners: dict[str, str] = {}
        self._chains: dict[tuple[str, str, int], _Chain] = {}
        self._lock = threading.Lock()
        for wallet in wallets:
            sources = [(f"xpubs[{i}]", x, True) for i, x in enumerate(wallet.xpubs)]
            sources += [(f"descriptors[{i}]", d, False) for i, d in enumerate(wallet.descriptors)]
            for source, text, bare in sources:
                try:
                    descriptor = _xpub_descriptor(text) if bare else text
                    self._add_descriptor(wallet.name, source, descriptor)
                except ValueError as exc:
                    raise ValueError(f"wallet {wallet.name!r} {source}: {exc}") from None
                except Exception:  # embit's own errors quote keys: say only where
                    raise ValueError(
                        f"wallet {wallet.name!r} {source}: cannot derive scripts from it"
                    ) from None
            for i, address in enumerate(wallet.addresses):
                try:
                    text = normalise_bitcoin_address(address, params)
                    script = address_script(text, params)
                except InvalidAddress as exc:
                    raise ValueError(f"wallet {wallet.name!r} addresses[{i}]: {exc}") from None
                self._add(script, WatchedScript(wallet.name, text, None, None, None), strict=True)

    # --- reading (any thread) ------------------------------------------------------------------

    def get(self, script: bytes) -> WatchedScript | None:
        return self._scripts.get(script)

    def owner_of_address(self, address: str) -> str | None:
        """The wallet watching ``address``; bech32 is compared case-insensitively."""
        owner = self._owners.get(address)
        if owner is None and address[: len(self._hrp)].lower() == self._hrp:
            owner = self._owners.get(address.lower())
        return owner

    @property
    def scripts(self) -> Mapping[bytes, WatchedScript]:
        """A read-only snapshot of every watched script."""
        with self._lock:
            return MappingProxyType(dict(self._scripts))

    def __len__(self) -> int:
        return len(self._scripts)

    # --- writing (one thread) ------------------------------------------------------------------

    def mark_used(self, script: bytes) -> int:
        """An output paid ``script``: derive its chain up to index + gap limit (inclusive).

        Returns how many scripts were added; 0 for an unknown or non-derived script."""
        watched = self._scripts.get(script)
        if watched is None or watched.source is None or watched.branch is None:
            return 0
        chain = self._chains.get((watched.wallet, watched.source, watched.branch))
        if chain is None or watched.index is None:
            return 0
        with self._lock:
            return self._extend(chain, watched.index + self._gap + 1, strict=False)

    def _add_descriptor(self, wallet: str, source: str, text: str) -> None:
        parsed = _parse_descriptor(text)
        branches = parsed.num_branches
        for b in range(branches):
            template = parsed.branch(b if branches > 1 else None)
            label = _branch_label(template) if branches == 1 else b
            _derive_to_wildcard(template)
            if not parsed.is_wildcard:
                script = template.script_pubkey().data
                branch = b if branches > 1 else None
                entry = WatchedScript(wallet, self._address(script), source, branch, None)
                self._add(script, entry, strict=True)
                continue
            chain = _Chain(wallet, source, label, template)
            self._chains[(wallet, source, label)] = chain
            self._extend(chain, self._gap, strict=True)

    def _extend(self, chain: _Chain, end: int, *, strict: bool) -> int:
        """Derive ``chain`` up to index ``end - 1``; how many scripts are new."""
        added = 0
        while chain.derived < end:
            index = chain.derived
            script = chain.template.derive(index).script_pubkey().data
            entry = WatchedScript(
                chain.wallet, self._address(script), chain.source, chain.branch, index
            )
            added += self._add(script, entry, strict=strict)
            chain.derived = index + 1
        return added

    def _add(self, script: bytes, entry: WatchedScript, *, strict: bool) -> bool:
        """Watch ``script``; the first entry of a script stays. ``strict`` refuses a script that
        two wallets claim (while extending, the first claim is kept rather than stop the
        watcher)."""
        existing = self._scripts.get(script)
        if existing is not None:
            if strict and existing.wallet != entry.wallet:
                raise ValueError(
                    f"address {entry.address} belongs to both wallet {existing.wallet!r} "
                    f"and wallet {entry.wallet!r}"
                )
            return False
        self._scripts[script] = entry
        self._owners[entry.address] = entry.wallet
        return True

    def _address(self, script: bytes) -> str:
        address = script_address(script, self._params)
        if address is None:  # every descriptor form accepted here pays to an address
            raise ValueError("derived a script that has no address form")
        return address


# --- descriptors -------------------------------------------------------------------------------


def _xpub_descriptor(xpub: str) -> str:
    """The descriptor a bare extended public key stands for (see the module docstring)."""
    try:
        version = decode_extended_key(xpub)
    except InvalidAddress as exc:
        raise ValueError(f"not an extended public key ({exc})") from None
    if version.private:
        raise ValueError("an extended PRIVATE key; drainwatch is watch-only: give the public key")
    if version.prefix in _MULTISIG_PREFIXES:
        raise ValueError(
            f"a {version.prefix} key is one cosigner of a multisig wallet and cannot be watched "
            "alone: write the wallet as a descriptor, e.g. "
            "wsh(sortedmulti(k,xpub1/<0;1>/*,xpub2/<0;1>/*,...))"
        )
    opening, closing = _XPUB_FORMS[version.prefix]
    return f"{opening}{xpub}/<0;1>/*{closing}"


def _parse_descriptor(text: str) -> Any:
    """An embit Descriptor of public keys; raises ValueError showing only the shape."""
    body, sep, checksum = text.strip().partition("#")
    shape = _shape(body)
    try:
        if sep and checksum != descriptor_checksum(body):
            raise ValueError("checksum (after #) does not match")
    except InvalidAddress as exc:
        raise ValueError(f"{exc}: {shape}") from None
    for match in _EXTENDED_WITH_PATH.finditer(re.sub(r"\[[^\]]*\]", "", body)):
        if re.search(r"['hH]", match.group(1)):
            raise ValueError(
                "a hardened step after an extended public key needs the private key; give the "
                f"xpub at the last hardened level (e.g. [fingerprint/84h/0h/0h]xpub…/<0;1>/*): "
                f"{shape}"
            )
    try:
        parsed = Descriptor.from_string(body)
    except Exception:  # embit raises assorted types whose messages quote the keys
        raise ValueError(f"not a descriptor this program can derive: {shape}") from None
    if any(key.is_private for key in parsed.keys):
        raise ValueError(f"holds a private key; drainwatch is watch-only: {shape}")
    return parsed


def _shape(body: str) -> str:
    shape = _KEY_LIKE.sub("KEY", body)
    return shape if len(shape) <= 200 else shape[:200] + "…"


def _branch_label(template: Any) -> int:
    """Of a single-path descriptor: the step before ``*`` of its first ranged key when that is
    0 (receive) or 1 (change), else 0."""
    for key in template.keys:
        derivation = key.allowed_derivation
        if derivation is None or not derivation.is_wildcard:
            continue
        steps = derivation.indexes
        wildcard = steps.index(None)
        if wildcard > 0 and steps[wildcard - 1] in (0, 1):
            return int(steps[wildcard - 1])
        return 0
    return 0


def _derive_to_wildcard(template: Any) -> None:
    """Derive each extended key of a one-branch descriptor down to the step before its
    wildcard (in place), so that ``template.derive(i)`` costs one child derivation per key."""
    for key in template.keys:
        if not key.is_extended or key.allowed_derivation is None:
            continue
        steps = key.allowed_derivation.indexes
        if None in steps:
            wildcard = steps.index(None)
            key.key = key.key.derive(steps[:wildcard])
            key.allowed_derivation = AllowedDerivation([None, *steps[wildcard + 1 :]])
        else:
            key.key = key.key.derive(steps)
            key.allowed_derivation = None
        if key.origin is None:
            # without an origin, embit derives child 0 on every index just for a fingerprint
            key.origin = KeyOrigin(_NO_ORIGIN, [])
