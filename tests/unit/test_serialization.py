"""Serialization (SPEC §5): values keep their type, dill is signed, bad bytes fail cleanly."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import enum
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniq.errors import ConfigError, PayloadSignatureError, SerializationError
from omniq.serialization import (
    DillSerializer,
    MsgspecSerializer,
    SerializationDetector,
    SerializationManager,
    load_or_create_key,
)

KEY = "test-secret"
UNPICKLED: list[str] = []


@dataclass
class Point:
    x: int
    y: int


class Name(str):
    pass


class Color(enum.Enum):
    RED = "red"


class Sentinel:
    """Records every unpickling, to prove a refused payload was never unpickled."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __setstate__(self, state: dict[str, Any]) -> None:
        UNPICKLED.append(state["label"])
        self.__dict__.update(state)


def unsigned_ok(**options: Any) -> SerializationManager:
    """A manager that reads and writes unsigned dill (``allow_unsigned_dill=True``)."""
    return SerializationManager(allow_unsigned_dill=True, **options)


def make_adder(n: int) -> Callable[[int], int]:
    def add(x: int) -> int:
        return x + n

    return add


# Values with an exact msgpack (typed) encoding: they round-trip in strict msgspec mode too.
TYPED_VALUES: dict[str, Any] = {
    "int": 7,
    "negative int": -(2**63),
    "uint64": 2**64 - 1,
    "big int": 2**200,
    "big negative int": -(2**100) - 1,
    "float": 1.5,
    "bool": True,
    "none": None,
    "str": "héllo",
    "bytes": b"\x00\xff",
    "bytearray": bytearray(b"ab"),
    "complex": 1 + 2j,
    "list": [1, "a", None],
    "tuple": (1, "a"),
    "empty tuple": (),
    "nested tuple": (1, (2, [3, (4,)])),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a", "b"}),
    "set of tuples": {(1, 2), (3, 4)},
    "dict int keys": {1: "one", 2: "two"},
    "dict mixed scalar keys": {None: 0, 1.5: 1, b"k": 2, "s": 3, True: 4},
    "dict tuple keys": {(1, 2): "a", (3,): "b"},
    "dict frozenset and date keys": {frozenset({1}): 1, dt.date(2020, 1, 1): 2},
    "dict big int key": {2**70: "big"},
    "decimal": Decimal("1.10"),
    "decimal exponent": Decimal("-1.5E+1000"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "date": dt.date(2024, 2, 29),
    "time": dt.time(13, 14, 15, 161718),
    "time utc": dt.time(1, 2, tzinfo=dt.UTC),
    "datetime naive": dt.datetime(2024, 1, 2, 3, 4, 5, 6),
    "datetime fold": dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Paris")),
    "datetime utc": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    "datetime offset": dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    "datetime named offset": dt.datetime(
        2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
    ),
    "datetime zoneinfo": dt.datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("America/New_York")),
    "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "mixed": {"when": dt.date(2020, 1, 1), "ids": (uuid.UUID(int=1),), "n": [Decimal("2")]},
}

# Values only dill carries exactly.
DILL_VALUES: dict[str, Any] = {
    "dataclass": Point(1, 2),
    "enum member": Color.RED,
    "list of custom": [Point(3, 4)],
    "str subclass": Name("x"),
    "foreign tzinfo": dt.datetime(2024, 1, 1, tzinfo=type("Tz", (dt.tzinfo,), {})()),
}


def assert_same(got: Any, expected: Any) -> None:
    """Equal value AND the same type, recursively; aware datetimes keep their time zone."""
    assert type(got) is type(expected), f"{got!r} is not a {type(expected).__name__}"
    if isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for got_item, expected_item in zip(got, expected, strict=True):
            assert_same(got_item, expected_item)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(next(k for k in got if k == key), key)
            assert_same(got[key], expected[key])
    elif isinstance(expected, (dt.datetime, dt.time)):
        assert got == expected
        assert got.tzinfo == expected.tzinfo
        assert got.fold == expected.fold
        if expected.tzinfo is not None:
            assert got.tzname() == expected.tzname()
    elif isinstance(expected, Decimal):
        assert str(got) == str(expected)
    elif isinstance(expected, (Point, Color)) or not callable(expected):
        assert got == expected


