"""Alert delivery to a terminal (the default channel, and the drill's)."""

from __future__ import annotations

import sys
from typing import TextIO

from drainwatch.model import Alert


class ConsoleSink:
    """Prints each alert in Japanese then English (or only the one asked for)."""

    def __init__(self, stream: TextIO | None = None, langs: tuple[str, ...] = ("ja", "en")) -> None:
        self._stream = stream or sys.stdout
        self._langs = langs
        self.delivered: list[str] = []

    def deliver(self, alert: Alert, text_en: str, text_ja: str) -> None:
        texts = {"en": text_en, "ja": text_ja}
        for lang in self._langs:
            print(texts[lang], file=self._stream)
        print(file=self._stream)
        self._stream.flush()
        self.delivered.append(alert.id)
