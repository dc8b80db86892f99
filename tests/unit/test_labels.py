"""Label sources read into a LabelBook, on the real lists in shared/data/labels.

The lists are public data under the MIT licence, by their authors: GraphSense TagPacks
(Iknaio Cryptoasset Analytics GmbH, AIT Austrian Institute of Technology), OFAC address lists
(0xB10C, from the US Treasury's SDN list), Etherscan labels (Brian Lee Cheow Teng), Forta's
malicious-address labels (Forta Foundation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drainwatch.errors import ConfigError
from graph.labels import LabelBook, family_of, load_labels
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "labels"

TORNADO = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
RONIN = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"


@pytest.fixture(scope="module")
def book(shared_data: Path) -> LabelBook:
    return load_labels(
        [
            (DATA / "graphsense-tagpacks", "tagpack"),
            (DATA / "ofac", "ofac"),
            (DATA / "etherscan" / "combinedAccountLabels.json", "etherscan"),
            (DATA / "forta" / "etherscan_malicious_labels.csv", "csv"),
        ]
    )


def _categories(book: LabelBook, family: str, address: str) -> set[str]:
    return {label.category for label in book.lookup(family, address)}


def test_the_real_lists_give_our_categories(book: LabelBook) -> None:
    assert len(book) > 30_000
    # Tornado Cash: a mixer (TagPack category mixing_service), sanctioned (OFAC list)
    assert {"mixer", "sanctioned"} <= _categories(book, "evm", TORNADO.lower())
    # the Ronin bridge exploiter: attacker (abuse service_hack), sanctioned (Lazarus, OFAC)
    assert {"attacker", "sanctioned"} <= _categories(book, "evm", RONIN)
    # Lazarus on bitcoin (abuse: sanction), base58 compared exactly
    assert _categories(book, "bitcoin", "3LU8wRu4ZnXP4UM8Yo6kkTiGHM9BubgyiG") == {"sanctioned"}
    assert book.lookup("bitcoin", "3lu8wru4znxp4um8yo6kktigHM9BubgyiG") == ()
    # a mixer on bitcoin (FC 2021 TagPack)
    assert "mixer" in _categories(book, "bitcoin", "1LAScEFHGkfpyjtFzA4g9283JmL2cYR9Tx")
    # Forta's phishing list: attacker, with the list named
    [phish] = book.lookup("evm", "0x80d7bb18521acbef32d7906502ebe94928690e93")
    assert phish.category == "attacker" and "etherscan-phish-hack-list" in phish.source
    # other categories stay as the source spells them (an exchange, for tracing), bech32
    # without case
    bybit = "bc1q2qqqt87kh33s0er58akh7v9cwjgd83z5smh9rp"
    assert _categories(book, "bitcoin", bybit.upper()) == {"exchange"}
    # an EVM address is one key on every EVM chain; an unknown one has no label
    assert book.lookup("bitcoin", TORNADO) == book.lookup("evm", TORNADO)
    assert book.lookup("evm", "0x" + "5a" * 20) == ()


def test_labels_name_their_source(book: LabelBook) -> None:
    sources = {label.source for label in book.lookup("evm", TORNADO)}
    assert "tagpack tornado_cash.yaml" in sources
    assert "ofac sanctioned_addresses_ETH.txt" in sources
    tagpack = next(x for x in book.lookup("evm", TORNADO) if x.source.endswith("tornado_cash.yaml"))
    assert tagpack.name == "tornado.cash" and tagpack.reference is not None


def test_families() -> None:
    assert family_of("USDT", "0x" + "ab" * 20) == "evm"
    assert family_of("XBT", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT") == "bitcoin"
    assert family_of("trx", "TX1") == "TRX"


def test_a_simple_csv(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "chain,address,category,name\n"
        "evm,0x" + "ab" * 20 + ",attacker,Drainer\n"
        "bitcoin,bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4,mixer,Some mixer\n"
    )
    book = load_labels([(path, "csv")])
    [label] = book.lookup("evm", "0x" + "AB" * 20)
    assert (label.category, label.name, label.source) == ("attacker", "Drainer", "csv labels.csv")
    assert _categories(book, "bitcoin", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4") == {"mixer"}


@pytest.mark.parametrize(
    ("fmt", "name", "text", "line", "reason"),
    [
        (
            "tagpack",
            "bad.yaml",
            "title: x\ntags:\n  - address: a\n  - address: b: c\n",
            4,
            "not valid YAML",
        ),
        (
            "tagpack",
            "bad.yaml",
            "title: x\ntags:\n  - address: a\n  - label: no address\n",
            4,
            "needs an address",
        ),
        ("tagpack", "bad.yaml", "title: x\n", 1, "not a TagPack"),
        (
            "ofac",
            "sanctioned_addresses_ETH.txt",
            "0x" + "ab" * 20 + "\nsome words here\n",
            2,
            "one address a line",
        ),
        ("etherscan", "labels.json", '{"0xab": {"name": "x",\n "labels": [}', 2, "not valid JSON"),
        ("csv", "labels.csv", "address,category\n", 1, "header"),
        ("csv", "labels.csv", "chain,address,category,name\nevm,0xab,attacker\n", 2, "4 columns"),
    ],
)
def test_a_malformed_file_is_a_config_error_naming_path_and_line(
    tmp_path: Path, fmt: str, name: str, text: str, line: int, reason: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_labels([(path, fmt)])
    assert caught.value.path == str(path) and caught.value.line == line
    assert reason in caught.value.reason


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_labels([(tmp_path / "nope.csv", "csv")])
