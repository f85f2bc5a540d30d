"""Task handles on every backend: a ``.delay()`` handle is taken wherever a task id is
(each backend stores, keys and logs it as the plain id), and ``result()`` reads through."""

from __future__ import annotations

import pytest

from omniq import AsyncOmniQ, EventType, TaskStatus
from omniq.errors import TaskFailedError


async def test_a_handle_is_taken_wherever_a_task_id_is(oq: AsyncOmniQ) -> None:
    @oq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @oq.task(name="kind_of")
    def kind_of(value: object) -> list[str]:
        return [type(value).__name__, str(value)]

    first = await add.delay(1, 2)
    # As an argument and in depends_on; shared stores refuse unsigned dill, so this also
    # shows the handle is encoded as msgpack (its plain id).
    second = await kind_of.submit((first,), depends_on=[first])
    third = await add.delay(3, 4)
    assert (await oq.get_task(first)).id == first
    assert (await oq.get_task(second)).depends_on == (str(first),)
    assert await oq.cancel(third) is True
    assert await oq.requeue(third) is True
    await oq.worker().run(burst=True)
    assert await first.result(timeout=10) == 3
    assert await second.result(timeout=10) == ["str", str(first)]
    assert (await oq.get_result(third, wait=True, timeout=10)).result == 7
    events = await oq.get_events(third)
    assert EventType.CANCELLED in [event.event_type for event in events]
    assert {event.task_id for event in events} == {str(third)}
    assert await third.status() is TaskStatus.COMPLETE
    # An idempotent resubmit by the handle's id returns that same task.
    assert await add.submit((0, 0), task_id=first) == first


async def test_a_failed_tasks_handle_raises_its_stored_error(oq: AsyncOmniQ) -> None:
    @oq.task(name="boom", max_retries=0)
    def boom() -> int:
        raise ValueError("broken")

    handle = await boom.delay()
    await oq.worker().run(burst=True)
    with pytest.raises(TaskFailedError) as caught:
        await handle.result(timeout=10)
    assert caught.value.result == await oq.get_result(handle)
    assert caught.value.error is not None
    assert caught.value.error.type == "builtins.ValueError"
