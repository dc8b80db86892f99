"""Address labels from public lists, in memory: who is behind a destination.

``load_labels([(path, format), ...]) -> LabelBook`` reads the config's label sources; a path may
be a file or a directory (every ``.yaml`` / ``.yml`` / ``.txt`` / ``.json`` / ``.csv`` in it, by
name). ``LabelBook.lookup(family, address)`` gives every label of an address, where ``family`` is
a chain kind (``evm``, ``bitcoin``) or, for other chains, a currency code (``TRX``, ``LTC``).
An EVM address is the same key on every EVM chain (one private key controls it on all of them).

Formats, and how their categories become ours (``sanctioned``, ``mixer``, ``attacker``; any
other category is kept as the source spells it, e.g. ``exchange``, for tracing):

- ``tagpack``: GraphSense TagPack YAML (header fields inherited by every tag). ``abuse:
  sanction`` and a ``source`` on treasury.gov (where OFAC publishes) → sanctioned;
  ``category: mixing_service`` / ``coinjoin`` → mixer; ``abuse`` of ``ATTACK_ABUSES`` →
  attacker. An ActorPack (``actors:``, no ``tags:``) found in a directory is skipped.
- ``ofac``: one address a line (``#`` comments), the currency from a file name such as
  ``sanctioned_addresses_ETH.txt`` (``XBT`` is bitcoin) → sanctioned.
- ``etherscan``: Etherscan's ``combinedAccountLabels.json`` ({address: {name, labels}}), EVM.
- ``csv``: a header ``chain,address,category,name`` (chain: ``evm``, ``bitcoin`` or a currency
  code), or Forta's ``banned_address,wallet_tag,data_source`` (EVM; phishing / hack / exploit /
  heist lists → attacker).

Every problem is a ``ConfigError`` naming the file and, when known, the line. Issue #6 will keep
labels in the store; the interface stays ``lookup``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drainwatch.errors import ConfigError

SANCTIONED, MIXER, ATTACKER = "sanctioned", "mixer", "attacker"
#: GraphSense ``abuse`` values that mark an address of the attacker side of an incident.
ATTACK_ABUSES = frozenset({"service_hack", "hack", "phishing", "ransomware", "exploit"})
_MIXER_CATEGORIES = frozenset({"mixing_service", "coinjoin", "mixer"})
_ETHERSCAN = {
    "ofac-sanctions-lists": SANCTIONED,
    "tornado-cash": MIXER,
    "ethereum-mixer": MIXER,
    "mixer": MIXER,
    "phish-hack": ATTACKER,
    "exploit": ATTACKER,
    "heist": ATTACKER,
}
_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BECH32 = re.compile(r"^(bc|tb|bcrt)1[0-9a-z]+$", re.IGNORECASE)
_BITCOIN = frozenset({"BTC", "XBT", "BITCOIN"})
_SUFFIXES = {"tagpack": (".yaml", ".yml"), "ofac": (".txt",), "etherscan": (".json",)}


@dataclass(frozen=True)
class Label:
    """One label of one address: ``category`` ours when mapped, else the source's own word;
    ``source`` names the list (format and file), ``reference`` the list's own citation."""

    family: str
    address: str
    category: str
    name: str
    source: str
    reference: str | None = None


class LabelBook:
    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self._by_key: dict[tuple[str, str], list[Label]] = {}
        for label in labels:
            entry = self._by_key.setdefault((label.family, _key(label.address)), [])
            if label not in entry:
                entry.append(label)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def lookup(self, family: str, address: str) -> tuple[Label, ...]:
        if _EVM_ADDRESS.match(address):
            family = "evm"
        return tuple(self._by_key.get((family, _key(address)), ()))


def family_of(currency: str | None, address: str) -> str:
    """``evm`` for a 0x address whatever the currency (ETH, USDT, BEP20...), ``bitcoin`` for
    BTC, else the currency code in upper case."""
    if _EVM_ADDRESS.match(address):
        return "evm"
    code = (currency or "").strip().upper()
    return "bitcoin" if code in _BITCOIN else code or "unknown"


def _key(address: str) -> str:
    """EVM and bech32 addresses compare without case, base58 exactly."""
    if _EVM_ADDRESS.match(address) or _BECH32.match(address):
        return address.lower()
    return address


def load_labels(sources: Iterable[tuple[Path, str]]) -> LabelBook:
    labels: list[Label] = []
    for path, fmt in sources:
        for file in _files(path, fmt):
            labels.extend(_READERS[fmt](file, path.is_dir()))
    return LabelBook(labels)


def _files(path: Path, fmt: str) -> list[Path]:
    if fmt not in _READERS:
        raise ConfigError(str(path), f"unknown label format {fmt!r}")
    if path.is_dir():
        suffixes = _SUFFIXES.get(fmt, (".csv",))
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in suffixes)
    if not path.is_file():
        raise ConfigError(str(path), "label file not found / ラベルファイルが見つかりません")
    return [path]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "not UTF-8 text / UTF-8 ではありません") from exc
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from exc


