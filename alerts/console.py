"""Alert delivery to a terminal (the default channel, and the drill's).

The console is an outbox sink like the others (``send``), and keeps ``deliver`` for callers that
print an alert directly. A terminal keeps no message to update: a later change of an alert is
printed again, with its news first.
"""

from __future__ import annotations

import sys
from typing import TextIO

from alerts.blocks import news
from drainwatch.model import Alert
from drainwatch.ports import AlertCard, Delivery


class ConsoleSink:
    """Prints each alert in Japanese then English (or only the one asked for)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        langs: tuple[str, ...] = ("ja", "en"),
        name: str = "console",
    ) -> None:
        self._stream = stream or sys.stdout
        self._langs = langs
        self.name = name
        self.delivered: list[str] = []

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        texts = {"en": text_en, "ja": text_ja}
        for lang in self._langs:
            print(texts[lang], file=self._stream)
        print(file=self._stream)
        self._stream.flush()
        self.delivered.append(alert.id)

    def send(self, delivery: Delivery, card: AlertCard, previous_ref: str | None) -> str | None:
        said = news(delivery)
        if said is not None:
            en, ja = said
            lines = {"en": f">> {en}", "ja": f">> {ja}"}
            for lang in self._langs:
                print(lines[lang], file=self._stream)
        self.deliver(delivery.alert, card.text_en, card.text_ja)
        return None
