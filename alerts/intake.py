"""Expectations as the exchange announces them: one JSON document → a checked ``Expectation``.

Every way in — ``drainwatch expect``, a JSON Lines file dropped in the inbox, a Kafka message —
goes through ``ExpectationParser`` (docs/expectations.md has the format), and then through
``store_parsed``, which stores a whole call or nothing of it.

A document that leaves out ``valid_until`` (or a CLI ``--valid-for``) is valid for a span
counted from its arrival, so the same document read again later (a file re-read after a crash,
a Kafka message delivered twice) carries another ``valid_until``: ``store_parsed`` treats it as
the replay it is, keeping the first arrival's, instead of as a conflict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from drainwatch.addresses import InvalidAddress
from drainwatch.errors import BadInput, ExpectationConflict
from drainwatch.model import NATIVE_ASSET_ID, Asset, Expectation, Wallet
from drainwatch.ports import ExpectationRecord, Store
from drainwatch.units import parse_amount

if TYPE_CHECKING:
    from drainwatch.config import Settings

MAX_AHEAD = timedelta(days=30)
MAX_REFERENCE = 200
MAX_AMOUNT = 2**256 - 1
FIELDS = ("reference", "wallet", "chain", "destination", "asset", "amount")
OPTIONAL = ("amount_base_units", "valid_until")
_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_INTEGER = re.compile(r"^[0-9]+$")


class ExpectationInputError(BadInput):
    """A document that is not a valid expectation: names the field, and the line of a file."""

    def __init__(
        self, field: str, reason: str, line: int | None = None, source: str | None = None
    ) -> None:
        self.field = field
        self.reason = reason
        self.line = line
        where = "".join(
            [f"{source}: " if source else "", f"line {line}: " if line is not None else ""]
        )
        super().__init__(f"{where}{field}: {reason}")

    def at(self, source: str, line: int | None = None) -> ExpectationInputError:
        """The same problem, placed in ``source`` (and at ``line``)."""
        return ExpectationInputError(self.field, self.reason, line, source)


@dataclass(frozen=True)
class Parsed:
    expectation: Expectation
    #: ``valid_until`` was counted from the arrival (left out, or ``--valid-for``).
    relative: bool


class ExpectationParser:
    """Checks documents against the configured wallets, assets and address formats."""

    def __init__(
        self,
        wallets: Iterable[Wallet],
        assets: Mapping[str, Sequence[Asset]],
        normalise: Callable[[str, str], str],
        default_valid: timedelta,
    ) -> None:
        """``normalise(chain, address)`` gives an address's canonical form or raises
        ``ValueError``; ``assets`` are each chain's (native first)."""
        self._wallets = {w.name: w for w in wallets}
        self._assets = assets
        self._normalise = normalise
        self._default_valid = default_valid

    @classmethod
    def for_settings(cls, settings: Settings) -> ExpectationParser:
        from drainwatch.config_domain import normalise_address

        def normalise(chain: str, address: str) -> str:
            return normalise_address(settings.chains[chain], address)

        return cls(
            settings.domain_wallets(),
            {name: settings.assets(name) for name in settings.chains},
            normalise,
            timedelta(seconds=settings.alerts.expectations.default_valid_seconds),
        )

    def parse_json(self, text: str | bytes, now: datetime) -> Parsed:
        """One JSON object (a Kafka message, a line of a file)."""
        return self.parse(_json_object(text), now)

    def parse_lines(self, text: str, now: datetime, source: str) -> list[Parsed]:
        """A JSON Lines file, all or nothing: the first bad line raises, naming it; blank
        lines are skipped."""
        out: list[Parsed] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(self.parse_json(line, now))
            except ExpectationInputError as exc:
                raise exc.at(source, number) from None
        return out

    def parse(self, doc: object, now: datetime, *, valid_for: timedelta | None = None) -> Parsed:
        """A decoded document; ``valid_for`` replaces the default span when ``valid_until``
        is left out."""
        if not isinstance(doc, dict):
            raise ExpectationInputError("document", "must be a JSON object / JSON オブジェクト")
        unknown = sorted(set(doc) - set(FIELDS) - set(OPTIONAL))
        if unknown:
            raise ExpectationInputError(
                unknown[0], "unknown field (check the spelling) / 不明な項目です"
            )
        reference = _reference(doc.get("reference"))
        wallet = self._wallet(doc.get("wallet"))
        if "chain" in doc and doc["chain"] != wallet.chain:
            raise ExpectationInputError(
                "chain",
                f"wallet {wallet.name} is on {wallet.chain} / ウォレットのチェーンと違います",
            )
        destination = self._destination(wallet.chain, doc.get("destination"))
        asset = self._asset(wallet.chain, doc.get("asset"))
        amount = _amount(doc, asset)
        if "valid_until" in doc:
            valid_until, relative = _valid_until(doc["valid_until"], now), False
        else:
            valid_until, relative = now + (valid_for or self._default_valid), True
        if valid_until > now + MAX_AHEAD:
            raise ExpectationInputError(
                "valid_until", "at most 30 days ahead / 30 日以内で指定してください"
            )
        expectation = Expectation(
            reference, wallet.chain, wallet.name, destination, asset.asset_id, amount, valid_until
        )
        return Parsed(expectation, relative)

    def asset_of(self, chain: str, asset_id: str) -> Asset | None:
        return next((a for a in self._assets.get(chain, ()) if a.asset_id == asset_id), None)

    def _wallet(self, value: object) -> Wallet:
        name = _text("wallet", value)
        wallet = self._wallets.get(name)
        if wallet is None:
            known = ", ".join(sorted(self._wallets))
            raise ExpectationInputError(
                "wallet",
                f"no wallet named {name!r} in the config (known: {known}) / "
                "設定にないウォレットです",
            )
        return wallet

    def _destination(self, chain: str, value: object) -> str:
        address = _text("destination", value)
        try:
            return self._normalise(chain, address)
        except (InvalidAddress, ValueError) as exc:
            raise ExpectationInputError(
                "destination", f"not a valid {chain} address: {exc} / アドレスが正しくありません"
            ) from None

    def _asset(self, chain: str, value: object) -> Asset:
        text = _text("asset", value)
        assets = self._assets.get(chain, ())
        if text.lower() == NATIVE_ASSET_ID:
            return assets[0]
        lower = text.lower()
        for found in (
            [a for a in assets if a.symbol == text],
            [a for a in assets if a.symbol.lower() == lower],
            [a for a in assets if a.contract is not None and a.contract.lower() == lower],
        ):
            if len(found) == 1:
                return found[0]
        known = ", ".join(["native", *(a.symbol for a in assets)])
        raise ExpectationInputError(
            "asset",
            f"{text!r} is not an asset configured on {chain} (known: {known}) / 設定にない資産です",
        )


