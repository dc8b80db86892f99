"""Alert delivery to a Slack channel through slack-sdk: one message per alert, updated in place.

Exactly once, although a process may die between Slack's answer and the outbox's record:
every top-level message carries Slack message metadata naming its alert, and every thread
reply its alert and outbox row. An attempt that may follow an earlier one (``attempts > 1``)
first looks for what that one posted (``conversations.history`` from a little before the row
was written, ``conversations.replies`` in the thread) and posts only when it finds nothing.

The client retries nothing by itself (``retry_handlers=[]``): slack-sdk's default handler
sends a request again after a dropped connection, which could post a message twice behind the
outbox's back. Every failure becomes a ``DeliveryError`` for the notifier to retry, whose text
names the Slack method and error code, never the token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from alerts.blocks import alert_blocks, fallback_text, news_text
from drainwatch.errors import DeliveryError
from drainwatch.ports import AlertCard, Delivery

ALERT_EVENT = "drainwatch_alert"
NEWS_EVENT = "drainwatch_alert_news"
#: How far before a row was written an earlier attempt's message is looked for: the clocks of
#: this host and of Slack may disagree.
HISTORY_MARGIN = timedelta(hours=1)
PAGE_SIZE = 200
#: Slack errors that say "try again", unlike the rest of its ``ok: false`` answers.
_TRANSIENT = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header: seconds (Slack sends whole ones; a fraction is
    taken too) or an HTTP date; ``default`` when it is missing or unreadable; at most an hour."""
    seconds = default
    if value is not None:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                seconds = default
    return min(max(seconds, 0.0), 3600.0)


