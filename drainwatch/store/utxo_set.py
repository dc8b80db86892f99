"""The watched UTXO set in SQL: the statements behind ``SqlStore``'s UTXO methods.

A row is an output paying a watched wallet, with the block that created it and, once spent, the
spending transaction and block. Spending updates the row instead of deleting it, so that the
balance at any height is one query: outputs created at or below it and not spent at or below it.
A reorg deletes what the replaced blocks created and clears what they spent.

Applying a block is one executemany of one cached statement for its outputs and one for its
spends, whatever their number; every method here runs on the caller's connection, so inside
``SqlStore.batch()`` it is part of the batch's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Table,
    bindparam,
    case,
    delete,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from drainwatch.model import BlockRef, Utxo
from drainwatch.store.rows import utxo_to_row
from drainwatch.store.schema import UtxoRow

_TABLE: Table = UtxoRow.__table__  # type: ignore[assignment]
_SPENT = ("spent_by", "spent_height", "spent_hash")


class UtxoSet:
    """The UTXO set's statements for one backend, built once (building costs more than running)."""

    def __init__(self, *, postgres: bool) -> None:
        self._postgres = postgres
        self._create = _create_statement(postgres)
        self._spend = _spend_statement()

    def apply_block(
        self,
        conn: Connection,
        chain: str,
        block: BlockRef,
        created: Iterable[Utxo],
        spent: Iterable[tuple[str, int, str]],
    ) -> None:
        """See ``Store.apply_utxo_block``. Outputs first: a block may spend what it creates."""
        rows = _created_rows(chain, block, created)
        # The last spend of an outpoint in one call wins, as for outputs.
        spends = {
            (txid, vout): {
                "s_chain": chain,
                "s_txid": txid,
                "s_vout": vout,
                "s_by": spender,
                "s_height": block.height,
                "s_hash": block.hash,
            }
            for txid, vout, spender in spent
        }
        if rows:
            conn.execute(self._create, rows)
        if spends:
            conn.execute(self._spend, list(spends.values()))

    @staticmethod
    def rewind(conn: Connection, chain: str, height: int) -> int:
        """See ``Store.rewind_utxos``: an output both created and spent above ``height`` is
        removed, and counted once."""
        c = _TABLE.c
        removed = conn.execute(delete(_TABLE).where(c.chain == chain, c.block_height > height))
        unspent = conn.execute(
            update(_TABLE)
            .where(c.chain == chain, c.spent_height > height)
            .values(dict.fromkeys(_SPENT))
        )
        return int(removed.rowcount) + int(unspent.rowcount)

    @staticmethod
    def undo_block(conn: Connection, chain: str, block: BlockRef) -> int:
        """Remove what ``block`` (height and hash) created, clear what it spent; returns how
        many rows changed. Another block at the same height is left alone."""
        c = _TABLE.c
        removed = conn.execute(
            delete(_TABLE).where(
                c.chain == chain, c.block_height == block.height, c.block_hash == block.hash
            )
        )
        unspent = conn.execute(
            update(_TABLE)
            .where(c.chain == chain, c.spent_height == block.height, c.spent_hash == block.hash)
            .values(dict.fromkeys(_SPENT))
        )
        return int(removed.rowcount) + int(unspent.rowcount)

    @staticmethod
    def query(chain: str, wallet: str | None, unspent_only: bool) -> Select[UtxoRow]:
        query = select(UtxoRow).where(UtxoRow.chain == chain)
        if wallet is not None:
            query = query.where(UtxoRow.wallet == wallet)
        if unspent_only:
            query = query.where(UtxoRow.spent_height.is_(None))
        return query.order_by(UtxoRow.block_height, UtxoRow.txid, UtxoRow.vout)

    def balances(self, session: Session, chain: str, height: int | None) -> dict[str, int]:
        """See ``Store.utxo_balances``. PostgreSQL sums NUMERIC exactly; SQLite keeps amounts as
        decimal text, which its SUM would turn into a float (or an INTEGER cast would clamp at
        2**63 - 1), so there the amounts are summed here, as Python ints."""
        c = _TABLE.c
        where = [c.chain == chain]
        if height is None:
            where.append(c.spent_height.is_(None))
        else:
            where += [
                c.block_height <= height,
                or_(c.spent_height.is_(None), c.spent_height > height),
            ]
        totals: dict[str, int] = {}
        if self._postgres:
            query = select(c.wallet, func.sum(c.amount)).where(*where).group_by(c.wallet)
            totals = {wallet: int(total) for wallet, total in session.execute(query)}
        else:
            for wallet, amount in session.execute(select(c.wallet, c.amount).where(*where)):
                totals[wallet] = totals.get(wallet, 0) + amount
        return {wallet: total for wallet, total in totals.items() if total}


def _created_rows(chain: str, block: BlockRef, created: Iterable[Utxo]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for utxo in created:
        if utxo.chain != chain or utxo.block != block:
            raise ValueError(
                f"output {utxo.outpoint} of {utxo.chain} block {utxo.block} "
                f"applied as {chain} block {block}"
            )
        # The last sighting of an outpoint in one call wins; it also keeps PostgreSQL from
        # refusing a multi-row statement that would update one row twice.
        rows[(utxo.txid, utxo.vout)] = utxo_to_row(utxo)
    return list(rows.values())


def _create_statement(postgres: bool) -> Any:
    """Insert an output; a known one is changed only when it moves to another block (its
    transaction re-mined after a reorg: whatever spent it then was on the replaced branch too,
    so the spend is cleared) or when what it pays changed. The same block again changes
    nothing, its spend included."""
    stmt = postgresql.insert(_TABLE) if postgres else sqlite.insert(_TABLE)
    new, old = stmt.excluded, _TABLE.c
    moved = or_(old.block_height != new.block_height, old.block_hash != new.block_hash)
    repaid = or_(old.wallet != new.wallet, old.address != new.address, old.amount != new.amount)
    kept_unless_moved = {name: case((moved, null()), else_=old[name]) for name in _SPENT}
    return stmt.on_conflict_do_update(
        index_elements=["chain", "txid", "vout"],
        set_={
            "wallet": new.wallet,
            "address": new.address,
            "amount": new.amount,
            "block_height": new.block_height,
            "block_hash": new.block_hash,
            **kept_unless_moved,
        },
        where=or_(moved, repaid),
    )


def _spend_statement() -> Any:
    """Mark one outpoint spent (run as an executemany); an unknown outpoint matches no row, and
    a spend already recorded as it is matches none either."""
    c = _TABLE.c
    spent_by = bindparam("s_by", type_=c.spent_by.type)
    height = bindparam("s_height", type_=c.spent_height.type)
    hash_ = bindparam("s_hash", type_=c.spent_hash.type)
    return (
        update(_TABLE)
        .where(
            c.chain == bindparam("s_chain"),
            c.txid == bindparam("s_txid"),
            c.vout == bindparam("s_vout"),
            or_(
                c.spent_by.is_distinct_from(spent_by),
                c.spent_height.is_distinct_from(height),
                c.spent_hash.is_distinct_from(hash_),
            ),
        )
        .values(spent_by=spent_by, spent_height=height, spent_hash=hash_)
    )
