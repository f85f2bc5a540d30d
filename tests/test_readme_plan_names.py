"""The README's "Coming from the plan's API" tables name only what OmniQ has.

Each table row is ``| plan | OmniQ | note |``. Code spans are checked by these rules:

- A span names something when its name (the text before any ``(``) starts with
  ``omniq.``, ``oq.`` (a method of ``omniq.OmniQ``), ``pool.`` (of ``omniq.WorkerPool``)
  or a name ``omniq`` exports (``OmniQ``, ``Settings.from_yaml``). It must resolve:
  the longest importable module prefix, then ``getattr`` for the rest. Keywords at the
  top level of its parentheses (``oq.worker(worker_type="thread")``) must be parameters
  of what it names; for a client, ``**overrides`` take ``Settings`` fields.
- A span ``OMNIQ_NAME`` must be an environment variable OmniQ reads.
- The OmniQ cell's spans follow these rules. A cell reading ``same`` stands for the plan
  cell's spans: the plan's names work as they are. A cell reading ``—`` says OmniQ has
  none of them: every plan span the rules can check must fail them.

Other spans (``memory://name``, ``worker_type="thread"``, ``pip install omniq``) are text.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import pytest

import omniq
from omniq.config import EnvConfig, Settings
from tests.conftest import REPO_ROOT

SECTION = "## Coming from the plan's API"
_MISSING = object()
_SPAN = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"[A-Za-z_][\w.]*")
_ENV = re.compile(r"OMNIQ_[A-Z0-9_]+")
_PREFIXES = {"omniq": "omniq", "oq": "omniq.OmniQ", "pool": "omniq.WorkerPool"}


def section() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(SECTION)
    end = readme.index("\n## ", start + len(SECTION))
    return readme[start:end]


def rows() -> list[tuple[str, str, str]]:
    found = []
    for line in section().splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"a row needs three cells (no | inside them): {line}"
        if cells != ["plan", "OmniQ", "note"]:
            found.append((cells[0], cells[1], cells[2]))
    return found


def resolve(dotted: str) -> Any:
    """The object ``dotted`` names, or _MISSING."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def top_level_keywords(call: str) -> list[str]:
    """The ``name=`` keywords directly inside the outermost parentheses of ``call``."""
    text = re.sub(r"\"[^\"]*\"|'[^']*'", '""', call)
    keywords, depth = [], 0
    for match in re.finditer(r"[()\[\]{}]|(\w+)=(?!=)", text):
        token = match.group(0)
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
        elif depth == 1:
            keywords.append(match.group(1))
    return keywords


def accepts(obj: Any, keyword: str) -> bool:
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return True
    if keyword in params:
        return True
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        if obj in (omniq.OmniQ, omniq.AsyncOmniQ):
            return keyword in Settings.__struct_fields__
        return True
    return False


def check(span: str) -> bool | None:
    """True if ``span`` names what OmniQ has, False if not, None if it is just text."""
    if _ENV.fullmatch(span):
        return not EnvConfig({span: ""}).unknown()
    name = _NAME.match(span)
    if name is None:
        return None
    first, *rest = name.group(0).rstrip(".").split(".")
    if first in _PREFIXES:
        dotted = ".".join((_PREFIXES[first], *rest))
    elif first in omniq.__all__:
        dotted = ".".join(("omniq", first, *rest))
    else:
        return None
    obj = resolve(dotted)
    if obj is _MISSING:
        return False
    call = span[name.end() :]
    return not call.startswith("(") or all(accepts(obj, k) for k in top_level_keywords(call))


def test_section_sits_before_benchmarks_with_a_table_per_area() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.index(SECTION) < readme.index("## Benchmarks")
    areas = re.findall(r"^### (.+)$", section(), re.M)
    assert areas == [
        "Client and options",
        "Settings and environment variables",
        "Storage classes",
        "Workers",
        "Events",
        "Command line and installing",
    ]
    assert len(rows()) >= 40


@pytest.mark.parametrize(
    ("plan", "ours", "note"), rows(), ids=[row[0].replace("`", "")[:50] for row in rows()]
)
def test_row_names_what_omniq_has(plan: str, ours: str, note: str) -> None:
    if ours == "—":
        checked = {span: check(span) for span in _SPAN.findall(plan)}
        present = [span for span, ok in checked.items() if ok]
        assert not present, f"said to be absent, but OmniQ has: {present}"
        assert note, "an absent name needs a note saying what to use"
        return
    spans = _SPAN.findall(plan if ours == "same" else ours)
    checked = {span: check(span) for span in spans}
    missing = [span for span, ok in checked.items() if ok is False]
    assert not missing, f"OmniQ has no: {missing}"


def test_checker_tells_names_apart() -> None:
    assert check("omniq.storage.sqlite.SQLiteQueue")
    assert check('oq.worker(worker_type="thread", concurrency=2)')
    assert check('OmniQ(namespace="x", event_storage=False)')
    assert check("OMNIQ_MAX_WORKERS")
    assert check("omniq.workers.ThreadPoolWorker") is False
    assert check("oq.get_result(schedule_id=…)") is False
    assert check("OmniQ(project_name=…)") is False
    assert check("OMNIQ_RETRY_ATTEMPTS") is False
    assert check("memory://name") is None
