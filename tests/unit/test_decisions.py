"""Pure decisions: retry backoff, ids, how callables travel."""

from __future__ import annotations

import random
import time
import uuid

import pytest

from omniq import _callables
from omniq._ids import new_task_id, new_task_ids
from omniq.errors import TaskImportError
from omniq.retry import Retry, backoff_delay, has_attempts_left
from tests.conformance import tasks


def test_backoff_doubles_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, base=1.0, cap=10.0, jitter=0.0, rng=rng) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_jitter_only_adds() -> None:
    rng = random.Random(2)
    for n in range(1, 5):
        base = 0.5 * 2 ** (n - 1)
        for _ in range(50):
            delay = backoff_delay(n, base=0.5, cap=100.0, rng=rng)
            assert base <= delay <= base * 1.1


def test_backoff_rejects_retry_zero() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_delay(0, base=1.0, cap=1.0)


def test_attempts_budget() -> None:
    assert has_attempts_left(1, 2) and has_attempts_left(2, 2)
    assert not has_attempts_left(3, 2)
    assert not has_attempts_left(1, 0)


def test_retry_signal_is_not_an_omniq_error() -> None:
    from datetime import timedelta

    from omniq.errors import OmniQError

    assert not isinstance(Retry(), OmniQError)
    assert Retry(delay=timedelta(seconds=3)).delay == 3.0
    assert Retry().delay is None


def test_task_ids_are_unique_and_time_ordered() -> None:
    ids = [new_task_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 36 and i[14] == "7" for i in ids)


def test_batched_task_ids_continue_the_same_order() -> None:
    # 5,000 ids in one batch overflow the 12-bit per-millisecond sequence at least once.
    ids = [new_task_id(), *new_task_ids(5000), new_task_id(), *new_task_ids(3), new_task_id()]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 36 and i[14] == "7" and i[19] in "89ab" for i in ids)
    assert new_task_ids(0) == []


def test_task_ids_are_uuid7_stamped_with_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    ids = [*new_task_ids(9000), new_task_id()]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(u) for u in parsed] == ids
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    stamps = [u.int >> 80 for u in parsed]
    # Past 4,096 ids in a millisecond the sequence runs on into the next one, so a big
    # batch may borrow a few milliseconds ahead of the clock, never more.
    assert before <= stamps[0] and stamps[-1] <= after + 9000 // 4096 + 1
    assert len(set(ids)) == len(ids)


def test_importable_functions_travel_by_path() -> None:
    assert _callables.callable_path(tasks.add) == "tests.conformance.tasks:add"
    assert _callables.resolve("tests.conformance.tasks:add") is tasks.add


def test_lambdas_and_closures_travel_by_value() -> None:
    x = 3
    assert _callables.callable_path(lambda: x) is None

    def inner() -> int:
        return x

    assert _callables.callable_path(inner) is None
    assert _callables.describe(inner).endswith("inner")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("no_colon", "form"),
        ("tests.conformance.nowhere:f", "cannot import"),
        ("tests.conformance.tasks:missing", "no attribute"),
        ("tests.conformance.tasks:CALLS", "not callable"),
    ],
)
def test_resolve_errors_say_what_is_wrong(path: str, needle: str) -> None:
    with pytest.raises(TaskImportError, match=needle):
        _callables.resolve(path)
