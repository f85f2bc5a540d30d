"""The msgpack codec of payloads: plain data as it is, other exact types as extension values.

msgpack written by msgspec carries str, bytes, float, bool, None, ints within 64 bits,
lists and dicts of them as they are. Values it would not round-trip exactly (tuple, set,
frozenset, Decimal, UUID, date, time, datetime with its time zone, timedelta, bytearray,
complex, ints beyond 64 bits, dicts whose keys are not plain scalars) travel as typed
extension values, so they come back with their type. A task handle travels as its plain
id (a ``str``). Anything else raises
:class:`NeedsDill`: only dill can carry it (``omniq.serialization`` decides whether it may).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from omniq._ids import IdStr
from omniq.errors import SerializationError

__all__ = [
    "DECODER",
    "ENCODER",
    "FAST",
    "PLAIN",
    "MsgspecSerializer",
    "NeedsDill",
    "SerializationDetector",
    "callable_name",
    "flat",
    "type_name",
    "wire",
]

# Types msgpack carries exactly as they are (ints only within 64 bits, hence the fallback below).
FAST: Final[frozenset[type]] = frozenset({int, str, float, bool, type(None), bytes})
PLAIN: Final[frozenset[type]] = frozenset({str, float, bool, type(None), bytes})
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1

# Extension codes: part of the stored format, never renumber.
_EXT_TUPLE, _EXT_SET, _EXT_FROZENSET, _EXT_DICT = 1, 2, 3, 4
_EXT_DECIMAL, _EXT_UUID, _EXT_DATE, _EXT_TIME, _EXT_DATETIME = 5, 6, 7, 8, 9
_EXT_TIMEDELTA, _EXT_BIGINT, _EXT_BYTEARRAY, _EXT_COMPLEX = 10, 11, 12, 13


class NeedsDill(Exception):
    """Raised while converting when a value has no exact msgpack form."""

    def __init__(self, offender: type) -> None:
        super().__init__(offender.__qualname__)
        self.offender = offender


def _ext_hook(code: int, data: memoryview) -> Any:
    decode = _DECODERS.get(code)
    if decode is None:
        raise ValueError(f"unknown msgpack extension code {code}")
    return decode(data)


ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(ext_hook=_ext_hook)
_Ext = msgspec.msgpack.Ext


def wire(value: Any) -> Any:
    """Return ``value`` as a tree msgpack round-trips exactly; raise ``NeedsDill`` otherwise."""
    kind = type(value)
    if kind in PLAIN:
        return value
    if kind is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        size = value.bit_length() // 8 + 1
        return _Ext(_EXT_BIGINT, value.to_bytes(size, "big", signed=True))
    if kind is list:
        return [item if type(item) in PLAIN else wire(item) for item in value]
    if kind is dict:
        if all(type(key) in PLAIN or _small_int(key) for key in value):
            return {k: v if type(v) in PLAIN else wire(v) for k, v in value.items()}
        pairs = [part for key, item in value.items() for part in (wire(key), wire(item))]
        return _Ext(_EXT_DICT, ENCODER.encode(pairs))
    typed = _ENCODERS.get(kind)
    if typed is None:
        if isinstance(value, IdStr):  # a task handle passed as an argument: its plain id
            return str(value)
        raise NeedsDill(kind)
    code, encode = typed
    return _Ext(code, encode(value))


def flat(value: Any) -> bool:
    """True for a list or dict of scalars that msgpack carries as they are (ints unchecked)."""
    kind = type(value)
    if kind is list:
        return all(type(item) in FAST for item in value)
    if kind is dict:
        return all(type(k) in FAST and type(v) in FAST for k, v in value.items())
    return False


def _small_int(value: Any) -> bool:
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _wire_items(value: Any) -> bytes:
    return ENCODER.encode([wire(item) for item in value])


def _tz_wire(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default = dt.timezone(offset).tzname(None)
        return [offset // dt.timedelta(microseconds=1), None if name == default else name]
    if type(tz) is ZoneInfo and tz.key is not None:
        return tz.key
    # dateutil, pytz and other tzinfo classes have no exact portable form here.
    raise NeedsDill(type(tz))


def _tz_load(spec: Any) -> dt.tzinfo | None:
    if spec is None:
        return None
    if type(spec) is str:
        return ZoneInfo(spec)
    micros, name = spec
    offset = dt.timedelta(microseconds=micros)
    return dt.timezone(offset) if name is None else dt.timezone(offset, name)


def _encode_datetime(value: dt.datetime) -> bytes:
    parts = [value.year, value.month, value.day, value.hour, value.minute, value.second]
    tail = [value.microsecond, value.fold, _tz_wire(value.tzinfo)]
    return ENCODER.encode(parts + tail)


def _decode_datetime(data: memoryview) -> dt.datetime:
    year, month, day, hour, minute, second, micro, fold, tz = DECODER.decode(data)
    tzinfo = _tz_load(tz)
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo, fold=fold)


def _encode_time(value: dt.time) -> bytes:
    parts = [value.hour, value.minute, value.second, value.microsecond, value.fold]
    return ENCODER.encode([*parts, _tz_wire(value.tzinfo)])


def _decode_time(data: memoryview) -> dt.time:
    hour, minute, second, micro, fold, tz = DECODER.decode(data)
    return dt.time(hour, minute, second, micro, tzinfo=_tz_load(tz), fold=fold)


def _decode_dict(data: memoryview) -> dict[Any, Any]:
    flat = DECODER.decode(data)
    if type(flat) is not list or len(flat) % 2:
        raise ValueError("malformed dict extension")
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _decode_list(data: memoryview) -> list[Any]:
    items = DECODER.decode(data)
    if type(items) is not list:
        raise ValueError("malformed sequence extension")
    return items


_ENCODERS: Final[dict[type, tuple[int, Callable[[Any], bytes]]]] = {
    tuple: (_EXT_TUPLE, _wire_items),
    set: (_EXT_SET, _wire_items),
    frozenset: (_EXT_FROZENSET, _wire_items),
    Decimal: (_EXT_DECIMAL, lambda v: str(v).encode()),
    uuid.UUID: (_EXT_UUID, lambda v: v.bytes),
    dt.date: (_EXT_DATE, lambda v: ENCODER.encode(v.toordinal())),
    dt.time: (_EXT_TIME, _encode_time),
    dt.datetime: (_EXT_DATETIME, _encode_datetime),
    dt.timedelta: (_EXT_TIMEDELTA, lambda v: ENCODER.encode([v.days, v.seconds, v.microseconds])),
    bytearray: (_EXT_BYTEARRAY, bytes),
    complex: (_EXT_COMPLEX, lambda v: ENCODER.encode([v.real, v.imag])),
}

_DECODERS: Final[dict[int, Callable[[memoryview], Any]]] = {
    _EXT_TUPLE: lambda d: tuple(_decode_list(d)),
    _EXT_SET: lambda d: set(_decode_list(d)),
    _EXT_FROZENSET: lambda d: frozenset(_decode_list(d)),
    _EXT_DICT: _decode_dict,
    _EXT_DECIMAL: lambda d: Decimal(bytes(d).decode()),
    _EXT_UUID: lambda d: uuid.UUID(bytes=bytes(d)),
    _EXT_DATE: lambda d: dt.date.fromordinal(DECODER.decode(d)),
    _EXT_TIME: _decode_time,
    _EXT_DATETIME: _decode_datetime,
    _EXT_TIMEDELTA: lambda d: dt.timedelta(*DECODER.decode(d)),
    _EXT_BIGINT: lambda d: int.from_bytes(d, "big", signed=True),
    _EXT_BYTEARRAY: bytearray,
    _EXT_COMPLEX: lambda d: complex(*DECODER.decode(d)),
}


def type_name(kind: type) -> str:
    """``kind``'s name as an error message shows it (``tuple``, ``Point``)."""
    return kind.__qualname__ if kind.__module__ == "builtins" else kind.__name__


