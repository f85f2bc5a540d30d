"""Tracing (SPEC §8) on every backend: the trace context stored at submit comes back with
the task, through a retry, and every attempt's span continues it."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from omniq import TaskStatus
from tests.conformance import tasks
from tests.conformance.conftest import MakeOQ


async def test_each_attempt_continues_the_trace_stored_with_its_task(
    make_oq: MakeOQ, spans: Any
) -> None:
    oq = await make_oq(tracing=True)
    task_id = await oq.submit(tasks.flaky, (uuid.uuid4().hex, 1), max_retries=1)
    stored = await oq.get_task(task_id)
    assert stored is not None and stored.trace is not None

    await oq.worker().run(burst=True)
    assert (await oq.get_result(task_id)).status is TaskStatus.COMPLETE
    after = await oq.get_task(task_id)
    assert after is not None and after.trace == stored.trace  # kept through the retry

    (publish,) = [span for span in spans.get_finished_spans() if span.kind is SpanKind.PRODUCER]
    runs = [span for span in spans.get_finished_spans() if span.kind is SpanKind.CONSUMER]
    assert [run.attributes["omniq.task.attempt"] for run in runs] == [1, 2]
    for run in runs:
        assert run.parent is not None and run.parent.span_id == publish.context.span_id
        assert run.context.trace_id == publish.context.trace_id
        assert run.attributes["messaging.message.id"] == task_id
    assert [run.status.status_code for run in runs] == [StatusCode.ERROR, StatusCode.UNSET]


async def test_without_tracing_no_context_is_stored(make_oq: MakeOQ) -> None:
    oq = await make_oq()
    many = await oq.enqueue_many(tasks.add, [(1, 2), (3, 4)])
    one = await oq.submit(tasks.add, (5, 6))
    for task_id in [*many, one]:
        task = await oq.get_task(task_id)
        assert task is not None and task.trace is None
