"""The expectations in SQL: the statements behind ``SqlStore``'s expectation methods.

(Being written: see issue #5.)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from drainwatch.ports import ExpectationRecord


class ExpectationTable:
    def __init__(self, *, postgres: bool) -> None:
        self._postgres = postgres

    def add(self, conn: Connection, records: list[ExpectationRecord]) -> int:
        raise NotImplementedError

    def listed(
        self, session: Session, chain: str | None, wallet: str | None
    ) -> list[ExpectationRecord]:
        raise NotImplementedError

    def consume(
        self, conn: Connection, reference: str, transfer: tuple[str, str, str], at: datetime
    ) -> bool:
        raise NotImplementedError
