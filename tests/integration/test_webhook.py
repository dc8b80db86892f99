"""The webhook sink against a local HTTP receiver that checks every signature: 2xx delivers,
429 / 5xx / a dropped connection are retried, a 4xx or a redirect is refused and kept, and the
secret never reaches a log line."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alerts.notifier import Notifier
from alerts.webhook import WebhookSink
from drainwatch.errors import DeliveryError
from drainwatch.ports import Delivery
from drainwatch.store import SqlStore, open_store
from tests.fixtures.outbox import T0, alert, cards, enqueue_lifecycle

SECRET = "whsec-do-not-log-me"


class Receiver:
    """Answers with the next planned status (then 200), verifies each request's signature,
    and keeps the bodies it accepted by their Idempotency-Key."""

    def __init__(self) -> None:
        self.plan: list[tuple[int, dict[str, str]] | str] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/drainwatch?key=q"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Drainwatch-Timestamp"]
                mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256)
                good = self.headers["X-Drainwatch-Signature"] == f"sha256={mac.hexdigest()}"
                with receiver._lock:
                    receiver.requests += 1
                    receiver.bad_signatures += not good
                    step = receiver.plan.pop(0) if receiver.plan else (200, {})
                    if good and (step == "drop" or step[0] == 200):
                        key = self.headers["Idempotency-Key"]
                        receiver.accepted.setdefault(key, json.loads(body))
                if step == "drop":  # took it, then the connection broke
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers = step
                self.send_response(status if good else 401)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path}/store.db")
    yield opened
    opened.close()


def now() -> datetime:
    return datetime.now(UTC)


def sink(url: str) -> WebhookSink:
    return WebhookSink(f"webhook:{url}", url, SECRET, clock=now, timeout=5)


def row(n: int = 1) -> Delivery:
    return Delivery(n, "webhook:x", alert(n), None, None, T0, 1)


def test_signed_request_delivered(receiver: Receiver) -> None:
    hook = sink(receiver.url)
    assert hook.send(row(), cards()(row().alert), None) is None
    assert receiver.bad_signatures == 0
    (key,) = receiver.accepted
    assert key == f"webhook:{receiver.url}:1"
    assert receiver.accepted[key]["alert"]["id"] == "alert-0001"


def test_a_sink_built_from_the_config_delivers(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink `watch` builds (its name, its secret from the environment) signs and sends:
    its name goes into a header, so it must be ASCII."""
    import copy

    import yaml

    from drainwatch.config import load_config_text
    from drainwatch.wiring_alerts import build_sinks
    from tests.unit.test_config import MINIMAL

    data = copy.deepcopy(MINIMAL)
    url = receiver.url.split("?")[0].replace("/hooks/drainwatch", "/hooks/T000/s3cret")
    data["alerts"] = {"channels": [{"kind": "webhook", "url": url, "secret_env": "DW_T_HOOK"}]}
    monkeypatch.setenv("DW_T_HOOK", SECRET)
    (hook,) = build_sinks(load_config_text(yaml.safe_dump(data)))
    assert hook.send(row(), cards()(row().alert), None) is None
    assert receiver.bad_signatures == 0
    (key,) = receiver.accepted
    assert key == f"{hook.name}:1" and "s3cret" not in key


@pytest.mark.parametrize(
    ("step", "retry_after", "refused"),
    [
        ((429, {"Retry-After": "7"}), 7.0, False),
        ((503, {}), None, False),
        ((400, {}), None, True),
        ((404, {}), None, True),
        ((302, {"Location": "http://127.0.0.1:9/elsewhere"}), None, True),
        ("drop", None, False),
    ],
)
def test_failures_are_told_apart(
    receiver: Receiver, step: Any, retry_after: float | None, refused: bool
) -> None:
    receiver.plan = [step]
    with pytest.raises(DeliveryError) as raised:
        sink(receiver.url).send(row(), cards()(row().alert), None)
    assert (raised.value.retry_after, raised.value.refused) == (retry_after, refused)
    assert SECRET not in str(raised.value) and "key=q" not in str(raised.value)
    assert receiver.requests == 1  # the redirect was not followed


def test_nobody_listening_is_a_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError) as raised:
        sink(f"http://127.0.0.1:{port}/x").send(row(), cards()(row().alert), None)
    assert not raised.value.refused and raised.value.retry_after is None


def test_storm_every_row_accepted_once(
    receiver: Receiver, store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    hook = sink(receiver.url)
    for n in range(8):
        enqueue_lifecycle(store, n, [hook.name], now())
    rows = sum(len(store.outbox(f"alert-{n:04d}")) for n in range(8))
    receiver.plan = [(429, {"Retry-After": "0.2"}), (500, {}), "drop", (502, {}), "drop"] * 3
    receiver.plan.insert(4, (400, {}))
    work = Notifier(store, [hook], cards(), clock=now, max_retry_seconds=0.3,
                    first_retry_seconds=0.02)  # fmt: skip
    with caplog.at_level(logging.INFO):
        for _ in range(400):
            if not store.outbox_backlog():
                break
            work.deliver_due()
            threading.Event().wait(work.wait_seconds() if not store.outbox_backlog() else 0.02)
    assert store.outbox_backlog() == {}
    assert receiver.bad_signatures == 0
    # every row arrived, some twice (a dropped answer): the key tells the receiver which
    assert len(receiver.accepted) == rows
    ids = sorted(body["delivery_id"] for body in receiver.accepted.values())
    assert len(set(ids)) == rows
    assert "refused" in caplog.text
    assert SECRET not in caplog.text and "key=q" not in caplog.text
