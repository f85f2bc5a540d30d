"""The generated reference pages match the code they are generated from.

docs/reference/configuration.md is rendered from ``omniq.config.Settings`` and
docs/reference/cli.md from the ``omniq`` parser by docs/_gen.py; a setting or an option
added, renamed or changed without regenerating them fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from omniq.config import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_up_to_date(gen: ModuleType) -> None:
    for path, text in gen.pages().items():
        committed = path.read_text(encoding="utf-8")
        assert committed == text, f"{path.relative_to(ROOT)} is stale; run: {gen.REGENERATE}"


def test_every_setting_is_in_the_configuration_reference(gen: ModuleType) -> None:
    page = gen.configuration_page()
    for name in Settings.__struct_fields__:
        assert f"| `{name}` | `OMNIQ_{name.upper()}` |" in page


def test_every_command_is_in_the_cli_reference(gen: ModuleType) -> None:
    page = gen.cli_page()
    for command in ("worker", "enqueue", "status", "events", "schedules", "requeue", "demo"):
        assert f"\n## omniq {command}\n" in page
    assert "`--metrics-port`" in page and "`--queue-order`" in page
