"""The config file's schema: frozen pydantic models, one per section (docs/configuration.md).

These models check what one field can check alone (types, ranges, formats). Checks that need
several fields (an address against its chain, a limit against the asset's decimals) live in
``config_checks`` so that each can name the exact field path. Nothing here reads files or the
environment: the ``*_env`` fields hold variable NAMES, read by the wiring.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from drainwatch.addresses import NETWORK_PARAMS, BitcoinAddressParams
from drainwatch.model import ChainKind, CustodyKind, Severity, WalletRole

ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"  # no dots: names are parts of field paths
_AMOUNT_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")  # "-" only to say "must be positive"
_KEY_PARAM_RE = re.compile(r"(^|&)(api[_-]?key|apikey|key|token|secret|password)=", re.I)
EVM_DEFAULTS = {"confirmations": 12, "native_symbol": "ETH", "native_decimals": 18}
BITCOIN_DEFAULTS = {"confirmations": 6, "native_symbol": "BTC", "native_decimals": 8}


class ConfigModel(BaseModel):
    """Base of every section: unknown fields are errors and settings never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def _env_name(value: str) -> str:
    if not re.match(ENV_NAME_PATTERN, value):
        # The value is not echoed: a secret pasted here by mistake must not reach a terminal.
        raise ValueError(
            "must be the NAME of an environment variable (A-Z, 0-9, _; e.g. SLACK_BOT_TOKEN), "
            "not the secret itself"
        )
    return value


def _no_credentials(url: str, what: str, env_field: str) -> str:
    parts = urlsplit(url)
    if parts.password is not None or (parts.username is not None and what != "store.url"):
        raise ValueError(f"{what} must not carry credentials (user:password@); use {env_field}")
    if _KEY_PARAM_RE.search(parts.query):
        raise ValueError(f"{what} must not carry an API key or token in its query; use {env_field}")
    return url


def _endpoint_url(url: str) -> str:
    # Other schemes are let through for in-process test chains (eth-tester in the tests); the
    # wiring decides which schemes it can reach.
    parts = urlsplit(url)
    if not re.match(r"^[a-z][a-z0-9+.-]*$", parts.scheme) or not parts.netloc:
        raise ValueError("must be a URL such as https://host:port/path")
    return _no_credentials(url, "an endpoint URL", "auth_env")


def _http_url(url: str) -> str:
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ValueError("must be an http(s):// URL")
    return _no_credentials(url, "a webhook URL", "secret_env")


#: The URL schemes drainwatch.store.open_store accepts.
STORE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


def _store_url(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in STORE_SCHEMES:
        raise ValueError(
            "must start with sqlite:///, sqlite://, postgresql://, postgres:// "
            "or postgresql+psycopg://"
        )
    if scheme == "sqlite" and not (url == "sqlite://" or url.startswith("sqlite:///")):
        raise ValueError(
            "a SQLite URL is sqlite:///relative/path, sqlite:////absolute/path "
            "or sqlite:// (in memory)"
        )
    return _no_credentials(url, "store.url", "password_env")


def _amount(value: object) -> Decimal:
    """Display units, exactly: an int or a decimal string. Floats are refused (12.1 ≠ 12.1)."""
    if isinstance(value, bool):
        raise ValueError('an amount must be a number such as "12.5" or 100')
    if isinstance(value, float):
        raise ValueError('YAML read this as a float, which is inexact: quote it, e.g. "12.5"')
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str) and _AMOUNT_RE.match(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise ValueError(
            'an amount is written as digits with an optional decimal point, e.g. "12.5"'
        )
    if amount <= 0:
        raise ValueError("a limit must be positive")
    return amount


EnvName = Annotated[
    str, AfterValidator(_env_name), WithJsonSchema({"type": "string", "pattern": ENV_NAME_PATTERN})
]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                {"type": "integer", "exclusiveMinimum": 0},
            ]
        }
    ),
]
StrictInt = Annotated[int, Field(strict=True)]