@pytest.mark.parametrize("mode", ["auto", "msgspec", "dill"])
@pytest.mark.parametrize("value", TYPED_VALUES.values(), ids=TYPED_VALUES.keys())
def test_typed_values_round_trip_with_their_type(mode: str, value: Any) -> None:
    manager = unsigned_ok(mode=mode)
    data = manager.dumps(value)
    assert data[:1] == (b"D" if mode == "dill" else b"M")
    assert_same(manager.loads(data), value)


@pytest.mark.parametrize("mode", ["auto", "msgspec"])
@pytest.mark.parametrize("value", TYPED_VALUES.values(), ids=TYPED_VALUES.keys())
def test_typed_values_round_trip_as_arguments(mode: str, value: Any) -> None:
    manager = SerializationManager(mode=mode)
    func, args, kwargs = manager.loads_call(manager.dumps_call(None, (value, 1), {"k": value}))
    assert func is None
    assert_same(args, (value, 1))
    assert_same(kwargs, {"k": value})


def test_common_call_payloads() -> None:
    manager = unsigned_ok()
    for args, kwargs in [
        ((), {}),
        ((1, "a", 2.5, None, True), {}),
        (([1, 2], {"a": 1}), {"x": "y"}),
    ]:
        data = manager.dumps_call(None, args, kwargs)
        assert data[:1] == b"M"
        assert_same(manager.loads_call(data), (None, args, kwargs))


@pytest.mark.parametrize("value", DILL_VALUES.values(), ids=DILL_VALUES.keys())
def test_values_msgspec_cannot_carry_travel_with_dill_in_auto_mode(value: Any) -> None:
    manager = unsigned_ok()
    data = manager.dumps(value)
    assert data[:1] == b"D"
    got = manager.loads(data)
    assert type(got) is type(value)
    if not isinstance(value, dt.datetime):  # its tzinfo class has no __eq__
        assert got == value


def test_self_referencing_list_travels_with_dill() -> None:
    looped: list[Any] = [1]
    looped.append(looped)
    manager = unsigned_ok()
    got = manager.loads(manager.dumps(looped))
    assert got[0] == 1
    assert got[1] is got
    with pytest.raises(SerializationError, match="value"):
        SerializationManager(mode="msgspec").dumps(looped)


def test_exception_result_travels_with_dill() -> None:
    manager = SerializationManager(secret_key=KEY)
    got = manager.loads(manager.dumps(ValueError("boom", 3), what="result"))
    assert type(got) is ValueError
    assert got.args == ("boom", 3)


@pytest.mark.parametrize("func", [lambda x: x * 10, make_adder(5)], ids=["lambda", "closure"])
@pytest.mark.parametrize("secret_key", [None, KEY])
def test_lambda_and_closure_travel_with_dill(
    func: Callable[[int], int], secret_key: str | None
) -> None:
    manager = SerializationManager(secret_key=secret_key, allow_unsigned_dill=secret_key is None)
    data = manager.dumps_call(func, (1,), {})
    assert data[:1] == (b"S" if secret_key else b"D")
    loaded, args, kwargs = manager.loads_call(data)
    assert loaded is not None
    assert loaded(*args, **kwargs) == func(1)


def test_custom_class_argument_switches_the_call_to_dill_in_auto_mode() -> None:
    manager = unsigned_ok()
    data = manager.dumps_call(None, (1, Point(1, 2)), {"t": (1,)})
    assert data[:1] == b"D"
    assert manager.loads_call(data) == (None, (1, Point(1, 2)), {"t": (1,)})


def test_strict_mode_names_the_positional_argument() -> None:
    manager = SerializationManager(mode="msgspec")
    with pytest.raises(SerializationError, match=r"argument 2 \(type Point\)"):
        manager.dumps_call(None, (1, Point(1, 2)), {})


def test_strict_mode_names_the_keyword_argument_and_nested_type() -> None:
    manager = SerializationManager(mode="msgspec")
    with pytest.raises(SerializationError, match=r"keyword argument 'p' \(type Point\)"):
        manager.dumps_call(None, (), {"p": Point(1, 2)})
    with pytest.raises(SerializationError, match=r"argument 1 \(type list containing Point\)"):
        manager.dumps_call(None, ([Point(1, 2)],), {})