def callable_name(func: Callable[..., Any]) -> str:
    """``func`` as an error message names it (``send_email()``)."""
    name = getattr(func, "__qualname__", None) or type_name(type(func))
    return f"{name}()" if isinstance(name, str) else repr(func)


class SerializationDetector:
    """Decides whether msgspec can carry a value exactly, walking containers.

    Example::

        >>> SerializationDetector().needs_dill((1, {"a": [2.5, None]}))
        False
        >>> SerializationDetector().needs_dill(lambda: 1)
        True
    """

    def offender(self, value: Any) -> type | None:
        """Return the first type inside ``value`` that msgspec cannot carry, or ``None``."""
        try:
            wire(value)
        except NeedsDill as exc:
            return exc.offender
        except RecursionError:  # a cycle or absurd nesting: only dill can handle it
            return type(value)
        return None

    def needs_dill(self, value: Any) -> bool:
        """Return True when ``value`` (or something inside it) cannot travel as msgpack."""
        return self.offender(value) is not None


class MsgspecSerializer:
    """The msgpack codec: exact round trip of plain data and of the typed values above.

    ``dumps`` raises :class:`SerializationError` for a value it cannot carry exactly.
    """

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as msgpack (no tag byte)."""
        try:
            return ENCODER.encode(wire(value))
        except NeedsDill as exc:
            raise SerializationError(
                f"msgspec cannot encode a value of type {type_name(exc.offender)}"
            ) from None
        except RecursionError:
            raise SerializationError("msgspec cannot encode a self-referencing value") from None

    def loads(self, data: bytes | memoryview) -> Any:
        """Decode msgpack bytes written by :meth:`dumps`."""
        try:
            return DECODER.decode(data)
        except Exception as exc:
            raise SerializationError(f"corrupt msgpack payload: {exc}") from exc