def store_parsed(store: Store, parsed: Sequence[Parsed], source: str, now: datetime) -> int:
    """Store the expectations in one call (all or nothing); returns how many were new.

    A conflict on an expectation whose ``valid_until`` was counted from its arrival, with a
    stored one equal to it in everything else, is a replay: the stored one is kept."""
    records = [ExpectationRecord(p.expectation, now, source) for p in parsed]
    try:
        return store.add_expectations(records)
    except ExpectationConflict:
        if not any(p.relative for p in parsed):
            raise
    settled = _settle_relative(store, parsed)
    return store.add_expectations([ExpectationRecord(e, now, source) for e in settled])


def _settle_relative(store: Store, parsed: Sequence[Parsed]) -> list[Expectation]:
    stored: dict[tuple[str, str], dict[str, Expectation]] = {}
    out: list[Expectation] = []
    for p in parsed:
        e = p.expectation
        if p.relative:
            key = (e.chain, e.wallet)
            if key not in stored:
                listed = store.expectations(chain=e.chain, wallet=e.wallet)
                stored[key] = {r.expectation.reference: r.expectation for r in listed}
            twin = stored[key].get(e.reference)
            if twin is not None and replace(twin, valid_until=e.valid_until) == e:
                e = twin
        out.append(e)
    return out


def decode_lines(raw: bytes, source: str) -> str:
    """A file's bytes as text (UTF-8, a BOM allowed); else the error names the line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ExpectationInputError(
            "document", "not UTF-8 text / UTF-8 ではありません", line, source
        ) from None


def _json_object(text: str | bytes) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ExpectationInputError(key, "given twice / 重複しています")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ExpectationInputError("document", f"{name} is not JSON / JSON ではありません")

    try:
        return json.loads(
            text, object_pairs_hook=pairs, parse_float=Decimal, parse_constant=constant
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExpectationInputError(
            "document", f"not a JSON object: {exc} / JSON として読めません"
        ) from None


def _text(field: str, value: object) -> str:
    if value is None:
        raise ExpectationInputError(field, "required field is missing / 必須項目がありません")
    if not isinstance(value, str) or not value.strip():
        raise ExpectationInputError(field, "must be a non-empty string / 文字列で指定してください")
    return value.strip()


def _reference(value: object) -> str:
    reference = _text("reference", value)
    if reference != value or len(reference) > MAX_REFERENCE:
        raise ExpectationInputError(
            "reference",
            f"1 to {MAX_REFERENCE} characters, no surrounding spaces / "
            f"{MAX_REFERENCE} 文字以内（前後の空白なし）",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in reference):
        raise ExpectationInputError("reference", "no control characters / 制御文字は使えません")
    return reference


def _amount(doc: dict[str, Any], asset: Asset) -> int:
    if ("amount" in doc) == ("amount_base_units" in doc):
        raise ExpectationInputError(
            "amount",
            "give exactly one of amount or amount_base_units / "
            "amount と amount_base_units のどちらか一方を指定してください",
        )
    if "amount" in doc:
        field, text = "amount", doc["amount"]
        if not isinstance(text, str) or not _DECIMAL.match(text):
            raise ExpectationInputError(
                field,
                f'a decimal string in {asset.symbol}, like "1.5" / "1.5" のような'
                "10 進数の文字列で指定してください",
            )
        try:
            amount = parse_amount(text, asset.decimals)
        except ValueError:
            raise ExpectationInputError(
                field,
                f"{asset.symbol} has {asset.decimals} decimal places: {text} is finer / "
                f"小数点以下は {asset.decimals} 桁までです",
            ) from None
    else:
        field, text = "amount_base_units", doc["amount_base_units"]
        if not isinstance(text, str) or not _INTEGER.match(text):
            raise ExpectationInputError(
                field,
                'an integer string of base units, like "1500000" / 最小単位の整数を'
                "文字列で指定してください",
            )
        amount = int(text)
    if not 0 < amount <= MAX_AMOUNT:
        raise ExpectationInputError(field, "must be above 0 / 0 より大きい値にしてください")
    return amount


def _valid_until(value: object, now: datetime) -> datetime:
    if not isinstance(value, str):
        raise ExpectationInputError("valid_until", "an ISO 8601 string / ISO 8601 文字列")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ExpectationInputError(
            "valid_until",
            f"{value!r} is not an ISO 8601 time with a zone (2025-03-01T12:00:00+09:00) / "
            "タイムゾーン付きの ISO 8601 形式で指定してください",
        )
    if when <= now:
        raise ExpectationInputError("valid_until", "already past / 既に過ぎています")
    return when
