"""The wiring of alert delivery and of the expectations' ways in: channels → outbox sinks,
the notifier, the intake a running watcher reads. Part of the one place that turns settings
into adapters (``drainwatch.wiring`` builds the rest and imports these); secrets named by
``*_env`` fields are read here and nowhere else.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from alerts.blocks import CardMaker
from alerts.console import ConsoleSink
from alerts.notifier import Notifier
from drainwatch.errors import ConfigError
from drainwatch.ports import AlertCard, AlertSink, Delivery, DeliverySink

if TYPE_CHECKING:
    from drainwatch.config import Settings
    from drainwatch.config_models import ChannelSettings
    from drainwatch.wiring import App

#: How often a running watcher looks into the expectations inbox.
INBOX_POLL_SECONDS = 0.25


def _env(field_path: str, name: str | None) -> str:
    value = os.environ.get(name or "")
    if not value:
        raise ConfigError(field_path, f"environment variable {name} is not set")
    return value


def sink_names(settings: Settings) -> list[str]:
    """The outbox's name of each configured channel: stable across restarts, since undelivered
    rows are found by it (``console``, ``slack:#channel``, ``webhook:https://HOST/...#DIGEST``).
    A webhook's URL may carry a token in its path or query: its name keeps only the scheme and
    host, and a digest of the whole URL that tells two webhooks on one host apart."""
    return list(dict.fromkeys(_sink_name(c) for c in settings.alerts.channels))


def _sink_name(channel: ChannelSettings) -> str:
    if channel.kind == "console":
        return "console"
    if channel.kind == "slack":
        return f"slack:{channel.channel}"
    return webhook_name(channel.url)


def build_sinks(settings: Settings, stream: TextIO | None = None) -> list[DeliverySink]:
    """The configured channels as outbox sinks, named as ``sink_names`` names them; a channel
    listed twice is sent to once."""
    sinks: dict[str, DeliverySink] = {}
    for i, channel in enumerate(settings.alerts.channels):
        where, name = f"alerts.channels[{i}]", _sink_name(channel)
        if name in sinks:
            continue
        if channel.kind == "console":
            sinks[name] = ConsoleSink(stream, name=name)
        elif channel.kind == "slack":
            from alerts.slack import SlackSink

            token = _env(f"{where}.token_env", channel.token_env)
            sinks[name] = SlackSink(name, channel.channel, token, base_url=channel.base_url)
        else:
            from alerts.webhook import WebhookSink

            secret = _env(f"{where}.secret_env", channel.secret_env)
            now = lambda: datetime.now(UTC)  # noqa: E731
            sinks[name] = WebhookSink(name, channel.url, secret, clock=now)
    return list(sinks.values()) or [ConsoleSink(stream)]


class _Observer:
    """An ``AlertSink`` (a test's collector, the drill's recorder) as an outbox sink: it gets
    every change of every alert, as the processor used to hand them over."""

    def __init__(self, sink: AlertSink, name: str) -> None:
        self._sink = sink
        self.name = name

    def send(self, delivery: Delivery, card: AlertCard, previous_ref: str | None) -> str | None:
        self._sink.deliver(delivery.alert, card.text_en, card.text_ja)
        return None


def delivery_sinks(sinks: Sequence[AlertSink | DeliverySink]) -> list[DeliverySink]:
    out: list[DeliverySink] = []
    for i, sink in enumerate(sinks):
        if isinstance(getattr(sink, "name", None), str) and hasattr(sink, "send"):
            out.append(sink)  # type: ignore[arg-type]
        else:
            out.append(_Observer(sink, f"observer:{type(sink).__name__}:{i}"))  # type: ignore[arg-type]
    return out


def build_notifier(app: App, sinks: Sequence[AlertSink | DeliverySink]) -> Notifier:
    return Notifier(
        app.store,
        delivery_sinks(sinks),
        CardMaker(app.chains, app.assets, app.book),
        clock=lambda: datetime.now(UTC),
        max_retry_seconds=app.settings.alerts.delivery.max_retry_seconds,
    )


class Intake:
    """The expectations' ways in that a running watcher reads: the inbox directory and the
    Kafka topic, as configured (``alerts.expectations``). ``poll`` is cheap when nothing
    waits; a store failure leaves the file or messages for the next poll."""

    def __init__(self, app: App) -> None:
        from alerts.inbox import EXPECTATIONS_TOPIC, INTAKE_GROUP, ExpectationConsumer, Inbox
        from alerts.intake import ExpectationParser

        intake = app.settings.alerts.expectations
        parser = ExpectationParser.for_settings(app.settings)
        self.inbox = (
            Inbox(app.settings.resolve_path(intake.inbox), parser, app.store)
            if intake.inbox
            else None
        )
        self.consumer = (
            ExpectationConsumer(
                app.bus,
                app.topic(EXPECTATIONS_TOPIC),
                app.topic(INTAKE_GROUP),
                parser.parse_json,
                app.store,
            )
            if intake.kafka
            else None
        )

    @property
    def configured(self) -> bool:
        return self.inbox is not None or self.consumer is not None

    def poll(self, timeout: float = 0.0) -> int:
        taken = 0
        if self.inbox is not None:
            taken += self.inbox.poll()
        if self.consumer is not None:
            taken += self.consumer.poll(timeout=timeout)
        return taken

    def run(self, stop: threading.Event, on_error: Callable[[str, Exception, float], None]) -> None:
        """The service's intake thread: the inbox four times a second, the topic as it comes."""
        failures = 0
        while not stop.is_set():
            try:
                self.poll(timeout=0.25 if self.consumer is not None else 0.0)
                failures = 0
            except Exception as exc:  # the thread outlives any one failure; nothing is lost
                failures += 1
                pause = min(60.0, 2.0**failures)
                on_error("expectations", exc, pause)
                stop.wait(pause)
                continue
            if self.consumer is None:
                stop.wait(INBOX_POLL_SECONDS)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def webhook_name(url: str) -> str:
    parts = urlsplit(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    # ASCII only: the name goes into the Idempotency-Key header, and headers are Latin-1.
    host = parts.netloc.rpartition("@")[2].lower()
    return f"webhook:{parts.scheme}://{host}/...#{digest}"
