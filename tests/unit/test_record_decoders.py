"""Every backend's record decoders, fuzzed: whatever bytes a store holds, a decoder
returns a record or raises StorageError (the storage layer turns a task's into an
``UnreadableTask`` that the worker fails), never anything else that would crash a
worker. Anyone who can write to a shared store can write these bytes (SECURITY.md).

Inputs: random bytes, valid records cut short or with bytes flipped, and msgpack of
the right shape holding values of the wrong type or range; for Redis also the hash
fields beside the record (status, attempts, times), and for the SQL backends the columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniq.errors import StorageError
from omniq.models import ErrorInfo, EventType, Schedule, Task, TaskEvent, TaskResult, TaskStatus
from omniq.storage import _rows
from omniq.storage.file import _base as file_base
from omniq.storage.file import _layout
from omniq.storage.file import events as file_events
from omniq.storage.file import results as file_results
from omniq.storage.file import schedules as file_schedules
from omniq.storage.nats import _base as nats_base
from omniq.storage.nats import events as nats_events
from omniq.storage.nats import queue as nats_queue
from omniq.storage.nats import results as nats_results
from omniq.storage.nats import schedules as nats_schedules
from omniq.storage.postgres import events as pg_events
from omniq.storage.postgres import results as pg_results
from omniq.storage.postgres import schedules as pg_schedules
from omniq.storage.redis import _codec
from omniq.storage.redis import events as redis_events
from omniq.storage.redis import results as redis_results
from omniq.storage.redis import schedules as redis_schedules
from omniq.storage.sqlite import events as sqlite_events
from omniq.storage.sqlite import results as sqlite_results
from omniq.storage.sqlite import schedules as sqlite_schedules

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Fourteen decoders of one library: fewer examples each.
FUZZ_EACH = settings(FUZZ, max_examples=60)
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
ENCODER = msgspec.msgpack.Encoder()

TASK = Task(
    id="t-1",
    func="pkg.mod:fn",
    payload=b"M\x92\x90\x80",
    queue="mail",
    priority=3,
    depends_on=("a", "b"),
    due_at=NOW,
    created_at=NOW,
)
RESULT = TaskResult(
    task_id="t-1",
    status=TaskStatus.FAILED,
    error=ErrorInfo(type="builtins.ValueError", message="boom"),
    attempts=2,
    finished_at=NOW,
)
EVENT = TaskEvent(task_id="t-1", event_type=EventType.COMPLETE, timestamp=NOW, attempt=1)
SCHEDULE = Schedule(id="s-1", task=TASK, interval=5.0, next_run_at=NOW, created_at=NOW)

#: Each backend's decoder of each kind of record (msgspec decoders are caught by their
#: components as msgspec.DecodeError; each is checked to raise nothing else).
RAW_DECODERS: dict[str, tuple[msgspec.msgpack.Decoder[Any], Any]] = {
    "sqlite task": (_rows._TASK_DECODER, TASK),
    "redis task": (_codec._TASK_DECODER, TASK),
    "file results": (file_results._result_decoder, RESULT),
    "redis results": (redis_results._RESULT_DECODER, RESULT),
    "nats results": (nats_results._RESULT_DECODER, RESULT),
    "postgres results": (pg_results._RESULT_DECODER, RESULT),
    "sqlite results": (sqlite_results._RESULT_DECODER, RESULT),
    "file events": (file_events._event_decoder, EVENT),
    "redis events": (redis_events._EVENT_DECODER, EVENT),
    "nats events": (nats_events._EVENT_DECODER, EVENT),
    "postgres events": (pg_events._EVENT_DECODER, EVENT),
    "sqlite events": (sqlite_events._EVENT_DECODER, EVENT),
    "file schedules": (file_schedules._schedule_decoder, SCHEDULE),
    "redis schedules": (redis_schedules._SCHEDULE_DECODER, SCHEDULE),
    "nats schedules": (nats_schedules._SCHEDULE_DECODER, SCHEDULE),
    "postgres schedules": (pg_schedules._SCHEDULE_DECODER, SCHEDULE),
    "sqlite schedules": (sqlite_schedules._SCHEDULE_DECODER, SCHEDULE),
}

# msgpack values of any shape, to stand where a record's fields go.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def damaged(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` cut short, with one byte changed, or with random bytes spliced in."""
    size = len(valid)
    cut = st.integers(0, size - 1).map(lambda n: valid[:n])
    flipped = st.tuples(st.integers(0, size - 1), st.integers(1, 255)).map(
        lambda p: valid[: p[0]] + bytes([valid[p[0]] ^ p[1]]) + valid[p[0] + 1 :]
    )
    spliced = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=16)).map(
        lambda p: valid[: p[0]] + p[1] + valid[p[0] :]
    )
    return cut | flipped | spliced


def mistyped(record: Any) -> st.SearchStrategy[bytes]:
    """``record`` as msgpack with one field replaced by any value (or a field added)."""
    fields = msgspec.msgpack.decode(ENCODER.encode(record))
    assert isinstance(fields, dict)
    names = st.sampled_from([*fields, "unknown_field"])
    return st.tuples(names, msgpack_values).map(lambda p: ENCODER.encode({**fields, p[0]: p[1]}))