def test_strict_mode_refuses_a_callable_and_a_custom_result() -> None:
    manager = SerializationManager(mode="msgspec")
    with pytest.raises(SerializationError, match="the task function"):
        manager.dumps_call(lambda: 1, (), {})
    with pytest.raises(SerializationError, match=r"result \(type Color\)"):
        manager.dumps(Color.RED, what="result")


def test_strict_mode_refuses_to_read_a_dill_payload() -> None:
    data = unsigned_ok().dumps(Point(1, 2))
    with pytest.raises(SerializationError, match="forbids dill"):
        SerializationManager(mode="msgspec").loads(data)


def test_unencodable_argument_is_named_in_auto_mode() -> None:
    generator = (i for i in range(3))
    with pytest.raises(SerializationError) as raised:
        unsigned_ok().dumps_call(None, (1, generator), {})
    # The argument, its type and dill's reason; not the type of the call's tuple.
    assert str(raised.value) == (
        "cannot encode argument 2 (type generator) with dill "
        "(TypeError: cannot pickle 'generator' object)"
    )


def test_signed_payload_round_trip() -> None:
    manager = SerializationManager(secret_key=KEY.encode())
    data = manager.dumps(Sentinel("ok"))
    assert data[:1] == b"S"
    assert manager.loads(data).label == "ok"


@pytest.mark.parametrize("position", [1, 10, -1], ids=["mac", "mac end", "pickle"])
def test_tampered_payload_is_refused_and_never_unpickled(position: int) -> None:
    manager = SerializationManager(secret_key=KEY)
    data = bytearray(manager.dumps(Sentinel("tampered")))
    data[position] ^= 0x01
    UNPICKLED.clear()
    with pytest.raises(PayloadSignatureError):
        manager.loads(bytes(data))
    assert UNPICKLED == []


def test_unsigned_dill_payload_is_refused_when_a_key_is_set() -> None:
    unsigned = unsigned_ok().dumps(Sentinel("unsigned"))
    UNPICKLED.clear()
    with pytest.raises(PayloadSignatureError, match="unsigned"):
        SerializationManager(secret_key=KEY).loads(unsigned)
    with pytest.raises(PayloadSignatureError):
        SerializationManager(secret_key=KEY).loads_call(unsigned)
    assert UNPICKLED == []


def test_wrong_key_and_missing_key_are_refused() -> None:
    signed = SerializationManager(secret_key=KEY).dumps(Sentinel("signed"))
    UNPICKLED.clear()
    with pytest.raises(PayloadSignatureError):
        SerializationManager(secret_key="other").loads(signed)
    with pytest.raises(PayloadSignatureError, match="no secret_key"):
        unsigned_ok().loads(signed)
    with pytest.raises(PayloadSignatureError, match="no secret_key"):
        SerializationManager().loads(signed)
    assert UNPICKLED == []


# -- signed or refused by default -----------------------------------------------------------


def test_without_a_key_dill_is_refused_at_encoding_with_the_way_out() -> None:
    manager = SerializationManager()
    with pytest.raises(SerializationError) as raised:
        manager.dumps_call(lambda x: x, (1,), {})
    message = str(raised.value)
    assert message.startswith("cannot send the task function ")
    assert "<lambda>() without a signing key: it needs dill" in message
    assert "set secret_key" in message and "allow_unsigned_dill=True" in message
    with pytest.raises(SerializationError, match=r"argument 2 \(type Point\) without a"):
        manager.dumps_call(None, (1, Point(1, 2)), {})
    with pytest.raises(SerializationError, match=r"result \(type Color\) without a"):
        manager.dumps(Color.RED, what="result")
    # msgpack never needs a key.
    assert manager.loads_call(manager.dumps_call(None, (1, (2,)), {})) == (None, (1, (2,)), {})


def test_without_a_key_unsigned_dill_is_refused_and_never_unpickled() -> None:
    unsigned = unsigned_ok().dumps_call(None, (Sentinel("unsigned"),), {})
    UNPICKLED.clear()
    with pytest.raises(PayloadSignatureError) as raised:
        SerializationManager().loads_call(unsigned)
    assert "unsigned and no key is set: refused, nothing was unpickled" in str(raised.value)
    assert "allow_unsigned_dill=True" in str(raised.value)
    assert UNPICKLED == []