# --- GraphSense TagPacks ---------------------------------------------------------------------


def _tagpack(path: Path, in_directory: bool) -> list[Label]:
    text = _read_text(path)
    try:
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(str(path), f"not valid YAML: {exc.problem}", line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    if isinstance(doc, dict) and "actors" in doc and "tags" not in doc and in_directory:
        return []  # an ActorPack describes actors, it labels no address
    if not isinstance(doc, dict) or not isinstance(doc.get("tags"), list):
        raise ConfigError(str(path), "not a TagPack: no list of tags at the top level", 1)
    header = {k: v for k, v in doc.items() if k != "tags"}
    out: list[Label] = []
    for i, tag in enumerate(doc["tags"]):
        if not isinstance(tag, dict) or not isinstance(tag.get("address"), str):
            line = _tag_line(text, i)
            raise ConfigError(str(path), f"tags[{i}]: a tag needs an address", line)
        out.extend(_tag_labels({**header, **tag}, f"tagpack {path.name}"))
    return out


def _tag_labels(tag: dict[str, Any], source: str) -> Iterator[Label]:
    address = str(tag["address"]).strip()
    family = family_of(str(tag.get("currency") or ""), address)
    name = str(tag.get("label") or tag.get("title") or "")
    reference = str(tag["source"]) if tag.get("source") else None
    category = str(tag.get("category") or "")
    abuse = str(tag.get("abuse") or "")
    ours = []
    if abuse == "sanction" or "treasury.gov" in (reference or ""):
        ours.append(SANCTIONED)
    if category in _MIXER_CATEGORIES:
        ours.append(MIXER)
    if abuse in ATTACK_ABUSES:
        ours.append(ATTACKER)
    for word in ours or [category or abuse or "unknown"]:
        yield Label(family, address, word, name, source, reference)


def _tag_line(text: str, index: int) -> int | None:
    """The line of ``tags[index]``, composed again only to report an error."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    for key, value in getattr(node, "value", []):
        if getattr(key, "value", None) == "tags" and isinstance(value, yaml.SequenceNode):
            return int(value.value[index].start_mark.line) + 1
    return None


# --- OFAC lists, Etherscan labels, CSV -------------------------------------------------------


def _ofac(path: Path, in_directory: bool) -> list[Label]:
    match = re.search(r"_([A-Za-z0-9]+)\.txt$", path.name)
    currency = match.group(1) if match else None
    out = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if re.search(r"[\s,;]", line):
            raise ConfigError(str(path), "expected one address a line", number)
        family = family_of(currency, line)
        out.append(Label(family, line, SANCTIONED, "OFAC SDN list", f"ofac {path.name}"))
    return out


def _etherscan(path: Path, in_directory: bool) -> list[Label]:
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(str(path), f"not valid JSON: {exc.msg}", exc.lineno) from None
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "expected an object {address: {name, labels}}", 1)
    out = []
    for address, entry in doc.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("labels", []), list):
            raise ConfigError(str(path), f"{address}: expected {{name, labels: [...]}}")
        name = str(entry.get("name") or "")
        for slug in entry.get("labels", []):
            category = _ETHERSCAN.get(str(slug), str(slug))
            out.append(Label("evm", address, category, name, f"etherscan {path.name}"))
    return out


_CSV_HEADERS = (("chain", "address", "category", "name"), ("banned_address", "wallet_tag"))


def _csv(path: Path, in_directory: bool) -> list[Label]:
    rows = csv.reader(_read_text(path).splitlines())
    header = tuple(c.strip().lower() for c in next(rows, []))
    forta = header[:2] == _CSV_HEADERS[1]
    if not forta and header != _CSV_HEADERS[0]:
        raise ConfigError(
            str(path), "the first line must be the header chain,address,category,name", 1
        )
    out = []
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header) or not row[1 if not forta else 0].strip():
            raise ConfigError(
                str(path), f"expected {len(header)} columns: {','.join(header)}", number
            )
        if forta:
            address, name, listed = row[0].strip(), row[1].strip(), row[2].strip()
            hostile = any(w in listed for w in ("phish", "hack", "exploit", "heist"))
            category = ATTACKER if hostile else listed
            out.append(Label("evm", address, category, name, f"csv {path.name} ({listed})"))
        else:
            chain, address, category, name = (c.strip() for c in row)
            if not category:
                raise ConfigError(str(path), "the category is empty", number)
            family = chain.lower() if chain.lower() in ("evm", "bitcoin") else chain
            family = family_of(family, address) if family != "evm" else "evm"
            out.append(Label(family, address, category.lower(), name, f"csv {path.name}"))
    return out


_READERS = {"tagpack": _tagpack, "ofac": _ofac, "etherscan": _etherscan, "csv": _csv}