class SlackSink:
    """Posts to ``channel`` (a name such as ``#security-alerts``, or an id) as the bot whose
    token is ``token``. ``name`` is the outbox's sink name (``slack:#security-alerts``)."""

    def __init__(
        self,
        name: str,
        channel: str,
        token: str,
        *,
        base_url: str | None = None,
        timeout: int = 10,
    ) -> None:
        self.name = name
        self._channel = channel
        args: dict[str, Any] = {"token": token, "timeout": timeout, "retry_handlers": []}
        if base_url is not None:
            args["base_url"] = base_url
        self._client = WebClient(**args)
        self._channel_id: str | None = channel if _CHANNEL_ID.match(channel) else None

    def send(self, delivery: Delivery, card: AlertCard, previous_ref: str | None) -> str | None:
        alert = delivery.alert
        content: dict[str, Any] = {
            "text": fallback_text(card),
            "blocks": alert_blocks(alert, card),
            "metadata": {"event_type": ALERT_EVENT, "event_payload": {"alert_id": alert.id}},
        }
        channel, ts = self._locate(delivery, previous_ref)
        posted_now = False
        try:
            if ts is not None and not self._update(channel, ts, content):
                ts = self._find_message(channel, delivery)  # someone deleted the message
            if ts is None:
                answer = self._call("chat.postMessage", self._client.chat_postMessage,
                                    channel=channel, unfurl_links=False, **content)  # fmt: skip
                channel, ts, posted_now = str(answer["channel"]), str(answer["ts"]), True
            reply = news_text(delivery)
            if reply is not None:
                self._reply(delivery, channel, ts, reply, check=not posted_now)
        except DeliveryError as exc:
            if ts is None or exc.ref is not None:
                raise
            # Where the message is is known now: the next attempt need not look for it.
            raise DeliveryError(exc.reason, retry_after=exc.retry_after, refused=exc.refused,
                                ref=f"{channel}:{ts}") from None  # fmt: skip
        return f"{channel}:{ts}"

    def _locate(self, delivery: Delivery, previous_ref: str | None) -> tuple[str, str | None]:
        if previous_ref is not None:
            channel, _, ts = previous_ref.partition(":")
            return channel, ts
        channel = self._resolve_channel()
        if delivery.attempts > 1:
            return channel, self._find_message(channel, delivery)
        return channel, None

    def _update(self, channel: str, ts: str, content: dict[str, Any]) -> bool:
        """Update the message; False when it no longer exists."""
        try:
            self._call("chat.update", self._client.chat_update, channel=channel, ts=ts, **content)
        except DeliveryError as exc:
            if exc.refused and "message_not_found" in exc.reason:
                return False
            raise
        return True

    def _find_message(self, channel: str, delivery: Delivery) -> str | None:
        """The ts of the alert's top-level message posted since a little before the row."""
        oldest = _slack_ts(delivery.created_at - HISTORY_MARGIN)
        pages = self._pages("conversations.history", self._client.conversations_history,
                            channel=channel, oldest=oldest)  # fmt: skip
        for page in pages:
            for message in page.get("messages") or []:
                thread = message.get("thread_ts")
                if thread not in (None, message.get("ts")):
                    continue  # a reply shown in the channel too
                if _payload(message, ALERT_EVENT).get("alert_id") == delivery.alert.id:
                    return str(message["ts"])
        return None

    def _reply(self, delivery: Delivery, channel: str, ts: str, text: str, *, check: bool) -> None:
        alert_id = delivery.alert.id
        if check and delivery.attempts > 1:
            pages = self._pages("conversations.replies", self._client.conversations_replies,
                                channel=channel, ts=ts)  # fmt: skip
            for page in pages:
                for message in page.get("messages") or []:
                    said = _payload(message, NEWS_EVENT)
                    if said.get("alert_id") == alert_id and said.get("delivery_id") == delivery.id:
                        return
        metadata = {
            "event_type": NEWS_EVENT,
            "event_payload": {"alert_id": alert_id, "delivery_id": delivery.id},
        }
        self._call("chat.postMessage", self._client.chat_postMessage, channel=channel,
                   thread_ts=ts, text=text, metadata=metadata)  # fmt: skip

    def _resolve_channel(self) -> str:
        if self._channel_id is not None:
            return self._channel_id
        wanted = self._channel.removeprefix("#")
        kinds = "public_channel,private_channel"
        pages = self._pages("conversations.list", self._client.conversations_list,
                            types=kinds, exclude_archived=True)  # fmt: skip
        for page in pages:
            for found in page.get("channels") or []:
                if found.get("name") == wanted:
                    self._channel_id = str(found["id"])
                    return self._channel_id
        raise DeliveryError(
            f"Slack channel {self._channel} not found, or the app cannot see it "
            f"(Slack チャンネル {self._channel} が見つかりません)",
            refused=True,
        )

    def _pages(
        self, method: str, call: Callable[..., Any], **args: Any
    ) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            extra = {"include_all_metadata": True} if method != "conversations.list" else {}
            page = self._call(method, call, limit=PAGE_SIZE, cursor=cursor, **extra, **args)
            yield page
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return

    def _call(self, method: str, call: Callable[..., Any], **args: Any) -> dict[str, Any]:
        try:
            answer = call(**args)
        except SlackApiError as exc:
            raise _api_error(method, exc) from None
        except (OSError, HTTPException, SlackClientError) as exc:
            # Only the type: the text of a connection error may hold the request's URL.
            raise DeliveryError(
                f"Slack {method}: connection failed ({type(exc).__name__})"
            ) from None
        data = answer.data
        if not isinstance(data, dict):
            raise DeliveryError(f"Slack {method}: the answer is not JSON")
        return data


def _api_error(method: str, exc: SlackApiError) -> DeliveryError:
    status = int(exc.response.status_code)
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    code = str(data.get("error") or "no error code")
    reason = f"Slack {method}: HTTP {status} {code}"
    if status == 429 or code == "ratelimited":
        headers = {str(k).lower(): str(v) for k, v in (exc.response.headers or {}).items()}
        return DeliveryError(reason, retry_after=parse_retry_after(headers.get("retry-after")))
    if status >= 500 or code in _TRANSIENT or code.startswith("Received a response in a non-JSON"):
        return DeliveryError(reason)
    return DeliveryError(reason, refused=True)


def _payload(message: dict[str, Any], event_type: str) -> dict[str, Any]:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != event_type:
        return {}
    payload = metadata.get("event_payload")
    return payload if isinstance(payload, dict) else {}


def _slack_ts(at: datetime) -> str:
    return f"{max(at.timestamp(), 0.0):.6f}"
