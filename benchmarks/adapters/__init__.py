"""Producer-side adapters: how each library enqueues and how its worker is started.

:data:`REGISTRY` maps a row label to its adapter class path; classes are imported lazily so
that a missing peer only fails its own rows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from benchmarks.adapters.base import Adapter


@dataclass(frozen=True)
class Entry:
    """One row family: a library (or a variant of it) and the backends it runs on."""

    label: str
    library: str
    target: str  # "module:Class"
    backends: tuple[str, ...]
    variant: bool = False  # non-default knob: only run when named explicitly

    def load(self) -> type[Adapter]:
        """Import the adapter class."""
        module, _, name = self.target.partition(":")
        cls: type[Adapter] = getattr(importlib.import_module(module), name)
        return cls


_P = "benchmarks.adapters."
OMNIQ_BACKENDS = ("redis", "sqlite", "file", "postgres", "nats")
REGISTRY: dict[str, Entry] = {
    e.label: e
    for e in (
        Entry("omniq", "omniq", _P + "omniq_adapter:OmniQAdapter", OMNIQ_BACKENDS),
        Entry("omniq-noevents", "omniq", _P + "omniq_adapter:OmniQNoEventsAdapter", OMNIQ_BACKENDS),
        Entry("arq", "arq", _P + "arq:ArqAdapter", ("redis",)),
        Entry("saq", "saq", _P + "saq:SaqAdapter", ("redis", "postgres")),
        Entry("rq", "rq", _P + "rq:RqAdapter", ("redis",)),
        Entry("taskiq", "taskiq", _P + "taskiq:TaskiqStreamAdapter", ("redis",)),
        Entry("taskiq-list", "taskiq", _P + "taskiq:TaskiqListAdapter", ("redis",)),
        Entry("taskiq-nats", "taskiq", _P + "taskiq:TaskiqNatsAdapter", ("nats",)),
        Entry("dramatiq", "dramatiq", _P + "dramatiq:DramatiqAdapter", ("redis",)),
        Entry("celery", "celery", _P + "celery:CeleryAdapter", ("redis",)),
        Entry("huey", "huey", _P + "huey:HueyAdapter", ("redis", "sqlite", "file")),
        Entry(
            "procrastinate",
            "procrastinate",
            _P + "procrastinate:ProcrastinateAdapter",
            ("postgres",),
        ),
        Entry("pgqueuer", "pgqueuer", _P + "pgqueuer:PgQueuerAdapter", ("postgres",)),
        Entry("arq-fastpoll", "arq", _P + "arq:ArqFastPollAdapter", ("redis",), variant=True),
        Entry("rq-simple", "rq", _P + "rq:RqSimpleWorkerAdapter", ("redis",), variant=True),
    )
}

PEER_LIBRARIES = (
    "arq",
    "saq",
    "rq",
    "taskiq",
    "dramatiq",
    "celery",
    "huey",
    "procrastinate",
    "pgqueuer",
)
