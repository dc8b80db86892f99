"""Rows of drainwatch.store.schema to and from the frozen dataclasses of drainwatch.model."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from drainwatch.model import (
    Alert,
    AlertState,
    BlockRef,
    ControlChange,
    ControlKind,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
    TimelineKind,
    Transfer,
    TransferKind,
    TransferStatus,
    Utxo,
)
from drainwatch.store.schema import (
    AlertRow,
    ControlChangeRow,
    IncidentRow,
    TimelineEntryRow,
    TransferRow,
    UtxoRow,
)


def transfer_to_row(t: Transfer) -> dict[str, Any]:
    return {
        "chain": t.chain,
        "tx_hash": t.tx_hash,
        "tx_index": t.index,
        "from_address": t.from_address,
        "to_address": t.to_address,
        "from_lower": t.from_address.lower(),
        "to_lower": t.to_address.lower(),
        "asset": t.asset,
        "amount": t.amount,
        "kind": t.kind.value,
        "status": t.status.value,
        "block_height": t.block.height if t.block else None,
        "block_hash": t.block.hash if t.block else None,
        "block_time": t.block_time,
    }


def block_ref(height: int | None, hash_: str | None) -> BlockRef | None:
    return None if height is None or hash_ is None else BlockRef(height, hash_)


def transfer_from_row(r: TransferRow) -> Transfer:
    return Transfer(
        chain=r.chain,
        tx_hash=r.tx_hash,
        index=r.tx_index,
        from_address=r.from_address,
        to_address=r.to_address,
        asset=r.asset,
        amount=r.amount,
        kind=TransferKind(r.kind),
        status=TransferStatus(r.status),
        block=block_ref(r.block_height, r.block_hash),
        block_time=r.block_time,
    )


def control_change_to_row(c: ControlChange) -> dict[str, Any]:
    chain, anchor, index = c.key
    return {
        "chain": chain,
        "anchor": anchor,
        "change_index": index,
        "tx_hash": c.tx_hash,
        "wallet_address": c.wallet_address,
        "wallet_lower": c.wallet_address.lower(),
        "kind": c.kind.value,
        "status": c.status.value,
        "subject": c.subject,
        "value": c.value,
        "contract": c.contract,
        "block_height": c.block.height if c.block else None,
        "block_hash": c.block.hash if c.block else None,
        "block_time": c.block_time,
    }


def control_change_from_row(r: ControlChangeRow) -> ControlChange:
    return ControlChange(
        chain=r.chain,
        index=r.change_index,
        wallet_address=r.wallet_address,
        kind=ControlKind(r.kind),
        status=TransferStatus(r.status),
        tx_hash=r.tx_hash,
        subject=r.subject,
        value=r.value,
        contract=r.contract,
        block=block_ref(r.block_height, r.block_hash),
        block_time=r.block_time,
    )


def alert_to_row(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule_id": a.rule_id,
        "severity": a.severity.value,
        "state": a.state.value,
        "chain": a.chain,
        "wallet": a.wallet,
        "subject_0": a.subject[0],
        "subject_1": a.subject[1],
        "subject_2": a.subject[2],
        "raised_at": a.raised_at,
        "tx_hash": a.tx_hash,
        "block_height": a.block.height if a.block else None,
        "block_hash": a.block.hash if a.block else None,
        "asset": a.asset,
        "amount": a.amount,
        "counterparty": a.counterparty,
        "facts": json.dumps([list(f) for f in a.facts], ensure_ascii=False),
        "acked_by": a.acked_by,
        "acked_at": a.acked_at,
    }


def alert_from_row(r: AlertRow) -> Alert:
    return Alert(
        id=r.id,
        rule_id=r.rule_id,
        severity=Severity(r.severity),
        state=AlertState(r.state),
        chain=r.chain,
        wallet=r.wallet,
        subject=(r.subject_0, r.subject_1, r.subject_2),
        raised_at=r.raised_at,
        tx_hash=r.tx_hash,
        block=block_ref(r.block_height, r.block_hash),
        asset=r.asset,
        amount=r.amount,
        counterparty=r.counterparty,
        facts=tuple((str(k), str(v)) for k, v in json.loads(r.facts or "[]")),
        acked_by=r.acked_by,
        acked_at=r.acked_at,
    )


def incident_to_row(i: Incident) -> dict[str, Any]:
    return {
        "id": i.id,
        "title": i.title,
        "opened_at": i.opened_at,
        "status": i.status.value,
        "closed_at": i.closed_at,
        "from_alert": i.from_alert,
        "exercise": i.exercise,
    }


def incident_from_row(r: IncidentRow) -> Incident:
    return Incident(
        id=r.id,
        title=r.title,
        opened_at=r.opened_at,
        status=IncidentStatus(r.status),
        closed_at=r.closed_at,
        from_alert=r.from_alert,
        exercise=r.exercise,
    )


def timeline_digest(e: TimelineEntry) -> str:
    fields = [e.kind.value, e.text, e.actor, e.section, e.ref]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def timeline_entry_from_row(r: TimelineEntryRow) -> TimelineEntry:
    return TimelineEntry(
        incident_id=r.incident_id,
        at=r.at,
        kind=TimelineKind(r.kind),
        text=r.text,
        actor=r.actor,
        section=r.section,
        ref=r.ref,
    )


def utxo_to_row(u: Utxo) -> dict[str, Any]:
    """The created output's columns; a spend is written by its own statement, never here."""
    return {
        "chain": u.chain,
        "txid": u.txid,
        "vout": u.vout,
        "wallet": u.wallet,
        "address": u.address,
        "amount": u.amount,
        "block_height": u.block.height,
        "block_hash": u.block.hash,
    }


def utxo_from_row(r: UtxoRow) -> Utxo:
    return Utxo(
        chain=r.chain,
        txid=r.txid,
        vout=r.vout,
        wallet=r.wallet,
        address=r.address,
        amount=r.amount,
        block=BlockRef(r.block_height, r.block_hash),
        spent_by=r.spent_by,
        spent_block=block_ref(r.spent_height, r.spent_hash),
    )
