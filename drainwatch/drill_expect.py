"""The drill's withdrawal system: it announces every outflow it is about to make.

As an exchange's would, it drops a JSON Lines file into the inbox directory the drill's config
names (written under a dot-name, then renamed: docs/expectations.md), and the watcher's intake
reads it before the outflow is sent. What is announced raises no alert; what is not is a leak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Protocol


class Polls(Protocol):
    def poll(self, timeout: float = 0.0) -> int: ...


@dataclass
class Announcer:
    inbox: Path
    intake: Polls
    _numbers: count[int] = field(default_factory=lambda: count(1))
    _batch: list[dict[str, Any]] = field(default_factory=list)
    announced: int = 0

    def expect(self, wallet: str, destination: str, asset: str, amount: int) -> str:
        """Queue one announcement (``amount`` in base units); returns its reference."""
        reference = f"drill-wd-{next(self._numbers):04d}"
        self._batch.append(
            {
                "reference": reference,
                "wallet": wallet,
                "destination": destination,
                "asset": asset,
                "amount_base_units": str(amount),
            }
        )
        return reference

    def send(self) -> int:
        """Drop the queued announcements as one file and let the intake read it now."""
        if not self._batch:
            return 0
        self.inbox.mkdir(parents=True, exist_ok=True)
        name = f"drill-{self._batch[0]['reference']}.jsonl"
        temporary = self.inbox / f".{name}.tmp"
        lines = "".join(json.dumps(doc) + "\n" for doc in self._batch)
        temporary.write_text(lines, encoding="utf-8")
        temporary.rename(self.inbox / name)
        self._batch = []
        taken = self.intake.poll()
        self.announced += taken
        return taken
