"""The config file (YAML) → typed, validated, frozen ``Settings`` (docs/configuration.md).

Loading runs, in order: decode as UTF-8 → scan the raw text for key material (comments too) →
parse YAML with line tracking and duplicate-key refusal → scan every key and value for key
material and literal secrets → pydantic schema → cross-field checks. Every problem becomes one
``ConfigError(field path, reason, line)``; nothing echoes a secret it found.

The sections live in ``config_models``, the cross-field checks in ``config_checks``, the domain
conversions in ``config_domain``; this module is the public face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_core import ErrorDetails

from drainwatch.config_checks import problems
from drainwatch.config_domain import chain_assets, to_chain, to_wallet
from drainwatch.config_models import (
    AlertsSettings,
    BusSettings,
    ChainSettings,
    ChannelSettings,
    ConfigModel,
    ExchangeSettings,
    LabelSource,
    Name,
    ReportsSettings,
    StoreSettings,
    WalletSettings,
)
from drainwatch.config_secrets import refuse_raw_text, refuse_values
from drainwatch.config_summary import summary_lines
from drainwatch.config_yaml import FieldPath, YamlDocument, format_path, parse_yaml
from drainwatch.errors import ConfigError
from drainwatch.model import Asset, Chain, Wallet

__all__ = [
    "ChainSettings",
    "ChannelSettings",
    "ConfigError",
    "Settings",
    "WalletSettings",
    "config_json_schema",
    "load_config",
    "load_config_text",
    "summary_lines",
]


class Settings(ConfigModel):
    """The whole config file. Relative paths resolve against the config file's directory."""

    model_config = ConfigDict(
        title="drainwatch config",
        json_schema_extra={"description": "drainwatch configuration / drainwatch 設定ファイル"},
    )

    exchange: ExchangeSettings
    store: StoreSettings = StoreSettings()
    bus: BusSettings = BusSettings()
    chains: dict[Name, ChainSettings] = Field(min_length=1, description="Keyed by chain name.")
    wallets: dict[Name, WalletSettings] = Field(min_length=1, description="Keyed by wallet name.")
    labels: tuple[LabelSource, ...] = ()
    alerts: AlertsSettings = AlertsSettings()
    reports: ReportsSettings = ReportsSettings()
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def resolve_path(self, path: str) -> Path:
        """A path from the config (labels, reports.out_dir) as an absolute path."""
        return (self._base_dir / path).resolve()

    def sqlite_path(self) -> Path | None:
        """The SQLite database file of ``store.url``: a relative ``sqlite:///path.db`` is
        relative to the config file's directory (``base_dir``), an absolute one
        (``sqlite:////abs/path.db``) is kept. None for PostgreSQL and for in-memory SQLite."""
        url = self.store.url
        if not url.startswith("sqlite:///"):
            return None
        database = url.removeprefix("sqlite:///").partition("?")[0]
        if database in ("", ":memory:"):
            return None
        path = Path(database)
        return path if path.is_absolute() else self._base_dir / path

    def store_url_resolved(self) -> str:
        """``store.url`` with a relative SQLite path made absolute (see ``sqlite_path``); any
        other URL unchanged. This is the URL to open the store with."""
        path = self.sqlite_path()
        if path is None:
            return self.store.url
        _, sep, query = self.store.url.partition("?")
        return f"sqlite:///{path}{sep}{query}"

    def domain_chains(self) -> dict[str, Chain]:
        return {name: to_chain(name, chain) for name, chain in self.chains.items()}

    def domain_wallets(self) -> list[Wallet]:
        return [
            to_wallet(name, wallet, self.chains[wallet.chain])
            for name, wallet in self.wallets.items()
        ]

    def assets(self, chain: str) -> list[Asset]:
        """The native coin, then the chain's tokens. ``KeyError`` for an undeclared chain."""
        return chain_assets(chain, self.chains[chain])


def load_config(path: Path) -> Settings:
    """Read and validate a config file; every problem is a ``ConfigError``."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "file not found / ファイルが見つかりません") from None
    except IsADirectoryError:
        raise ConfigError(source, "is a directory, not a file / ディレクトリです") from None
    except PermissionError:
        raise ConfigError(source, "cannot be read: permission denied / 読めません") from None
    except OSError as exc:
        raise ConfigError(source, f"cannot be read: {exc.strerror} / 読めません") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(source, "not UTF-8 text / UTF-8 ではありません", line) from None
    return _load(text, source, path.resolve().parent)


def load_config_text(text: str, source: str = "<string>") -> Settings:
    """Validate config text; relative paths resolve against the working directory."""
    return _load(text, source, Path.cwd())


def _load(text: str, source: str, base_dir: Path) -> Settings:
    refuse_raw_text(text, source)
    doc = parse_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise ConfigError(source, "the top level must be a mapping (exchange:, chains:, …)", 1)
    refuse_values(doc)
    try:
        settings = Settings.model_validate(doc.data)
    except ValidationError as exc:
        raise _config_error(exc, doc, source) from None
    for path, reason in problems(settings):
        raise ConfigError(format_path(path), reason, doc.line_of(path))
    settings._base_dir = base_dir
    return settings


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors (YAML language servers)."""
    schema = Settings.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --- pydantic errors → one ConfigError ---------------------------------------------------------


def _config_error(exc: ValidationError, doc: YamlDocument, source: str) -> ConfigError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    path = _data_path(doc.data, first["loc"])
    reason = _reason(first)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path = (*path, "kind")
    # A list whose only item failed also reports "too short": not a separate problem.
    others = [e for e in errors[1:] if first["loc"][: len(e["loc"])] != e["loc"]]
    if others:
        reason += f" (and {len(others)} more problem(s) after this one)"
    return ConfigError(format_path(path) or source, reason, doc.line_of(path))


def _data_path(data: object, loc: tuple[int | str, ...]) -> FieldPath:
    """The user's field path for a pydantic ``loc``, skipping union tags and key markers."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]  # type: ignore[index]
        elif i == len(loc) - 1 and part != "[key]":
            out.append(part)
    return tuple(out)


def _reason(error: ErrorDetails) -> str:
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx", {})
    if kind == "missing":
        return "required field is missing / 必須項目がありません"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs/configuration.md) / 不明な項目です"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"kind must be one of {ctx.get('expected_tags', '')}"
    if error["loc"] and error["loc"][-1] == "[key]":
        return f"the name is not allowed: {msg} (letters, digits, '-', '_')"
    return msg.removeprefix("Value error, ")