def test_allow_unsigned_dill_reads_unsigned_payloads_even_with_a_key() -> None:
    unsigned = unsigned_ok().dumps(Sentinel("old"))
    manager = SerializationManager(secret_key=KEY, allow_unsigned_dill=True)
    assert manager.loads(unsigned).label == "old"
    assert manager.dumps(Sentinel("new"))[:1] == b"S"  # a key always signs


def test_several_keys_sign_with_the_first_and_accept_any() -> None:
    old = SerializationManager(secret_key="old")
    rotating = SerializationManager(secret_key=["new", "old"])
    new = SerializationManager(secret_key="new")
    assert rotating.loads(old.dumps(Sentinel("a"))).label == "a"
    signed = rotating.dumps(Sentinel("b"))
    assert new.loads(signed).label == "b"
    UNPICKLED.clear()
    with pytest.raises(PayloadSignatureError, match="does not match"):
        old.loads(signed)
    with pytest.raises(PayloadSignatureError, match="does not match"):
        rotating.loads(SerializationManager(secret_key="stranger").dumps(Sentinel("c")))
    assert UNPICKLED == []
    assert DillSerializer([b"k2", b"k1"]).loads(DillSerializer(b"k1").dumps(3)) == 3
    with pytest.raises(ConfigError, match="secret_key"):
        SerializationManager(secret_key=["new", ""])
    with pytest.raises(ConfigError, match="secret_key"):
        SerializationManager(secret_key=[])


def test_key_file_is_made_on_first_dill_use_private_and_shared(tmp_path: Path) -> None:
    key_file = tmp_path / "base" / "secret_key"
    producer = SerializationManager(key_file=key_file)
    producer.dumps_call(None, (1, "plain"), {})
    assert not key_file.exists()  # msgpack alone never makes a key
    data = producer.dumps_call(make_adder(2), (1,), {})
    assert data[:1] == b"S"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 64  # 32 random bytes, hex
    func, args, _ = SerializationManager(key_file=key_file).loads_call(data)
    assert func is not None and func(*args) == 3
    with pytest.raises(PayloadSignatureError, match="another key than this base_dir's"):
        SerializationManager(key_file=tmp_path / "other" / "secret_key").loads_call(data)
    # An explicit key wins over the file.
    with pytest.raises(PayloadSignatureError, match="does not match"):
        SerializationManager(secret_key=KEY, key_file=key_file).loads_call(data)


def test_key_file_open_to_other_users_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    assert load_or_create_key(key_file) == load_or_create_key(key_file)
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="open to every user of this host: chmod 600"):
        load_or_create_key(key_file)


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        keys = set(pool.map(load_or_create_key, [key_file] * 8))
    assert keys == {key_file.read_bytes()}


@pytest.mark.parametrize(
    "data",
    [b"", b"X", b"Xabc", b"M", b"M\xc1", b"M\x92", b"M\xd4\x7f\x00", b"D", b"Dnot a pickle"],
)
def test_corrupt_bytes_raise_serialization_error(data: bytes) -> None:
    manager = unsigned_ok()
    with pytest.raises(SerializationError):
        manager.loads(data)
    with pytest.raises(SerializationError):
        manager.loads_call(data)


def test_value_payload_is_not_a_call() -> None:
    manager = unsigned_ok()
    with pytest.raises(SerializationError, match="not a task call"):
        manager.loads_call(manager.dumps([1, 2, 3]))


def test_bad_mode_and_empty_key_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="serializer"):
        SerializationManager(mode="pickle")
    with pytest.raises(ConfigError, match="secret_key"):
        SerializationManager(secret_key="")


def test_detector_walks_containers() -> None:
    detector = SerializationDetector()
    assert not detector.needs_dill({"a": [(1, dt.date(2020, 1, 1))], 2: {Decimal(1)}})
    assert detector.needs_dill({"a": [(1, Point(1, 2))]})
    assert detector.offender([1, (2, Color.RED)]) is Color
    assert detector.needs_dill(make_adder(1))