def record_bytes(record: Any) -> st.SearchStrategy[bytes]:
    valid = ENCODER.encode(record)
    return st.binary(max_size=64) | damaged(valid) | mistyped(record)


def only(exception: type[BaseException], call: Callable[[], Any]) -> None:
    """Run ``call``: it may raise ``exception``, and nothing else."""
    with contextlib.suppress(exception):
        call()


@pytest.mark.parametrize("name", list(RAW_DECODERS))
@FUZZ_EACH
@given(data=st.data())
def test_msgspec_decoders_raise_only_decode_errors(name: str, data: st.DataObject) -> None:
    decoder, record = RAW_DECODERS[name]
    raw = data.draw(record_bytes(record))
    only(msgspec.DecodeError, lambda: decoder.decode(raw))


# -- task records, with the fields a worker reads beside them ----------------------------

text_or_bytes = st.binary(max_size=12) | st.text(max_size=12).map(str.encode)
numbers = st.integers().map(lambda n: str(n).encode()) | text_or_bytes


@FUZZ
@given(
    data=record_bytes(TASK),
    status=st.sampled_from([b"pending", b"running"]) | text_or_bytes,
    attempts=numbers | st.integers(),
    times=st.tuples(numbers, numbers, numbers),
    lost=numbers,
    task_id=text_or_bytes,
)
def test_redis_task_fields_raise_only_storage_errors(
    data: bytes,
    status: bytes,
    attempts: bytes | int,
    times: tuple[bytes, bytes, bytes],
    lost: bytes,
    task_id: bytes,
) -> None:
    lease, due, updated = times
    only(
        StorageError,
        lambda: _codec._decode_task(
            task_id, data, status, attempts, b"w", lease, due, updated, lost
        ),
    )
    only(
        StorageError,
        lambda: _codec._claimed_task(task_id, data, attempts, due, lost, "w", NOW, NOW),
    )


@FUZZ
@given(
    data=record_bytes(TASK),
    status=st.sampled_from(["pending", "running"]) | st.text(max_size=8),
    attempts=st.integers(-(2**63), 2**63 - 1),
    times=st.tuples(st.none() | st.floats(allow_nan=True), st.floats(allow_nan=True), st.floats()),
)
def test_sql_task_rows_raise_only_storage_errors(
    data: bytes, status: str, attempts: int, times: tuple[float | None, float, float]
) -> None:
    lease, due, updated = times
    row = (1, "t-1", status, 0, attempts, None, lease, due, updated, data, 0)
    for backend in ("sqlite", "postgres"):
        only(StorageError, lambda b=backend: _rows.task_from_row(row, b))  # type: ignore[misc]


@FUZZ
@given(
    data=st.binary(max_size=64)
    | damaged(ENCODER.encode(_layout.Record(task=TASK, seq=1, entry="ready/x/y")))
)
def test_file_task_records_raise_only_storage_errors(data: bytes) -> None:
    only(StorageError, lambda: _layout.decode_record(data))
    only(StorageError, lambda: file_base.decode(file_results._result_decoder, data, "result"))


@FUZZ
@given(data=record_bytes(SCHEDULE))
def test_schedule_records_raise_only_storage_errors(data: bytes) -> None:
    only(StorageError, lambda: redis_schedules._decode_schedule(data))
    only(StorageError, lambda: pg_schedules._schedule("s-1", data))
    only(StorageError, lambda: nats_schedules._schedule("s-1", data))


NATS_RECORD = nats_base.record_of(TASK)
NATS_FIELDS: list[Any] = msgspec.msgpack.decode(ENCODER.encode(NATS_RECORD))


def nats_mistyped(position: int, value: Any) -> bytes:
    """The record with the field at ``position`` replaced by ``value``."""
    return ENCODER.encode([*NATS_FIELDS[:position], value, *NATS_FIELDS[position + 1 :]])


@FUZZ
@given(
    record=st.binary(max_size=64)
    | damaged(ENCODER.encode(NATS_RECORD))
    | st.builds(nats_mistyped, st.integers(0, len(NATS_FIELDS) - 1), msgpack_values),
    body=record_bytes(TASK),
    times=st.tuples(*[st.integers(0, 2**63 - 1)] * 4),
)
def test_nats_task_records_raise_only_storage_errors(
    record: bytes, body: bytes, times: tuple[int, int, int, int]
) -> None:
    # The whole record: None when its order fields are damaged (the index leaves it out).
    decoded = nats_base.decode_record(record)
    if decoded is not None:
        only(StorageError, lambda: nats_base.task_of("t-1", decoded))
    # A readable record with a damaged body or times out of range: StorageError, and as
    # a queue hands it out, an UnreadableTask (never an exception).
    lease, due, created, updated = times
    damaged_record = msgspec.structs.replace(
        NATS_RECORD, body=body, lease=lease, due=due, created=created, updated=updated
    )
    only(StorageError, lambda: nats_base.task_of("t-1", damaged_record))
    nats_queue.AsyncNATSQueue._task(None, "t-1", damaged_record)  # type: ignore[arg-type]