class ExchangeSettings(ConfigModel):
    name: Text = Field(description="The exchange's name, as printed on reports.")
    name_ja: Text | None = Field(None, description="Japanese name / 日本語の商号.")
    license_id: Text | None = Field(
        None, description="Registration number / 登録番号 (e.g. 関東財務局長 第00000号)."
    )


class StoreSettings(ConfigModel):
    url: Annotated[str, AfterValidator(_store_url)] = Field(
        "sqlite:///drainwatch.db",
        description="SQLAlchemy URL: sqlite:///PATH (relative to the config file), sqlite:// "
        "(in memory), postgresql://, postgres:// or postgresql+psycopg://. "
        "No password inside: use password_env.",
    )
    password_env: EnvName | None = Field(None, description="Env var holding the DB password.")


class BusSettings(ConfigModel):
    kind: Literal["inprocess", "kafka"] = Field("inprocess", description="Event bus.")
    bootstrap_servers: tuple[Text, ...] = Field((), description="host:port; kafka only.")
    topic_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]+$")] = Field(
        "drainwatch", description="Kafka topic names start with this."
    )
    session_timeout_ms: Annotated[StrictInt, Field(ge=1000, le=3_600_000)] = Field(
        10_000,
        description=(
            "Kafka consumer-group session timeout: how soon a dead consumer's partitions move "
            "to another. Some brokers make every group join wait about half of it."
        ),
    )
    heartbeat_interval_ms: Annotated[StrictInt, Field(ge=100, le=1_200_000)] = Field(
        3_000, description="Kafka consumer heartbeat; at most a third of session_timeout_ms."
    )


class RpcEndpoint(ConfigModel):
    url: Annotated[str, AfterValidator(_endpoint_url)] | None = Field(
        None, description="JSON-RPC URL (http, https, ws, wss), without credentials."
    )
    url_env: EnvName | None = Field(
        None,
        description=(
            "Env var holding the whole URL, for hosted nodes whose URL carries an API key "
            "(https://…/v3/KEY). Give url or url_env, not both."
        ),
    )
    auth_env: EnvName | None = Field(
        None, description="Env var holding credentials (user:password or a bearer token)."
    )

    @model_validator(mode="after")
    def _one_url(self) -> RpcEndpoint:
        if (self.url is None) == (self.url_env is None):
            raise ValueError(
                "give exactly one of url (in the file) or url_env (from the environment)"
            )
        return self


class TokenSettings(ConfigModel):
    symbol: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.$_-]{1,16}$")]
    contract: str = Field(description="Token contract address (0x + 40 hex).")
    decimals: Annotated[StrictInt, Field(ge=0, le=36)]


class AddressPrefixes(ConfigModel):
    p2pkh: Annotated[StrictInt, Field(ge=0, le=255)]
    p2sh: Annotated[StrictInt, Field(ge=0, le=255)]
    bech32_hrp: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{1,20}$")]


