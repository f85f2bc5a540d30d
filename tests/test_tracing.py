"""OpenTelemetry tracing (SPEC §8): the producer's span in this process, the consumer
spans in a real worker process, one trace across them and across retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from omniq import OmniQ, Task, TaskStatus
from tests.conftest import REPO_ROOT

TASKS = "tests.conformance.tasks"

# The worker's app: the same store, tracing on, and its spans written to a file as JSON
# lines (the SDK's own JSON form of each span) for the test to read. Batched as an OTLP
# set-up would be, with a delay longer than the test: the worker exports them as it exits.
_TRACED_APP = """
import os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from omniq import OmniQ


class JsonLinesExporter(SpanExporter):
    def export(self, spans):
        with open(os.environ["SPANS_FILE"], "a", encoding="utf-8") as fh:
            for span in spans:
                fh.write(span.to_json(indent=None) + "\\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(), schedule_delay_millis=600_000))
trace.set_tracer_provider(provider)
oq = OmniQ(base_dir=os.environ["STORE_DIR"], tracing=True)


def fail_once(marker):
    # Its first run fails, whichever process runs it.
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("the first attempt fails")
    return "ok"
"""


def run_traced_worker(tmp_path: Path, worker_type: str) -> list[dict[str, Any]]:
    """Run ``omniq worker --burst`` with the traced app; its spans, in export order."""
    (tmp_path / "traced_app.py").write_text(_TRACED_APP)
    spans_file = tmp_path / "spans.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "SPANS_FILE": str(spans_file),
        "STORE_DIR": str(tmp_path / "store"),
    }
    done = subprocess.run(
        [
            *(sys.executable, "-m", "omniq", "worker", "--app", "traced_app:oq", "--burst"),
            *("--worker-type", worker_type, "--concurrency", "2"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in spans_file.read_text().splitlines()]


def span_id(span: ReadableSpan) -> str:
    """A span's id as the SDK's JSON writes it."""
    assert span.context is not None
    return f"0x{span.context.span_id:016x}"


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"0x{span.context.trace_id:032x}"


@pytest.mark.parametrize("worker_type", ["async", "process"])
def test_runs_continue_the_submitters_trace_across_retries(
    tmp_path: Path, spans: InMemorySpanExporter, worker_type: str
) -> None:
    tracer = trace.get_tracer("the-app")
    with OmniQ(base_dir=str(tmp_path / "store"), tracing=True) as oq:
        with tracer.start_as_current_span("handle request") as request:
            flaky = oq.submit(
                "traced_app:fail_once", (str(tmp_path / "failed"),), max_retries=1, retry_delay=0
            )
        failing = oq.submit(f"{TASKS}:fail", ("always",), max_retries=1, retry_delay=0)
        batch = oq.enqueue_many(f"{TASKS}:add", [(1, 2), (3, 4)])
        stored = oq.get_task(flaky)
        assert stored is not None and stored.trace is not None

        consumed = run_traced_worker(tmp_path, worker_type)
        assert oq.get_result(flaky).status is TaskStatus.COMPLETE
        assert oq.get_result(failing).status is TaskStatus.FAILED

    # The producer spans, in this process: one per submit, one for the batch.
    produced = {span.name: [] for span in spans.get_finished_spans()}
    for span in spans.get_finished_spans():
        produced[span.name].append(span)
    publishes = produced["publish default"]
    assert [span.kind for span in publishes] == [SpanKind.PRODUCER] * 3
    by_message = {span.attributes.get("messaging.message.id"): span for span in publishes}
    flaky_publish, failing_publish = by_message[flaky], by_message[failing]
    batch_publish = by_message[None]
    assert batch_publish.attributes["messaging.batch.message_count"] == 2
    for span in publishes:
        assert span.attributes["messaging.system"] == "omniq"
        assert span.attributes["messaging.destination.name"] == "default"
    # The submit inside the application's span joined its trace.
    assert flaky_publish.parent is not None
    assert flaky_publish.parent.span_id == request.get_span_context().span_id
    # What the task stores is that span's W3C context (version, trace, span, flags).
    version, trace_hex, span_hex, _ = stored.trace["traceparent"].split("-")
    assert (version, f"0x{trace_hex}", f"0x{span_hex}") == (
        "00",
        trace_id(flaky_publish),
        span_id(flaky_publish),
    )

    # The consumer spans, from the worker's process: one per attempt, each a child of
    # its task's producer span, in its trace.
    processes = [span for span in consumed if span["name"] == "process default"]
    assert len(processes) == 6  # flaky twice, failing twice, the batch's two tasks
    for span in processes:
        assert span["kind"] == "SpanKind.CONSUMER"
        assert span["attributes"]["messaging.system"] == "omniq"
        assert span["attributes"]["messaging.destination.name"] == "default"
        assert span["attributes"]["messaging.operation.type"] == "process"

    def runs_of(task_id: str, publish: ReadableSpan) -> list[dict[str, Any]]:
        runs = [s for s in processes if s["attributes"]["messaging.message.id"] == task_id]
        for run in runs:
            assert run["context"]["trace_id"] == trace_id(publish)
            assert run["parent_id"] == span_id(publish)
        return sorted(runs, key=lambda run: run["attributes"]["omniq.task.attempt"])

    first, second = runs_of(flaky, flaky_publish)
    assert first["context"]["span_id"] != second["context"]["span_id"]
    assert [
        first["attributes"]["omniq.task.attempt"],
        second["attributes"]["omniq.task.attempt"],
    ] == [1, 2]
    # The failed attempt carries its error; the retry that succeeded does not.
    assert first["status"]["status_code"] == "ERROR"
    assert [event["name"] for event in first["events"]] == ["exception"]
    assert first["events"][0]["attributes"]["exception.type"] == "RuntimeError"
    assert second["status"]["status_code"] == "UNSET"
    assert second["events"] == []

    for run in runs_of(failing, failing_publish):
        assert run["status"]["status_code"] == "ERROR"
        assert run["events"][0]["attributes"]["exception.message"] == "always"

    for task_id in batch:
        (run,) = runs_of(task_id, batch_publish)
        assert run["status"]["status_code"] == "UNSET"


def test_the_submit_span_records_a_failed_submit(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    from omniq.errors import TaskNotFoundError

    with (
        OmniQ(base_dir=str(tmp_path / "store"), tracing=True) as oq,
        pytest.raises(TaskNotFoundError),
    ):
        oq.submit(f"{TASKS}:add", (1, 2), depends_on=["no-such-task"])
    (publish,) = spans.get_finished_spans()
    assert publish.status.status_code is StatusCode.ERROR
    assert [event.name for event in publish.events] == ["exception"]


def test_without_tracing_the_task_record_does_not_grow(tmp_path: Path) -> None:
    with OmniQ(base_dir=str(tmp_path / "store")) as oq:
        task = oq.get_task(oq.submit(f"{TASKS}:add", (1, 2)))
    assert task is not None and task.trace is None
    assert b"trace" not in msgspec.msgpack.encode(task)
    traced = msgspec.structs.replace(
        task, trace={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(traced), type=Task).trace == traced.trace


def test_a_blocking_submit_continues_the_callers_span_with_a_worker_running(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    # With a worker in the background, the blocking client hands each call to its loop's
    # thread (asyncio carries the caller's context there): the caller's span still
    # reaches the submit. The worker runs in this process, so its consumer span is
    # recorded here too.
    tracer = trace.get_tracer("the-app")
    with OmniQ(base_dir=str(tmp_path / "store"), tracing=True) as oq, oq.worker():
        with tracer.start_as_current_span("handle request") as request:
            task_id = oq.submit(f"{TASKS}:add", (1, 2))
        assert oq.get_result(task_id, wait=True, timeout=30).result == 3
    by_name = {span.name: span for span in spans.get_finished_spans()}
    publish, process = by_name["publish default"], by_name["process default"]
    assert publish.parent is not None and process.parent is not None
    assert publish.parent.span_id == request.get_span_context().span_id
    assert process.parent.span_id == span_id_of(publish)
    assert process.context is not None
    assert process.context.trace_id == request.get_span_context().trace_id


def span_id_of(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id