def test_codecs_without_tags() -> None:
    codec = MsgspecSerializer()
    assert_same(codec.loads(codec.dumps({(1, 2): {3}})), {(1, 2): {3}})
    with pytest.raises(SerializationError, match="Point"):
        codec.dumps(Point(1, 2))
    signer = DillSerializer(b"k")
    assert signer.loads(signer.dumps(Point(1, 2))) == Point(1, 2)
    with pytest.raises(PayloadSignatureError):
        signer.loads(b"short")
    plain = DillSerializer()
    assert plain.loads(plain.dumps(Point(5, 6))) == Point(5, 6)


# -- property tests ------------------------------------------------------------------------

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.dates(),
    st.times(timezones=st.none() | st.just(dt.UTC)),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.timedeltas(),
)
hashables = st.recursive(
    leaves, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6
)
typed_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.sets(hashables, max_size=4),
        st.dictionaries(hashables, inner, max_size=4),
    ),
    max_leaves=12,
)


@FUZZ
@given(value=typed_values)
def test_generated_values_round_trip_in_strict_mode(value: Any) -> None:
    manager = SerializationManager(mode="msgspec")
    assert_same(manager.loads(manager.dumps(value)), value)
    _, args, kwargs = manager.loads_call(manager.dumps_call(None, (value,), {"v": value}))
    assert_same(args, (value,))
    assert_same(kwargs, {"v": value})


def ext_payloads() -> st.SearchStrategy[bytes]:
    """msgspec payloads holding typed extension values with random contents."""
    ext: st.SearchStrategy[Any] = st.builds(
        msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=24)
    )
    body: st.SearchStrategy[Any] = st.one_of(
        ext, st.lists(ext, max_size=2), st.tuples(st.lists(ext), st.just({}))
    )
    return body.map(lambda b: b"M" + msgspec.msgpack.encode(b))


def valid_payloads(manager: SerializationManager) -> st.SearchStrategy[bytes]:
    return typed_values.map(manager.dumps) | typed_values.map(
        lambda v: manager.dumps_call(None, (v,), {})
    )


def assert_only_serialization_errors(manager: SerializationManager, data: bytes) -> None:
    for load in (manager.loads, manager.loads_call):
        with contextlib.suppress(SerializationError):
            load(data)


@FUZZ
@given(data=st.binary(max_size=64), tag=st.sampled_from([b"M", b"X", b"\x00", b""]))
def test_random_bytes_without_key_raise_only_serialization_error(data: bytes, tag: bytes) -> None:
    # Allowed unsigned, a dill payload is unpickled as-is: only non-dill tags are fuzzed.
    assert_only_serialization_errors(unsigned_ok(), tag + data)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=96),
        st.sampled_from([b"D", b"S"]).flatmap(lambda tag: st.binary(max_size=96).map(tag.__add__)),
        st.text(max_size=8).map(lambda label: unsigned_ok().dumps(Sentinel(label))),
    )
)
def test_by_default_no_bytes_are_unpickled_without_a_key(data: bytes) -> None:
    UNPICKLED.clear()
    assert_only_serialization_errors(SerializationManager(), data)
    assert UNPICKLED == []


@FUZZ
@given(data=st.one_of(st.binary(max_size=96), st.binary(max_size=96).map(lambda b: b"S" + b)))
def test_random_bytes_with_key_raise_only_serialization_error(data: bytes) -> None:
    UNPICKLED.clear()
    assert_only_serialization_errors(SerializationManager(secret_key=KEY), data)


@FUZZ
@given(data=ext_payloads())
def test_random_extension_values_raise_only_serialization_error(data: bytes) -> None:
    assert_only_serialization_errors(unsigned_ok(), data)


@pytest.mark.parametrize("secret_key", [None, KEY])
@FUZZ
@given(data=st.data())
def test_truncated_payloads_raise_only_serialization_error(
    data: st.DataObject, secret_key: str | None
) -> None:
    manager = SerializationManager(secret_key=secret_key, allow_unsigned_dill=secret_key is None)
    payload = data.draw(valid_payloads(manager))
    if secret_key is not None:
        payload = data.draw(st.sampled_from([payload, manager.dumps_call(make_adder(2), (), {})]))
    cut = data.draw(st.integers(0, max(len(payload) - 1, 0)))
    truncated = payload[:cut]
    if truncated[:1] == b"D" and secret_key is None:
        return
    assert_only_serialization_errors(manager, truncated)
