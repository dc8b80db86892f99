"""The alert channels as outbox sinks: stable names that never carry a webhook's secret, and
the sinks built from the config named exactly as the outbox knows them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from drainwatch.config import load_config_text
from drainwatch.errors import ConfigError
from drainwatch.wiring_alerts import build_sinks, sink_names
from tests.unit.test_config import MINIMAL

SECRET_PATH = "https://hooks.example.com/T000/B000/s3cr3tT0ken"
OTHER = "https://hooks.example.com/T000/B001/an0therT0ken"


def _settings(channels: list[dict[str, Any]]) -> Any:
    data = copy.deepcopy(MINIMAL)
    data["alerts"] = {"channels": channels}
    return load_config_text(yaml.safe_dump(data))


def test_names_are_stable_distinct_and_carry_no_webhook_secret() -> None:
    settings = _settings(
        [
            {"kind": "console"},
            {"kind": "slack", "channel": "#security-alerts", "token_env": "DW_T_SLACK"},
            {"kind": "webhook", "url": SECRET_PATH, "secret_env": "DW_T_HOOK"},
            {"kind": "webhook", "url": OTHER, "secret_env": "DW_T_HOOK"},
        ]
    )
    names = sink_names(settings)
    assert names[:2] == ["console", "slack:#security-alerts"]
    assert len(set(names)) == 4
    assert all(n.startswith("webhook:https://hooks.example.com/...#") for n in names[2:])
    assert all(n.isascii() for n in names)  # names go into HTTP headers (Idempotency-Key)
    assert not any(s in str(names) for s in ("s3cr3tT0ken", "an0therT0ken", "T000"))
    assert sink_names(settings) == names  # the same on every start


def test_built_sinks_have_the_outbox_names(monkeypatch: pytest.MonkeyPatch) -> None:
    channels = [
        {"kind": "slack", "channel": "#security-alerts", "token_env": "DW_T_SLACK"},
        {"kind": "webhook", "url": SECRET_PATH, "secret_env": "DW_T_HOOK"},
        {"kind": "console"},
    ]
    settings = _settings(channels)
    monkeypatch.delenv("DW_T_SLACK", raising=False)
    with pytest.raises(ConfigError, match=r"alerts\.channels\[0\]\.token_env"):
        build_sinks(settings)
    monkeypatch.setenv("DW_T_SLACK", "xoxb-test")
    monkeypatch.setenv("DW_T_HOOK", "hmac-secret")
    assert [s.name for s in build_sinks(settings)] == sink_names(settings)
