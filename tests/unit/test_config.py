"""The config file: every bad config through the real CLI (exit 2, field named, no traceback,
no secret echoed), the example config, the JSON Schema, and the conversion to domain objects."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from drainwatch.cli import main
from drainwatch.config import ConfigError, Settings, load_config, load_config_text
from drainwatch.model import AssetKind, ChainKind, CustodyKind, Limit, WalletRole

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "drainwatch.yaml"

USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
HOT = "0x407A11e7000000000000000000000000000000a1"
COLD = "0xc01D5AFe000000000000000000000000000000c1"
BTC_ADDR = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
XPUB = (
    "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265"
    "TMg7usUDFdp6W1EGMcet8"
)
XPUB2 = (
    "xpub661MyMwAqRbcFW31YEwpkMuc5THy2PSt5bDMsktWQcFF8syAmRUapSCGu8ED9W6oDMSgv6Zz8idoc4a6mr8BDz"
    "TJY47LJhkJ8UB7WEGuduB"
)
TPUB = (
    "tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1RhGjxbaTLV3X4FyW"
    "uejifB9jusQ46QzG87VKp"
)
XPRV = (
    "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3"
    "TGtRBeJgk33yuGBxrMPHi"
)
DESCRIPTOR = f"wsh(sortedmulti(2,{XPUB}/0/*,{XPUB2}/0/*))"
WIF = "KwdMAjGmerYanjeui5SHS7JkmpZvVipYvB2LJGU1ZxJwYvP98617"
HEX_KEY = hashlib.sha256(b"drainwatch test key").hexdigest()
SEED = "abandon " * 11 + "about"
SLACK = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
X_ONLY = "a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd"  # BIP386 vector
PUBKEY = "03a34b99f22c790c4e36b2b3c2c35a36db06226e41c692fc82b8b56ac1c540c5bd"
TX_HASH = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"  # genesis tx
SEED_JA = "\u3000".join(["あいこくしん"] * 11 + ["あおぞら"])
JA_WORDS = [  # 12 distinct BIP39 Japanese words
    *("あいこくしん", "あいさつ", "あいだ", "あおぞら", "あかちゃん", "あきる"),
    *("あけがた", "あける", "あこがれる", "あさい", "あさひ", "あしあと"),
]

BASE: dict[str, Any] = {
    "exchange": {"name": "Test Exchange", "name_ja": "テスト取引所"},
    "chains": {
        "ethereum": {
            "kind": "evm",
            "network": "mainnet",
            "chain_id": 1,
            "rpc": [{"url": "http://127.0.0.1:8545"}],
            "tokens": [{"symbol": "USDT", "contract": USDT, "decimals": 6}],
        },
        "bitcoin": {
            "kind": "bitcoin",
            "network": "mainnet",
            "rpc": [{"url": "http://127.0.0.1:8332", "auth_env": "BTC_RPC_AUTH"}],
        },
    },
    "wallets": {
        "eth-hot": {
            "chain": "ethereum",
            "role": "hot",
            "custody": {"kind": "single_key"},
            "addresses": [HOT],
            "limits": {"ETH": {"max_single": "10"}, "USDT": {"max_single": 1000}},
            "allowlist": [COLD],
        },
        "eth-cold": {
            "chain": "ethereum",
            "role": "cold",
            "custody": {"kind": "multisig", "threshold": 2, "signers": ["a", "b", "c"]},
            "addresses": [COLD],
        },
        "btc-cold": {
            "chain": "bitcoin",
            "role": "cold",
            "custody": {"kind": "multisig", "threshold": 2, "signers": ["a", "b"]},
            "addresses": [BTC_ADDR],
            "descriptors": [DESCRIPTOR],
            "xpubs": [XPUB],
        },
    },
    "alerts": {"channels": [{"kind": "console"}]},
}
DELETE = object()


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def edit(*changes: tuple[str, object]) -> Callable[[], str]:
    """A config text: BASE with ``dotted.path`` set to a value (or deleted)."""

    def build() -> str:
        data = copy.deepcopy(BASE)
        for dotted, value in changes:
            *parents, last = _parts(dotted)
            node: Any = data
            for part in parents:
                node = node[part]
            if value is DELETE:
                del node[last]
            else:
                node[last] = value
        return dump(data)

    return build


def _parts(dotted: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in dotted.split("|")]


def text(raw: str) -> Callable[[], str]:
    return lambda: raw


BASE_TEXT = dump(BASE)
BASE_LINES = BASE_TEXT.count("\n")


@dataclass(frozen=True)
class Bad:
    id: str
    config: Callable[[], str]
    names: str  # what stderr must name: a field path or "line N"
    secret: str | None = None


BAD = [
    # --- structure and YAML ---
    Bad("empty-mapping", text("{}\n"), "exchange"),
    Bad("top-level-list", text("- a\n- b\n"), "top level must be a mapping"),
    Bad("yaml-syntax", text("exchange:\n  name: [unclosed\nchains: {}\n"), "line 3"),
    Bad("duplicate-key", text(BASE_TEXT + "exchange:\n  name: again\n"), f"line {BASE_LINES + 1}"),
    Bad("merge-key", text("base: &b {name: x}\nexchange:\n  <<: *b\n"), "line 3"),
    Bad("unknown-top-field", edit(("chainz", {})), "chainz"),
    Bad(
        "unknown-wallet-field",
        edit(("wallets|eth-hot|adresses", [HOT])),
        "wallets.eth-hot.adresses",
    ),
    Bad("missing-exchange", edit(("exchange", DELETE)), "exchange"),
    Bad("empty-exchange-name", edit(("exchange|name", "  ")), "exchange.name"),
    Bad(
        "bad-chain-name",
        edit(("chains|Ethereum Main", BASE["chains"]["bitcoin"])),
        "chains.Ethereum Main",
    ),
    # --- chains ---
    Bad("chain-kind", edit(("chains|ethereum|kind", "solana")), "chains.ethereum.kind"),
    Bad("evm-no-chain-id", edit(("chains|ethereum|chain_id", DELETE)), "chains.ethereum.chain_id"),
    Bad("chain-id-string", edit(("chains|ethereum|chain_id", "1")), "chains.ethereum.chain_id"),
    Bad("bitcoin-chain-id", edit(("chains|bitcoin|chain_id", 1)), "chains.bitcoin.chain_id"),
    Bad("bitcoin-network", edit(("chains|bitcoin|network", "mainet")), "chains.bitcoin.network"),
    Bad(
        "bitcoin-tokens",
        edit(("chains|bitcoin|tokens", BASE["chains"]["ethereum"]["tokens"])),
        "chains.bitcoin.tokens",
    ),
    Bad("no-rpc", edit(("chains|ethereum|rpc", [])), "chains.ethereum.rpc"),
    Bad(
        "reorg-depth-zero",
        edit(("chains|ethereum|max_reorg_depth", 0)),
        "chains.ethereum.max_reorg_depth",
    ),
    Bad(
        "heartbeat-too-slow",
        edit(("bus", {"heartbeat_interval_ms": 5000, "session_timeout_ms": 6000})),
        "bus.heartbeat_interval_ms",
    ),
    Bad("rpc-no-url", edit(("chains|ethereum|rpc|0|url", DELETE)), "chains.ethereum.rpc[0]"),
    Bad(
        "rpc-url-and-url-env",
        edit(("chains|ethereum|rpc|0|url_env", "ETH_RPC_URL")),
        "chains.ethereum.rpc[0]",
    ),
    Bad(
        "rpc-url-env-not-a-name",
        edit(("chains|ethereum|rpc|0", {"url_env": "https://node.example/v3/abc"})),
        "chains.ethereum.rpc[0].url_env",
    ),
    Bad(
        "rpc-url-credentials",
        edit(("chains|ethereum|rpc|0|url", "https://alice:Hunter2Pass@node.example")),
        "chains.ethereum.rpc[0].url",
        "Hunter2Pass",
    ),
    Bad(
        "rpc-url-apikey-query",
        edit(("chains|ethereum|rpc|0|url", "https://node.example/?apikey=SeCrEtApIkEy99")),
        "chains.ethereum.rpc[0].url",
        "SeCrEtApIkEy99",
    ),
    Bad(
        "auth-env-holds-secret",
        edit(("chains|bitcoin|rpc|0|auth_env", "rpcuser:S3cretPassw0rd")),
        "chains.bitcoin.rpc[0].auth_env",
        "S3cretPassw0rd",
    ),
    Bad(
        "negative-confirmations",
        edit(("chains|ethereum|confirmations", -1)),
        "chains.ethereum.confirmations",
    ),
    Bad(
        "zero-poll-interval",
        edit(("chains|ethereum|poll_interval_seconds", 0)),
        "chains.ethereum.poll_interval_seconds",
    ),
    Bad(
        "explorer-no-tx",
        edit(("chains|ethereum|explorer_tx_url", "https://etherscan.io/tx/")),
        "chains.ethereum.explorer_tx_url",
    ),
    Bad(
        "token-contract",
        edit(("chains|ethereum|tokens|0|contract", "0x1234")),
        "chains.ethereum.tokens[0].contract",
    ),
    Bad(
        "token-decimals",
        edit(("chains|ethereum|tokens|0|decimals", 99)),
        "chains.ethereum.tokens[0].decimals",
    ),
    # --- wallets ---
    Bad("undeclared-chain", edit(("wallets|eth-hot|chain", "polygon")), "wallets.eth-hot.chain"),
    Bad("bad-role", edit(("wallets|eth-hot|role", "lukewarm")), "wallets.eth-hot.role"),
    Bad("no-addresses", edit(("wallets|eth-hot|addresses", [])), "wallets.eth-hot"),
    Bad(
        "evm-bad-checksum",
        edit(("wallets|eth-hot|addresses|0", HOT[:-2] + "A1")),
        "wallets.eth-hot.addresses[0]",
    ),
    Bad(
        "evm-short", edit(("wallets|eth-hot|addresses|0", HOT[:-2])), "wallets.eth-hot.addresses[0]"
    ),
    Bad(
        "btc-testnet-on-mainnet",
        edit(
            (
                "wallets|btc-cold|addresses|0",
                "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
            )
        ),
        "wallets.btc-cold.addresses[0]",
    ),
    Bad(
        "btc-bad-checksum",
        edit(("wallets|btc-cold|addresses|0", BTC_ADDR[:-1] + "5")),
        "wallets.btc-cold.addresses[0]",
    ),
    Bad(
        "btc-evm-address",
        edit(("wallets|btc-cold|addresses|0", HOT)),
        "wallets.btc-cold.addresses[0]",
    ),
    Bad(
        "address-in-two-wallets",
        edit(("wallets|eth-cold|addresses", [HOT.lower()])),
        "wallets.eth-cold.addresses[0]",
    ),
    Bad(
        "address-twice-in-one-wallet",
        edit(("wallets|eth-hot|addresses", [HOT, HOT.lower()])),
        "wallets.eth-hot.addresses[1]",
    ),
    Bad(
        "address-twice-on-second-evm-chain",
        edit(
            ("chains|polygon", {**BASE["chains"]["ethereum"], "chain_id": 137, "tokens": []}),
            ("wallets|pol-hot", {**BASE["wallets"]["eth-hot"], "chain": "polygon", "limits": {}}),
            ("wallets|pol-cold", {**BASE["wallets"]["eth-cold"], "chain": "polygon"}),
            ("wallets|pol-cold|addresses", [COLD, HOT]),
        ),
        "wallets.pol-cold.addresses[1]",
    ),
    Bad("xpubs-on-evm", edit(("wallets|eth-hot|xpubs", [XPUB])), "wallets.eth-hot.xpubs"),
    Bad("tpub-on-mainnet", edit(("wallets|btc-cold|xpubs", [TPUB])), "wallets.btc-cold.xpubs[0]"),
    Bad(
        "xpub-typo",
        edit(("wallets|btc-cold|xpubs", [XPUB[:-1] + "9"])),
        "wallets.btc-cold.xpubs[0]",
    ),
    Bad(
        "descriptor-unbalanced",
        edit(("wallets|btc-cold|descriptors", [DESCRIPTOR[:-1]])),
        "wallets.btc-cold.descriptors[0]",
    ),
    Bad(
        "descriptor-checksum",
        edit(("wallets|btc-cold|descriptors", [DESCRIPTOR + "#qqqqqqqq"])),
        "wallets.btc-cold.descriptors[0]",
    ),
    Bad(
        "descriptor-unknown",
        edit(("wallets|btc-cold|descriptors", [f"foo({XPUB})"])),
        "wallets.btc-cold.descriptors[0]",
    ),
    Bad(
        "multisig-no-threshold",
        edit(("wallets|eth-cold|custody|threshold", DELETE)),
        "wallets.eth-cold.custody.threshold",
    ),
    Bad(
        "threshold-too-big",
        edit(("wallets|eth-cold|custody|threshold", 4)),
        "wallets.eth-cold.custody.threshold",
    ),
    Bad(
        "threshold-zero",
        edit(("wallets|eth-cold|custody|threshold", 0)),
        "wallets.eth-cold.custody.threshold",
    ),
    Bad(
        "custody-kind",
        edit(("wallets|eth-hot|custody|kind", "paper")),
        "wallets.eth-hot.custody.kind",
    ),
    Bad(
        "allowlist-invalid",
        edit(("wallets|eth-hot|allowlist|0", "0xnothex")),
        "wallets.eth-hot.allowlist[0]",
    ),
    # --- limits ---
    Bad(
        "limit-unknown-asset",
        edit(("wallets|eth-hot|limits|DOGE", {"max_single": "1"})),
        "wallets.eth-hot.limits.DOGE",
    ),
    Bad(
        "limit-float",
        edit(("wallets|eth-hot|limits|ETH|max_single", 12.5)),
        "wallets.eth-hot.limits.ETH.max_single",
    ),
    Bad(
        "limit-negative",
        edit(("wallets|eth-hot|limits|ETH|max_single", "-1")),
        "wallets.eth-hot.limits.ETH.max_single",
    ),
    Bad(
        "limit-zero",
        edit(("wallets|eth-hot|limits|ETH|max_single", 0)),
        "wallets.eth-hot.limits.ETH.max_single",
    ),
    Bad(
        "limit-too-precise",
        edit(("wallets|eth-hot|limits|USDT|max_single", "1.0000001")),
        "wallets.eth-hot.limits.USDT.max_single",
    ),
    Bad(
        "limit-window-no-seconds",
        edit(("wallets|eth-hot|limits|ETH|max_window", "50")),
        "wallets.eth-hot.limits.ETH.window_seconds",
    ),
    Bad("limit-empty", edit(("wallets|eth-hot|limits|ETH", {})), "wallets.eth-hot.limits.ETH"),
    # --- store, bus, alerts, reports, labels ---
    Bad(
        "store-password",
        edit(("store", {"url": "postgresql://dw:PgPassw0rd9@db/dw"})),
        "store.url",
        "PgPassw0rd9",
    ),
    Bad("store-scheme", edit(("store", {"url": "mysql://db/dw"})), "store.url"),
    Bad(
        "store-literal-password",
        edit(("store", {"password": "PgPassw0rd9"})),
        "store.password",
        "PgPassw0rd9",
    ),
    Bad("kafka-no-servers", edit(("bus", {"kind": "kafka"})), "bus.bootstrap_servers"),
    Bad(
        "slack-literal-token",
        edit(("alerts|channels", [{"kind": "slack", "channel": "#x", "token": SLACK}])),
        "alerts.channels[0].token",
        SLACK,
    ),
    Bad(
        "slack-token-in-token-env",
        edit(("alerts|channels", [{"kind": "slack", "channel": "#x", "token_env": SLACK}])),
        "alerts.channels[0].token_env",
        SLACK,
    ),
    Bad(
        "webhook-no-secret-env",
        edit(("alerts|channels", [{"kind": "webhook", "url": "https://h.example/x"}])),
        "alerts.channels[0].secret_env",
    ),
    Bad("channel-kind", edit(("alerts|channels", [{"kind": "pager"}])), "alerts.channels[0].kind"),
    Bad(
        "kafka-intake-without-kafka",
        edit(("alerts|expectations", {"kafka": True})),
        "alerts.expectations.kafka",
    ),
    Bad(
        "balance-share-above-100",
        edit(("alerts|rules", {"balance_fall": {"share_percent": 150}})),
        "alerts.rules.balance_fall.share_percent",
    ),
    Bad(
        "unknown-label-category",
        edit(("alerts|rules", {"labelled_destination": {"categories": ["exchange"]}})),
        "alerts.rules.labelled_destination.categories[0]",
    ),
    Bad(
        "rule-severity",
        edit(("alerts|rules", {"cold_outflow": {"severity": "apocalyptic"}})),
        "alerts.rules.cold_outflow.severity",
    ),
    Bad("report-tlp", edit(("reports", {"tlp": "white"})), "reports.tlp"),
    Bad(
        "label-format", edit(("labels", [{"path": "x.txt", "format": "xlsx"}])), "labels[0].format"
    ),
    # --- key material: values, keys and comments ---
    Bad("wif-in-value", edit(("wallets|eth-hot|location", WIF)), "wallets.eth-hot.location", WIF),
    Bad(
        "xprv-in-xpubs", edit(("wallets|btc-cold|xpubs", [XPRV])), "wallets.btc-cold.xpubs[0]", XPRV
    ),
    Bad(
        "xprv-in-descriptor",
        edit(("wallets|btc-cold|descriptors", [f"wpkh({XPRV}/0/*)"])),
        "wallets.btc-cold.descriptors[0]",
        XPRV,
    ),
    Bad(
        "hex-key-in-value",
        edit(("exchange|license_id", "0x" + HEX_KEY)),
        "exchange.license_id",
        HEX_KEY,
    ),
    Bad(
        "hex-key-as-key",
        edit(("wallets|eth-hot|limits|" + HEX_KEY, {"max_single": "1"})),
        "wallets.eth-hot.limits",
        HEX_KEY,
    ),
    Bad(
        "hex-key-in-comment",
        text(BASE_TEXT + f"# backup: {HEX_KEY}\n"),
        f"line {BASE_LINES + 1}",
        HEX_KEY,
    ),
    Bad(
        "wif-in-trailing-comment", text(f"# header\nexchange: {{name: X}} # {WIF}\n"), "line 2", WIF
    ),
    Bad("xprv-in-broken-yaml", text(f"exchange: [\n# {XPRV}\n"), "line 2", XPRV),
    Bad("seed-in-comment", text(BASE_TEXT + f"# {SEED}\n"), f"line {BASE_LINES + 1}", SEED),
    Bad(
        "seed-in-comment-block",
        text(BASE_TEXT + "".join(f"# {w} {w}\n" for w in SEED.split()[:6])),
        f"line {BASE_LINES + 1}",
        "abandon abandon",
    ),
    Bad(
        "seed-as-list",
        edit(("wallets|eth-cold|custody|signers", SEED.split())),
        "wallets.eth-cold.custody.signers",
        "abandon",
    ),
    Bad(
        "seed-with-typo",
        edit(("exchange|name", "abandon " * 11 + "abuot")),
        "exchange.name",
        "abuot",
    ),
    Bad(
        "private-key-field",
        edit(("wallets|eth-hot|private_key", "redacted")),
        "wallets.eth-hot.private_key",
    ),
    Bad("mnemonic-field", edit(("mnemonic", "redacted")), "mnemonic"),
    # --- 64-hex strings: only x-only keys in tr(...) under wallets.*.descriptors ---
    Bad(
        "hex-key-in-brackets-in-location",
        edit(("wallets|eth-hot|location", f"vault B ({HEX_KEY})")),
        "wallets.eth-hot.location",
        HEX_KEY,
    ),
    Bad(
        "hex-key-in-braces-in-location",
        edit(("wallets|eth-hot|location", f"vault {{{HEX_KEY}}}")),
        "wallets.eth-hot.location",
        HEX_KEY,
    ),
    Bad(
        "tr-descriptor-in-location",
        edit(("wallets|eth-hot|location", f"tr({HEX_KEY})")),
        "wallets.eth-hot.location",
        HEX_KEY,
    ),
    Bad(
        "hex-key-in-wpkh",
        edit(("wallets|btc-cold|descriptors", [f"wpkh({HEX_KEY})"])),
        "wallets.btc-cold.descriptors[0]",
        HEX_KEY,
    ),
    Bad(
        "hex-key-in-pkh",
        edit(("wallets|btc-cold|descriptors", [DESCRIPTOR, f"pkh([d34db33f/44h]{HEX_KEY})"])),
        "wallets.btc-cold.descriptors[1]",
        HEX_KEY,
    ),
    Bad(
        "hex-key-in-multi",
        edit(("wallets|btc-cold|descriptors", [f"wsh(multi(1,{PUBKEY},{HEX_KEY}))"])),
        "wallets.btc-cold.descriptors[0]",
        HEX_KEY,
    ),
    Bad(
        "hex-key-as-tree-hash",
        edit(
            ("wallets|btc-cold|descriptors", [f"tr({X_ONLY},{{pk({X_ONLY}),sha256({HEX_KEY})}})"])
        ),
        "wallets.btc-cold.descriptors[0]",
        HEX_KEY,
    ),
    Bad(
        "hex-key-next-to-tr-in-flow-list",
        text(BASE_TEXT.replace("descriptors:\n", f"descriptors: [tr({X_ONLY}), {HEX_KEY}]\n#")),
        "wallets.btc-cold.descriptors",
        HEX_KEY,
    ),
    Bad(
        "hex-key-in-bracketed-comment",
        text(BASE_TEXT + f"# backup key: ({HEX_KEY})\n"),
        f"line {BASE_LINES + 1}",
        HEX_KEY,
    ),
    Bad(
        "tr-descriptor-in-comment",
        text(BASE_TEXT + f"# old descriptor: tr({X_ONLY})\n"),
        f"line {BASE_LINES + 1}",
        X_ONLY,
    ),
    Bad(
        "tr-descriptor-in-trailing-comment",
        text(BASE_TEXT.replace(f"- {DESCRIPTOR}\n", f"- tr({X_ONLY}) # tr({X_ONLY})\n")),
        f"line {BASE_TEXT.splitlines().index(f'    - {DESCRIPTOR}') + 1}): in a comment",
        X_ONLY,
    ),
    Bad(
        "tx-hash-in-comment",
        text(BASE_TEXT + f"# incident tx: {TX_HASH}\n"),
        "transaction or block hashes",
        TX_HASH,
    ),
    Bad(
        "japanese-seed-in-comment",
        text(BASE_TEXT + f"# {SEED_JA}\n"),
        f"line {BASE_LINES + 1}",
        "あいこくしん",
    ),
    Bad(
        "japanese-seed-in-value",
        edit(("wallets|eth-hot|location", SEED_JA)),
        "wallets.eth-hot.location",
        "あいこくしん",
    ),
    Bad(
        "japanese-seed-as-list",
        edit(("wallets|eth-cold|custody|signers", JA_WORDS)),  # distinct: not "listed twice"
        "wallets.eth-cold.custody.signers",
        "あおぞら",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_config_is_refused(
    case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "drainwatch.yaml"
    path.write_text(case.config(), encoding="utf-8")
    code = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert case.names in err, err
    assert "Traceback" not in err + out
    assert err.count("\n") == 1, err  # one paragraph
    assert out == ""
    if case.secret is not None:
        assert case.secret not in err + out, err


def test_enough_distinct_bad_cases() -> None:
    assert len({c.id for c in BAD}) == len(BAD) >= 35
    assert len({c.config() for c in BAD}) == len(BAD)


def test_base_config_is_valid() -> None:
    load_config_text(BASE_TEXT)


# --- files ---------------------------------------------------------------------------------------


def test_example_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK: config is valid / 設定は有効です" in out
    for word in ("ethereum", "bitcoin", "eth-cold", "btc-cold", "multisig 3-of-5", "USDC"):
        assert word in out
    for hidden in ("ETH_RPC_AUTH", "geth-1", "provider.example", "SLACK_BOT_TOKEN"):
        assert hidden not in out


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"exchange", "store", "bus", "chains", "wallets", "labels", "alerts", "reports"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False
    assert "description" in schema


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "nope.yaml", "file not found"),
        (lambda p: p, "is a directory"),
        (
            lambda p: (p / "bin.yaml", (p / "bin.yaml").write_bytes(b"a: 1\n\xff\xfe\n"))[0],
            "line 2",
        ),
        (lambda p: (p / "empty.yaml", (p / "empty.yaml").write_text(""))[0], "empty"),
        (lambda p: (p / "c.yaml", (p / "c.yaml").write_text("# only a comment\n"))[0], "empty"),
    ],
    ids=["missing", "directory", "not-utf8", "empty", "only-comment"],
)
def test_unreadable_files(
    make: Callable[[Path], Path], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and str(path) in err and "Traceback" not in err


# --- values and domain objects -------------------------------------------------------------------


def test_error_carries_path_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(edit(("wallets|eth-hot|role", "lukewarm"))())
    assert info.value.path == "wallets.eth-hot.role"
    lines = edit(("wallets|eth-hot|role", "lukewarm"))().splitlines()
    assert info.value.line is not None
    assert "role: lukewarm" in lines[info.value.line - 1]


def test_float_limit_hint() -> None:
    with pytest.raises(ConfigError, match="quote it"):
        load_config_text(edit(("wallets|eth-hot|limits|ETH|max_single", 12.5))())


def test_domain_objects() -> None:
    data = copy.deepcopy(BASE)
    hot = data["wallets"]["eth-hot"]
    hot["addresses"] = [HOT.lower()]
    hot["limits"] = {
        "ETH": {"max_single": "0.000000000000000001", "max_window": 3, "window_seconds": 60},
        "USDT": {"max_single": "12.5"},
    }
    data["wallets"]["btc-cold"]["addresses"] = [BTC_ADDR.upper()]
    settings = load_config_text(dump(data))
    chains = settings.domain_chains()
    assert chains["ethereum"].chain_id == 1 and chains["ethereum"].confirmations == 12
    assert chains["bitcoin"].kind is ChainKind.BITCOIN
    assert (chains["bitcoin"].confirmations, chains["bitcoin"].native_symbol) == (6, "BTC")
    assert chains["bitcoin"].native_decimals == 8
    wallets = {w.name: w for w in settings.domain_wallets()}
    assert wallets["eth-hot"].addresses == (HOT,)  # EIP-55 form
    assert wallets["eth-hot"].role is WalletRole.HOT
    assert wallets["eth-hot"].limits == (
        Limit(asset="native", max_single=1, max_window=3 * 10**18, window_seconds=60),
        Limit(asset=USDT.lower(), max_single=12_500_000),
    )
    assert wallets["btc-cold"].addresses == (BTC_ADDR,)
    assert wallets["btc-cold"].custody.kind is CustodyKind.MULTISIG
    assert wallets["btc-cold"].custody.signers == ("a", "b")
    assets = settings.assets("ethereum")
    assert [(a.symbol, a.kind) for a in assets] == [
        ("ETH", AssetKind.NATIVE),
        ("USDT", AssetKind.TOKEN),
    ]
    assert assets[1].contract == USDT and assets[1].asset_id == USDT.lower()


def test_defaults() -> None:
    settings = load_config_text(BASE_TEXT)
    assert settings.store.url == "sqlite:///drainwatch.db"
    assert (settings.bus.kind, settings.bus.topic_prefix) == ("inprocess", "drainwatch")
    assert (settings.reports.lang, settings.reports.tlp) == ("ja", "amber")
    assert settings.alerts.rules.cold_outflow.enabled
    assert settings.chains["ethereum"].poll_interval_seconds == 0.5


def test_settings_are_frozen() -> None:
    settings = load_config_text(BASE_TEXT)
    with pytest.raises(pydantic.ValidationError):
        settings.exchange.name = "other"  # type: ignore[misc]


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "drainwatch.yaml"
    path.parent.mkdir()
    path.write_text(edit(("labels", [{"path": "labels/ofac.txt", "format": "ofac"}]))())
    settings = load_config(path)
    assert (
        settings.resolve_path(settings.labels[0].path) == tmp_path / "conf" / "labels" / "ofac.txt"
    )


def test_bcoin_regtest_prefix_override() -> None:
    from drainwatch.addresses import b58check_encode, encode_segwit_address

    legacy = b58check_encode(bytes([0x3C]) + bytes(20))
    segwit = encode_segwit_address("rb", 0, bytes(range(20)))
    data = copy.deepcopy(BASE)
    data["chains"]["bitcoin"].update(
        network="regtest", address_prefixes={"p2pkh": 0x3C, "p2sh": 0x26, "bech32_hrp": "rb"}
    )
    data["wallets"]["btc-cold"].update(addresses=[legacy, segwit], xpubs=[TPUB], descriptors=[])
    wallets = {w.name: w for w in load_config_text(dump(data)).domain_wallets()}
    assert wallets["btc-cold"].addresses == (legacy, segwit)


def test_kafka_bus_and_postgres_store() -> None:
    settings = load_config_text(
        edit(
            ("bus", {"kind": "kafka", "bootstrap_servers": ["k1:9092"]}),
            (
                "store",
                {"url": "postgresql+psycopg://dw@db:5432/dw", "password_env": "DW_DB_PASSWORD"},
            ),
        )()
    )
    assert settings.bus.bootstrap_servers == ("k1:9092",)
    assert settings.store.password_env == "DW_DB_PASSWORD"


def test_summary_never_prints_endpoints() -> None:
    from drainwatch.config import summary_lines

    settings = load_config_text(BASE_TEXT)
    lines = "\n".join(summary_lines(settings))
    assert "127.0.0.1" not in lines and "BTC_RPC_AUTH" not in lines
    assert "1 RPC endpoint(s)" in lines


def test_settings_is_exported() -> None:
    assert Settings.model_config.get("extra") == "forbid"
    assert Settings.model_config.get("frozen") is True


def test_every_field_is_documented() -> None:
    from drainwatch import config_models as m

    docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    models: list[type[pydantic.BaseModel]] = [
        Settings,
        m.ExchangeSettings,
        m.StoreSettings,
        m.BusSettings,
        m.ChainSettings,
        m.WalletSettings,
        m.ReportsSettings,
        m.LabelSource,
        m.LimitSettings,
        m.RpcEndpoint,
        m.SlackChannel,
        m.ExpectationIntake,
        m.DeliverySettings,
        m.ColdOutflowRule,
        m.BalanceFallRule,
        m.LabelledDestinationRule,
    ]
    for model in models:
        for field in model.model_fields:
            assert f"`{field}" in docs or f".{field}`" in docs or f"{field}," in docs, field


# --- taproot descriptors, hex values, Japanese seeds ----------------------------------------------


@pytest.mark.parametrize(
    "descriptors",
    [
        [f"tr({X_ONLY})"],
        [f"tr([d34db33f/86h/0h/0h]{X_ONLY})"],
        [f"tr({X_ONLY},{{pk({X_ONLY}),multi_a(1,{X_ONLY},{X_ONLY})}})"],
        [DESCRIPTOR, f"tr({X_ONLY})", f"wpkh({PUBKEY})"],
    ],
    ids=["tr", "tr-origin", "tr-tree", "mixed-list"],
)
def test_taproot_x_only_keys_are_accepted_in_descriptors(
    descriptors: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "drainwatch.yaml"
    path.write_text(edit(("wallets|btc-cold|descriptors", descriptors))(), encoding="utf-8")
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err


def test_hex_value_message_explains_why(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "drainwatch.yaml"
    path.write_text(BASE_TEXT + f"# tx {TX_HASH}\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    for words in (
        "may be a private key",
        "any 32-byte hex value outside taproot descriptors",
        "transaction or block hashes pasted into comments",
        "the value is not shown",
    ):
        assert words in err, err
    assert TX_HASH not in err


def test_descriptor_check_refuses_x_only_keys_outside_taproot() -> None:
    from drainwatch.addresses import InvalidAddress
    from drainwatch.config_descriptors import check_descriptor

    check_descriptor(f"tr({X_ONLY})", mainnet=True)
    check_descriptor(f"wpkh({PUBKEY})", mainnet=True)
    for bad in (f"wpkh({X_ONLY})", f"pkh({X_ONLY})", f"wsh(multi(1,{X_ONLY}))"):
        with pytest.raises(InvalidAddress, match="only an x-only public key inside tr") as info:
            check_descriptor(bad, mainnet=True)
        assert X_ONLY not in str(info.value)


# --- addresses on several chains -----------------------------------------------------------------


def test_same_evm_address_on_two_evm_chains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    polygon = {**BASE["chains"]["ethereum"], "chain_id": 137, "tokens": []}
    cold = {**BASE["wallets"]["eth-cold"], "chain": "polygon", "addresses": [COLD.lower()]}
    path = tmp_path / "drainwatch.yaml"
    path.write_text(
        edit(("chains|polygon", polygon), ("wallets|pol-cold", cold))(), encoding="utf-8"
    )
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    wallets = {w.name: w for w in load_config(path).domain_wallets()}
    assert wallets["pol-cold"].addresses == wallets["eth-cold"].addresses == (COLD,)


# --- store URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///drainwatch.db",
        "sqlite:////var/lib/drainwatch/dw.db",
        "sqlite://",
        "postgresql://dw@db/dw",
        "postgres://dw@db:5432/dw",
        "postgresql+psycopg://dw@db/dw",
    ],
)
def test_store_schemes_accepted_by_the_store(url: str) -> None:
    assert load_config_text(edit(("store", {"url": url}))()).store.url == url


@pytest.mark.parametrize("url", ["sqlite://host/x.db", "postgresql+psycopg2://db/dw", "mysql://"])
def test_store_schemes_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(edit(("store", {"url": url}))())
    assert info.value.path == "store.url"


def _settings_in(directory: Path, url: str) -> Settings:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "drainwatch.yaml"
    path.write_text(edit(("store", {"url": url}))(), encoding="utf-8")
    return load_config(path)


def test_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    settings = _settings_in(conf, "sqlite:///data/dw.db")
    assert settings.sqlite_path() == conf / "data" / "dw.db"
    assert settings.store_url_resolved() == f"sqlite:///{conf}/data/dw.db"
    assert settings.store_url_resolved().startswith("sqlite:////")  # absolute: four slashes

    with_query = _settings_in(conf, "sqlite:///dw.db?timeout=5")
    assert with_query.sqlite_path() == conf / "dw.db"
    assert with_query.store_url_resolved() == f"sqlite:///{conf}/dw.db?timeout=5"


def test_sqlite_absolute_memory_and_postgres(tmp_path: Path) -> None:
    absolute = _settings_in(tmp_path / "a", "sqlite:////var/lib/drainwatch/dw.db")
    assert absolute.sqlite_path() == Path("/var/lib/drainwatch/dw.db")
    assert absolute.store_url_resolved() == "sqlite:////var/lib/drainwatch/dw.db"
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql://dw@db/dw", "postgres://db/dw"):
        settings = _settings_in(tmp_path / "b", url)
        assert settings.sqlite_path() is None
        assert settings.store_url_resolved() == url


# --- what is not enforced yet --------------------------------------------------------------------

MINIMAL: dict[str, Any] = {
    "exchange": {"name": "Minimal"},
    "chains": {"ethereum": {**BASE["chains"]["ethereum"], "tokens": []}},
    "wallets": {"eth-cold": BASE["wallets"]["eth-cold"]},
}


def test_unenforced_lists_only_what_the_config_uses() -> None:
    from drainwatch.config_summary import unenforced

    [(only, _)] = unenforced(load_config_text(dump(MINIMAL)))
    assert only.startswith("EVM chains (ethereum): a Safe MultiSend batch waiting")
    english = [en for en, _ in unenforced(load_config_text(BASE_TEXT))]
    assert [e.split(":")[0] for e in english] == [
        "EVM chains (ethereum)",
        "bitcoin chains (bitcoin)",
    ]


def test_unenforced_on_the_example_in_both_languages() -> None:
    from drainwatch.config_summary import unenforced

    items = unenforced(load_config(EXAMPLE))
    text = "\n".join(f"{en} / {ja}" for en, ja in items)
    for words in (
        "EVM chains (ethereum): a Safe MultiSend batch waiting",
        "bitcoin chains (bitcoin): a pending spend of a coin that is itself still unconfirmed",
        "labels (3 source(s)): read at start for the labelled-destination rule",
        "EVM チェーン（ethereum）",
        "Bitcoin チェーン",
        "ラベル",
    ):
        assert words in text, text
    # What issue #5 made work is no longer listed: Slack and webhook delivery, limits,
    # allowlists as planned destinations.
    for gone in ("slack/webhook", "limits", "allowlist", "issue #5"):
        assert gone not in text, text
    assert all(en and ja and en != ja for en, ja in items)


def test_summary_ends_with_unenforced_section(capsys: pytest.CaptureFixture[str]) -> None:
    from drainwatch.config import summary_lines
    from drainwatch.config_summary import unenforced

    settings = load_config(EXAMPLE)
    lines = summary_lines(settings)
    items = unenforced(settings)
    assert lines[-len(items) - 1].startswith("not yet enforced / 未対応")
    assert lines[-len(items) :] == [f"  - {en} / {ja}" for en, ja in items]
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "not yet enforced / 未対応" in out and "labelled-destination rule" in out

    minimal = summary_lines(load_config_text(dump(MINIMAL)))
    assert sum("未対応" in line for line in minimal) == 1  # the heading; one item below it
    assert minimal[-1].startswith("  - EVM chains (ethereum)")
    assert not any("slack/webhook" in line or "xpubs" in line for line in minimal)


@pytest.mark.parametrize(
    "value",
    [
        "0x1f1f1f1f_1f1f1f1f_1f1f1f1f_1f1f1f1f_1f1f1f1f_1f1f1f1f_1f1f1f1f_1f1f1f1f",
        '!!int "0x\\x31\\x66' + "1f" * 31 + '"',
        str(int("1f" * 32, 16)),
    ],
    ids=["hex-underscores", "int-tag-escapes", "decimal"],
)
def test_a_private_key_written_as_a_yaml_integer_is_refused(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Key material is looked for before the schema: even a field that does not exist is named.
    path = tmp_path / "c.yaml"
    path.write_text(f"x_note: {value}\n" + BASE_TEXT)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "x_note" in err and "private key" in err
    assert "1f1f1f1f" not in err and str(int("1f" * 32, 16)) not in err
