"""OpenTelemetry spans around submits and task runs (``tracing=True``, the ``otel`` extra).

A submit (``submit``, ``enqueue``, ``enqueue_many``) opens a ``PRODUCER`` span,
``publish <queue>``, and stores its context with the task (``Task.trace``: the
propagator's fields, by default W3C ``traceparent`` and ``tracestate``). A worker runs
each attempt inside a ``CONSUMER`` span, ``process <queue>``, whose parent is that stored
context: the runs of a task, retries included, are separate spans of the submitter's
trace. An exception out of the run is recorded on its span (an ``exception`` event,
status ``ERROR``). Names and attributes follow OpenTelemetry's messaging conventions;
``omniq.*`` attributes add the task's name and attempt.

The spans go to the tracer provider the application set up (``opentelemetry-sdk`` with
an exporter); without one they cost next to nothing and store no context. Nothing here
imports OpenTelemetry before a :class:`Tracing` is built, which only ``tracing=True``
does: with tracing off (the default) or the extra missing, ``import omniq`` and every
submit and run are as before.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.errors import ConfigError
from omniq.models import Task
from omniq.retry import Retry

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["Tracing", "flush_spans"]

#: The instrumentation scope the spans are reported under.
SCOPE = "omniq"
_SYSTEM = "omniq"


def _attributes(task: Task, operation: str, kind: str) -> dict[str, Any]:
    """The messaging attributes of a span of ``operation`` (``messaging.operation.type``
    ``kind``) on ``task``'s queue; both the current ``messaging.operation.*`` names and
    the older ``messaging.operation``, which many backends still group by."""
    return {
        "messaging.system": _SYSTEM,
        "messaging.destination.name": task.queue,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.operation": operation,
        "omniq.task.name": task.func,
    }


class Tracing:
    """The tracer of a client or a worker pool with ``tracing=True``.

    Building one imports OpenTelemetry: ``ConfigError`` (naming the extra) when it is
    not installed.
    """

    def __init__(self) -> None:
        try:
            from opentelemetry import propagate, trace
        except ImportError as exc:
            raise ConfigError(
                "tracing=True needs OpenTelemetry: pip install 'omniq[otel]'"
            ) from exc
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._propagate = propagate
        # A proxy until the application sets its tracer provider, then that provider's.
        self._tracer = trace.get_tracer(SCOPE)
        self._kinds = (SpanKind.PRODUCER, SpanKind.CONSUMER)
        self._error = (Status, StatusCode.ERROR)

    @contextlib.contextmanager
    def publishing(self, tasks: Sequence[Task]) -> Iterator[list[Task]]:
        """A ``PRODUCER`` span around storing ``tasks`` (of one queue): yields the tasks
        carrying the span's context, to be stored inside the ``with`` block (an error
        there is recorded on the span)."""
        first = tasks[0]
        attributes = _attributes(first, "publish", "send")
        if len(tasks) == 1:
            attributes["messaging.message.id"] = first.id
        else:
            attributes["messaging.batch.message_count"] = len(tasks)
        with self._tracer.start_as_current_span(
            f"publish {first.queue}", kind=self._kinds[0], attributes=attributes
        ):
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier)
            if not carrier:  # no tracer provider set up: nothing worth storing
                yield list(tasks)
            else:
                yield [msgspec.structs.replace(task, trace=carrier) for task in tasks]

    @contextlib.contextmanager
    def processing(self, task: Task, worker_id: str) -> Iterator[Span]:
        """The ``CONSUMER`` span of one attempt of ``task``, current inside the block
        (so spans the task opens, in the worker's process, are its children), child of
        the context stored at submit (a new trace for a task submitted without one)."""
        attributes = _attributes(task, "process", "process")
        attributes["messaging.message.id"] = task.id
        attributes["messaging.client.id"] = worker_id
        attributes["omniq.task.attempt"] = task.attempts
        parent = self._propagate.extract(task.trace or {})
        with self._tracer.start_as_current_span(
            f"process {task.queue}",
            context=parent,
            kind=self._kinds[1],
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Retry as request:
                # Asked for by the task: not an error of this run.
                span.add_event("omniq.retry_requested", {"omniq.retry.delay": request.delay or 0.0})
                raise
            except Exception as exc:
                span.record_exception(exc)
                status, error = self._error
                span.set_status(status(error, f"{type(exc).__name__}: {exc}"))
                raise
            except BaseException:
                # Stopped (cancelled, or the worker stopping): no outcome of its own.
                span.set_attribute("omniq.stopped", True)
                raise


def flush_spans(timeout_millis: int = 5000) -> None:
    """Export the spans the application's tracer provider still buffers (an SDK
    ``BatchSpanProcessor`` exports every few seconds), for a process about to end without
    running its exit handlers. Nothing when OpenTelemetry was never imported."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return
    force_flush = getattr(api.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(timeout_millis)
