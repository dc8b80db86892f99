"""Alert delivery to any HTTP endpoint: canonical JSON, signed with HMAC-SHA256.

The receiver checks ``X-Drainwatch-Signature: sha256=HEX`` = HMAC-SHA256(secret, timestamp +
"." + body) with ``X-Drainwatch-Timestamp`` (Unix seconds; a receiver refuses stale ones, so a
captured request cannot be replayed later), and drops a second request with an
``Idempotency-Key`` it has seen: delivery is at least once, so a row may come twice.

A 2xx answer delivers the row. A 429 (with its ``Retry-After``), a 5xx, a timeout or a broken
connection is retried; any other answer (a 4xx, a redirect) is a refusal, retried at the
longest back-off and logged, never dropped. The standard library's HTTP client is enough here
(httpx is not a dependency); redirects are not followed, since a redirected POST either loses
its body or resends it somewhere nobody configured.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from http.client import HTTPException
from typing import Any

from alerts.slack import parse_retry_after
from drainwatch import codec
from drainwatch.errors import DeliveryError
from drainwatch.ports import AlertCard, Delivery


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx reaches the caller as an HTTPError


def webhook_body(delivery: Delivery, card: AlertCard) -> bytes:
    """The request body: canonical JSON (sorted keys, no spaces, UTF-8)."""
    document = {
        "alert": codec.encode(delivery.alert),
        "previous_state": None
        if delivery.previous_state is None
        else delivery.previous_state.value,
        "news": delivery.news,
        "delivery_id": delivery.id,
        "text_en": card.text_en,
        "text_ja": card.text_ja,
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp + "." + body`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookSink:
    """POSTs each outbox row to ``url``. ``name`` is its outbox name (``webhook:https://HOST/...#DIGEST``);
    ``secret`` the signing key (from the environment, never logged); ``clock`` the time in
    UTC, for the timestamp header."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        *,
        clock: Callable[[], datetime],
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._url = url
        self._secret = secret
        self._clock = clock
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    def send(self, delivery: Delivery, card: AlertCard, previous_ref: str | None) -> str | None:
        body = webhook_body(delivery, card)
        timestamp = str(int(self._clock().timestamp()))
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "drainwatch",
                "X-Drainwatch-Timestamp": timestamp,
                "X-Drainwatch-Signature": signature(self._secret, timestamp, body),
                "Idempotency-Key": f"{self.name}:{delivery.id}",
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                response.read()
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _refusal(exc) from None
        except (OSError, HTTPException) as exc:
            # Only the type: the text may hold the URL, whose path or query can be a secret.
            raise DeliveryError(f"webhook: no answer ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook: HTTP {status}", refused=True)
        return None


def _refusal(exc: urllib.error.HTTPError) -> DeliveryError:
    status = exc.code
    reason = f"webhook: HTTP {status}"
    if status == 429:
        return DeliveryError(reason, retry_after=parse_retry_after(exc.headers.get("Retry-After")))
    if status >= 500 or status == 408:
        return DeliveryError(reason)
    return DeliveryError(f"{reason}: the receiver refused the request", refused=True)
