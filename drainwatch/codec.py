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
    fields = _encoded_fields(typing.cast(typing.Hashable, type(obj)))
    if fields is not None:
        out: dict[str, Any] = {}
        for name, amount in fields:
            value = getattr(obj, name)
            out[name] = str(value) if amount and value is not None else encode(value)
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


@cache
def _encoded_fields(cls: Any) -> tuple[tuple[str, bool], ...] | None:
    """A dataclass's fields as (name, is an amount), once per class; None for other types."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(
        (f.name, f.metadata.get("json") == "decimal-string") for f in dataclasses.fields(cls)
    )


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
    return typing.cast(T, _decoder(typing.cast(typing.Hashable, cls), False)(data, path))


#: A compiled decoder: (JSON value, its path for messages) -> model value.
_Decoder = typing.Callable[[Any, str], Any]


@cache
def _decoder(tp: Any, amount: bool) -> _Decoder:
    """The decoder of one model type, worked out once from its annotations and kept: decoding
    is then a walk over prepared steps, not a fresh look at the type at every value."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return _union_decoder(tp, amount)
    if origin is tuple:
        return _tuple_decoder(tp)
    if dataclasses.is_dataclass(tp):
        return _dataclass_decoder(typing.cast(type, tp))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _enum_decoder(tp)
    if tp is datetime:
        return _decode_time
    if tp is bool:
        return _decode_bool
    if tp is int:
        return parse_amount if amount else _decode_int
    if tp is str:
        return _decode_str

    def unsupported(data: Any, path: str) -> Any:
        raise CodecError(path, f"unsupported type in model: {tp!r}")

    return unsupported


def _union_decoder(tp: Any, amount: bool) -> _Decoder:
    args = typing.get_args(tp)
    members = [a for a in args if a is not type(None)]
    nullable = len(members) < len(args)
    inner = _decoder(members[0], amount) if len(members) == 1 else None

    def decode_union(data: Any, path: str) -> Any:
        if data is None:
            if nullable:
                return None
            raise CodecError(path, "must not be null")
        if inner is None:
            raise CodecError(path, "ambiguous union in model")
        return inner(data, path)

    return decode_union


def _tuple_decoder(tp: Any) -> _Decoder:
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0], False)

        def decode_items(data: Any, path: str) -> Any:
            if not isinstance(data, list):
                raise CodecError(path, "expected a list")
            return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(data))

        return decode_items
    items = [_decoder(a, False) for a in args]

    def decode_fixed(data: Any, path: str) -> Any:
        if not isinstance(data, list):
            raise CodecError(path, "expected a list")
        if len(items) != len(data):
            raise CodecError(path, f"expected a list of {len(items)} items")
        return tuple(d(v, f"{path}[{i}]") for i, (d, v) in enumerate(zip(items, data, strict=True)))

    return decode_fixed


def _dataclass_decoder(cls: type) -> _Decoder:
    hints = typing.get_type_hints(cls)
    steps = [
        (
            f.name,
            _decoder(hints[f.name], f.metadata.get("json") == "decimal-string"),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    ]
    names = frozenset(name for name, _, _ in steps)

    def decode_object(data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            raise CodecError(path, f"expected an object for {cls.__name__}")
        if not names.issuperset(data):
            unknown = sorted(set(data) - names)
            raise CodecError(f"{path}.{unknown[0]}", f"unknown field of {cls.__name__}")
        kwargs: dict[str, Any] = {}
        for name, decode_field, required in steps:
            if name in data:
                kwargs[name] = decode_field(data[name], f"{path}.{name}")
            elif required:
                raise CodecError(f"{path}.{name}", "missing")
        return cls(**kwargs)

    return decode_object


def _enum_decoder(tp: type[Enum]) -> _Decoder:
    def decode_enum(data: Any, path: str) -> Any:
        try:
            return tp(data)
        except ValueError as exc:
            allowed = ", ".join(str(m.value) for m in tp)
            raise CodecError(path, f"{data!r} is not one of: {allowed}") from exc

    return decode_enum


def _decode_time(data: Any, path: str) -> datetime:
    if not isinstance(data, str):
        raise CodecError(path, "expected an ISO 8601 time string")
    return parse_time(data, path)


def _decode_bool(data: Any, path: str) -> bool:
    if not isinstance(data, bool):
        raise CodecError(path, "expected true or false")
    return data


def _decode_int(data: Any, path: str) -> int:
    if isinstance(data, bool) or not isinstance(data, int):
        raise CodecError(path, "expected an integer")
    return data


def _decode_str(data: Any, path: str) -> str:
    if not isinstance(data, str):
        raise CodecError(path, "expected a string")
    return data


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
