"""Two of the ways expectations come in, polled by the watch loop: a directory and a Kafka topic.

``Inbox``: the withdrawal system writes a JSON Lines file under a name starting with ``.``
(``.batch-42.jsonl.tmp``) and renames it to its final ``*.jsonl`` name once complete; a rename
within one directory is atomic, so a file is never read half written. ``poll`` stores each
complete file in one call (all or nothing) and only then moves it to ``done/``; a crash between
the two leaves the file to be read again, which is a replay. A bad line, or a reference already
stored with other values, moves the file to ``rejected/`` with ``NAME.error`` beside it.

``ExpectationConsumer``: one JSON expectation per message on ``<topic_prefix>.expectations``.
The offsets of a poll's messages are committed after the good ones are stored (at least once);
a malformed one is logged with its topic, partition and offset and skipped — committed with the
rest, since no retry can mend it and it must not block the topic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from alerts.intake import (
    ExpectationInputError,
    ExpectationParser,
    Parsed,
    decode_lines,
    store_parsed,
)
from drainwatch.errors import BadInput, ExpectationConflict
from drainwatch.ports import EventBus, Message, Store

log = logging.getLogger(__name__)

#: The topic's name after ``<bus.topic_prefix>.``, and the consumer group's.
EXPECTATIONS_TOPIC = "expectations"
INTAKE_GROUP = "expectation-intake"

SUFFIX = ".jsonl"
DONE = "done"
REJECTED = "rejected"

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Inbox:
    """A directory of dropped JSON Lines files (see the module docstring)."""

    def __init__(
        self, directory: Path, parser: ExpectationParser, store: Store, clock: Clock = _utcnow
    ) -> None:
        self.directory = directory
        self._parser = parser
        self._store = store
        self._clock = clock
        for sub in (directory, directory / DONE, directory / REJECTED):
            sub.mkdir(parents=True, exist_ok=True)

    def poll(self) -> int:
        """Read every complete file waiting, oldest name first; returns how many new
        expectations were stored. One directory listing when there is nothing to do.
        A ``StoreError`` propagates and leaves the file where it is, for the next poll."""
        with os.scandir(self.directory) as entries:
            names = sorted(
                e.name
                for e in entries
                if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.is_file()
            )
        return sum(self._take(name) for name in names)

    def _take(self, name: str) -> int:
        path = self.directory / name
        source = f"file:{name}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # another poller took it meanwhile
            return 0
        try:
            text = decode_lines(raw, name)
            parsed = self._parser.parse_lines(text, self._clock(), name)
            added = store_parsed(self._store, parsed, source, self._clock())
        except (ExpectationInputError, ExpectationConflict) as exc:
            self._reject(name, exc)
            return 0
        _move(path, self.directory / DONE)
        log.info(
            "expectations: %s: %d stored (%d new) / %d 件登録（新規 %d 件）",
            name,
            len(parsed),
            added,
            len(parsed),
            added,
        )
        return added

    def _reject(self, name: str, exc: BadInput) -> None:
        rejected = _move(self.directory / name, self.directory / REJECTED)
        note = rejected.with_name(rejected.name + ".error")
        note.write_text(
            f"{exc}\nnothing of this file was registered / このファイルの予定は登録されて"
            "いません\n",
            encoding="utf-8",
        )
        log.warning("expectations: %s refused, moved to %s: %s", name, rejected, exc)


def _move(path: Path, directory: Path) -> Path:
    """Move ``path`` into ``directory`` without replacing a file of the same name there."""
    target = directory / path.name
    n = 1
    while target.exists():
        target = directory / f"{path.name.removesuffix(SUFFIX)}.{n}{SUFFIX}"
        n += 1
    os.replace(path, target)
    return target


class ExpectationConsumer:
    """One member of ``group`` on the expectations ``topic`` (see the module docstring)."""

    def __init__(
        self,
        bus: EventBus,
        topic: str,
        group: str,
        parse: Callable[[bytes, datetime], Parsed],
        store: Store,
        clock: Clock = _utcnow,
    ) -> None:
        self._subscription = bus.subscribe(topic, group)
        self._parse = parse
        self._store = store
        self._clock = clock
        self._added = 0

    def poll(self, timeout: float = 0.0, max_messages: int = 500) -> int:
        """Handle the messages waiting; returns how many new expectations were stored. A
        ``StoreError`` propagates with nothing committed: the messages come again. On Kafka
        the first polls join the consumer group, which takes seconds: call it every round."""
        self._added = 0
        self._subscription.poll_batch(self._handle, max_messages=max_messages, timeout=timeout)
        return self._added

    def backlog(self) -> int | None:
        return self._subscription.backlog()

    def close(self) -> None:
        self._subscription.close()

    def _handle(self, messages: Sequence[Message]) -> None:
        now = self._clock()
        good: list[tuple[Message, Parsed]] = []
        for message in messages:
            try:
                good.append((message, self._parse(message.value, now)))
            except BadInput as exc:
                _skip(message, exc)
        try:
            self._added = store_parsed(self._store, [p for _, p in good], "kafka", now)
            return
        except ExpectationConflict:
            pass
        # Messages are independent announcements: store the others, skip the conflicting one.
        for message, parsed in good:
            try:
                self._added += store_parsed(self._store, [parsed], "kafka", now)
            except ExpectationConflict as exc:
                _skip(message, exc)


def _skip(message: Message, exc: BadInput) -> None:
    log.error(
        "expectations: message skipped at %s partition %d offset %d: %s / "
        "不正な予定メッセージをスキップしました（%s パーティション %d オフセット %d）",
        message.topic,
        message.partition,
        message.offset,
        exc,
        message.topic,
        message.partition,
        message.offset,
    )
