"""The one canonical JSON form of every domain object and event.

Encoding rules: enums as their value; datetimes as ISO 8601 in UTC with a ``Z``; tuples as lists;
amounts (fields marked ``AMOUNT`` in the model) as decimal strings of base units; other ints as
JSON numbers. ``dumps`` sorts keys and drops insignificant white space, so equal objects have
byte-equal encodings. Decoding is strict: a wrong type, a missing field or an unknown field
raises ``CodecError`` naming the path, never a silently different value.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from drainwatch.errors import CodecError
from drainwatch.events import EVENT_TYPES, Event

T = TypeVar("T")


def encode(obj: Any) -> Any:
    """Turn a domain object into plain JSON-compatible values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("json") == "decimal-string" and value is not None:
                out[f.name] = str(value)
            else:
                out[f.name] = encode(value)
        return out
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, datetime):
        return format_time(obj)
    if isinstance(obj, tuple | list):
        return [encode(v) for v in obj]
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    raise CodecError("$", f"cannot encode value of type {type(obj).__name__}")


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise CodecError("$", "naive datetime: every time in drainwatch carries a time zone")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str, path: str = "$") -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CodecError(path, f"not an ISO 8601 time: {text!r}") from exc
    if value.tzinfo is None:
        raise CodecError(path, "time without a time zone")
    return value.astimezone(UTC)


def dumps(obj: Any) -> str:
    """Canonical text: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(encode(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(cls: type[T], text: str | bytes) -> T:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError("$", f"not JSON: {exc}") from exc
    return decode(cls, data)


def decode(cls: type[T], data: Any, path: str = "$") -> T:
    return typing.cast(T, _decode_value(cls, data, path, amount=False))


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode_dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise CodecError(path, f"expected an object for {cls.__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CodecError(f"{path}.{unknown[0]}", f"unknown field of {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if has_default:
                continue
            raise CodecError(f"{path}.{name}", "missing")
        is_amount = f.metadata.get("json") == "decimal-string"
        kwargs[name] = _decode_value(hints[name], data[name], f"{path}.{name}", amount=is_amount)
    return cls(**kwargs)


def _decode_value(tp: Any, data: Any, path: str, *, amount: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            if len(members) < len(typing.get_args(tp)):
                return None
            raise CodecError(path, "must not be null")
        if len(members) != 1:
            raise CodecError(path, "ambiguous union in model")
        return _decode_value(members[0], data, path, amount=amount)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list):
            raise CodecError(path, "expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                _decode_value(args[0], v, f"{path}[{i}]", amount=False) for i, v in enumerate(data)
            )
        if len(args) != len(data):
            raise CodecError(path, f"expected a list of {len(args)} items")
        return tuple(
            _decode_value(a, v, f"{path}[{i}]", amount=False)
            for i, (a, v) in enumerate(zip(args, data, strict=True))
        )
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(typing.cast(type, tp), data, path)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError as exc:
            allowed = ", ".join(str(m.value) for m in tp)
            raise CodecError(path, f"{data!r} is not one of: {allowed}") from exc
    if tp is datetime:
        if not isinstance(data, str):
            raise CodecError(path, "expected an ISO 8601 time string")
        return parse_time(data, path)
    if tp is bool:
        if not isinstance(data, bool):
            raise CodecError(path, "expected true or false")
        return data
    if tp is int:
        if amount:
            return parse_amount(data, path)
        if isinstance(data, bool) or not isinstance(data, int):
            raise CodecError(path, "expected an integer")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise CodecError(path, "expected a string")
        return data
    raise CodecError(path, f"unsupported type in model: {tp!r}")


def parse_amount(data: Any, path: str = "$") -> int:
    """Base units from a decimal string of digits; anything else (floats, '1e18', '-1') fails."""
    if not isinstance(data, str) or not data.isascii() or not data.isdigit():
        raise CodecError(path, 'an amount is a decimal string of base units, e.g. "1500000"')
    if len(data) > 1 and data.startswith("0"):
        raise CodecError(path, "an amount has no leading zeros")
    return int(data)


def encode_event(event: Event) -> dict[str, Any]:
    for name, cls in EVENT_TYPES.items():
        if type(event) is cls:
            return {"type": name, **encode(event)}
    raise CodecError("$", f"not an event: {type(event).__name__}")


def decode_event(data: Any) -> Event:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise CodecError("$.type", "an event needs a string type")
    cls = EVENT_TYPES.get(data["type"])
    if cls is None:
        raise CodecError("$.type", f"unknown event type {data['type']!r}")
    body = {k: v for k, v in data.items() if k != "type"}
    return decode(cls, body)


def dumps_event(event: Event) -> bytes:
    text = json.dumps(
        encode_event(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return text.encode()


def loads_event(raw: bytes | str) -> Event:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError("$", f"not JSON: {exc}") from exc
    return decode_event(data)