class ChainSettings(ConfigModel):
    """One chain. ``kind`` decides the defaults and which fields are allowed."""

    kind: ChainKind
    network: Text = Field(
        description="evm: free text (mainnet, sepolia, …); bitcoin: mainnet|testnet|signet|regtest."
    )
    chain_id: Annotated[StrictInt, Field(gt=0)] | None = Field(
        None, description="EIP-155 chain id: required for evm, not allowed for bitcoin."
    )
    rpc: tuple[RpcEndpoint, ...] = Field(min_length=1, description="Endpoints, in failover order.")
    confirmations: Annotated[StrictInt, Field(ge=0)] = Field(
        12, description="Depth before a transfer is confirmed (default 12 evm, 6 bitcoin)."
    )
    poll_interval_seconds: Annotated[float, Field(gt=0, strict=True)] = Field(
        0.5,
        description=(
            "How often the node is asked for a new head (and its mempool read): the alert "
            "latency after a block is at most about this plus 0.2 s. Raise it for a "
            "rate-limited hosted node; an EVM ws:// endpoint is told of new heads at once."
        ),
    )
    max_reorg_depth: Annotated[StrictInt, Field(ge=1, le=100_000)] = Field(
        64,
        description=(
            "Deepest reorg followed; a deeper one stops this chain's watcher with a clear "
            "error, never a silent skip."
        ),
    )
    native_symbol: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.$_-]{1,16}$")] = Field(
        "ETH", description="Default ETH (evm) or BTC (bitcoin)."
    )
    native_decimals: Annotated[StrictInt, Field(ge=0, le=36)] = Field(
        18, description="Default 18 (evm) or 8 (bitcoin)."
    )
    explorer_tx_url: str | None = Field(None, description="Template with {tx}.")
    tokens: tuple[TokenSettings, ...] = Field((), description="ERC-20 tokens to watch (evm only).")
    address_prefixes: AddressPrefixes | None = Field(
        None, description="bitcoin only: override prefixes for custom nodes (e.g. bcoin regtest)."
    )
    gap_limit: Annotated[StrictInt, Field(ge=1, le=1_000)] = Field(
        20,
        description=(
            "bitcoin only: unused addresses derived ahead of the last used one on each chain "
            "(receive, change) of an xpub or ranged descriptor."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            defaults = BITCOIN_DEFAULTS if data.get("kind") == "bitcoin" else EVM_DEFAULTS
            return {**defaults, **data}
        return data

    def address_params(self) -> BitcoinAddressParams:
        """Bitcoin address prefixes: the override, else the network's standard ones."""
        if self.address_prefixes is not None:
            p = self.address_prefixes
            return BitcoinAddressParams(p.p2pkh, p.p2sh, p.bech32_hrp)
        return NETWORK_PARAMS[self.network]


class CustodySettings(ConfigModel):
    kind: CustodyKind
    threshold: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="m of m-of-n: required for multisig, optional for mpc."
    )
    signers: tuple[Text, ...] = Field((), description="Who holds the keys / 署名者.")


class LimitSettings(ConfigModel):
    max_single: Amount | None = Field(None, description="Largest planned single outflow.")
    max_window: Amount | None = Field(None, description="Largest total over window_seconds.")
    window_seconds: Annotated[StrictInt, Field(gt=0)] | None = None


class WalletSettings(ConfigModel):
    chain: str = Field(description="A key of `chains`.")
    role: WalletRole
    custody: CustodySettings
    addresses: tuple[str, ...] = ()
    xpubs: tuple[str, ...] = Field((), description="bitcoin only.")
    descriptors: tuple[str, ...] = Field((), description="bitcoin only: wpkh/sh/wsh/tr/pkh.")
    limits: dict[str, LimitSettings] = Field(
        default_factory=dict, description="Per asset symbol; amounts in display units."
    )
    allowlist: tuple[str, ...] = Field(
        (),
        description=(
            "Planned destinations: outflows to them are planned without an expectation; "
            "approvals to them and a Safe's DELEGATECALLs to them are not control alerts."
        ),
    )
    location: Text | None = None


class LabelSource(ConfigModel):
    path: Text = Field(description="Relative to the config file's directory.")
    format: Literal["tagpack", "ofac", "etherscan", "csv"]


class ConsoleChannel(ConfigModel):
    kind: Literal["console"]


class SlackChannel(ConfigModel):
    kind: Literal["slack"]
    channel: Text = Field(description="Channel name or id, e.g. #security-alerts.")
    token_env: EnvName = "SLACK_BOT_TOKEN"
    base_url: HttpUrl | None = Field(
        None,
        description="Slack Web API base URL (default https://slack.com/api/); for a proxy.",
    )


class WebhookChannel(ConfigModel):
    kind: Literal["webhook"]
    url: HttpUrl
    secret_env: EnvName = Field(description="Env var holding the HMAC signing secret.")


ChannelSettings = Annotated[
    ConsoleChannel | SlackChannel | WebhookChannel, Field(discriminator="kind")
]


class ColdOutflowRule(ConfigModel):
    enabled: Annotated[bool, Field(strict=True)] = True
    severity: Severity = Severity.CRITICAL
    refill_requires_expectation: Annotated[bool, Field(strict=True)] = Field(
        False,
        description=(
            "Also alert (at warning) a cold wallet's outflow to another of the exchange's own "
            "wallets that no expectation announced. By default such a refill is planned."
        ),
    )


class ControlChangeRule(ConfigModel):
    """Owners, threshold, guard, modules, implementation of a watched wallet, and approvals
    from it to a spender not on its allowlist."""

    enabled: Annotated[bool, Field(strict=True)] = True
    severity: Severity = Severity.CRITICAL


class UnplannedOutflowRule(ConfigModel):
    """An outflow of a watched wallet that matches no expectation and goes to no wallet of the
    exchange's own."""

    enabled: Annotated[bool, Field(strict=True)] = True
    severity: Severity = Severity.HIGH


class LimitRule(ConfigModel):
    """An unplanned outflow above a wallet's ``limits.<asset>.max_single``, or unplanned
    outflows summing above ``max_window`` within ``window_seconds`` (planned ones, announced or
    to an own wallet, never alert: a limit catches a leak split into small pieces)."""

    enabled: Annotated[bool, Field(strict=True)] = True
    severity: Severity = Severity.HIGH


class BalanceFallRule(ConfigModel):
    """A wallet's balance of an asset falling by more than ``share_percent`` within
    ``window_seconds``."""

    enabled: Annotated[bool, Field(strict=True)] = True
    severity: Severity = Severity.HIGH
    share_percent: Annotated[StrictInt, Field(ge=1, le=100)] = 20
    window_seconds: Annotated[StrictInt, Field(gt=0)] = 3600


class LabelledDestinationRule(ConfigModel):
    """An outflow to an address labelled with one of ``categories`` (by the label sources of
    the config's ``labels`` section)."""

    enabled: Annotated[bool, Field(strict=True)] = True
    severity: Severity = Severity.CRITICAL
    categories: tuple[Literal["sanctioned", "mixer", "attacker"], ...] = (
        "sanctioned",
        "mixer",
        "attacker",
    )


class RulesSettings(ConfigModel):
    cold_outflow: ColdOutflowRule = ColdOutflowRule()
    control_changes: ControlChangeRule = ControlChangeRule()
    unplanned_outflow: UnplannedOutflowRule = UnplannedOutflowRule()
    limits: LimitRule = LimitRule()
    balance_fall: BalanceFallRule = BalanceFallRule()
    labelled_destination: LabelledDestinationRule = LabelledDestinationRule()


class ExpectationIntake(ConfigModel):
    """Where the exchange's withdrawal system announces the outflows it is about to make."""

    inbox: Text | None = Field(
        None,
        description=(
            "A directory (relative to the config file) the withdrawal system drops JSON Lines "
            "files of expectations into; read files move to inbox/done, refused ones to "
            "inbox/rejected with a .error note."
        ),
    )
    kafka: Annotated[bool, Field(strict=True)] = Field(
        False,
        description="Also read expectations from the Kafka topic <topic_prefix>.expectations.",
    )
    default_valid_seconds: Annotated[StrictInt, Field(gt=0, le=30 * 86400)] = Field(
        86400, description="valid_until when an expectation does not give one."
    )


class DeliverySettings(ConfigModel):
    max_retry_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] = Field(
        300, description="Longest pause between two attempts to deliver one alert."
    )


class AlertsSettings(ConfigModel):
    channels: tuple[ChannelSettings, ...] = (ConsoleChannel(kind="console"),)
    rules: RulesSettings = RulesSettings()
    expectations: ExpectationIntake = ExpectationIntake()
    delivery: DeliverySettings = DeliverySettings()


class ReportsSettings(ConfigModel):
    lang: Literal["ja", "en"] = "ja"
    tlp: Literal["clear", "green", "amber", "red"] = "amber"
    out_dir: Text = Field("reports", description="Relative to the config file's directory.")
