"""The Redis scripts load from the package's lua/ files: every file, and every name the
code calls by (no server needed)."""

from __future__ import annotations

import re
from importlib import resources

from omniq.storage.redis._scripts import SCRIPTS, SHAS
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "omniq" / "storage" / "redis"


def test_every_lua_file_but_common_is_a_script() -> None:
    files = {
        entry.name.removesuffix(".lua")
        for entry in resources.files("omniq.storage.redis").joinpath("lua").iterdir()
        if entry.name.endswith(".lua")
    }
    assert "finish" in files and "common" in files
    assert set(SCRIPTS) == set(SHAS) == files - {"common"}
    common = (PACKAGE / "lua" / "common.lua").read_text(encoding="utf-8")
    assert all(text.startswith(common) for text in SCRIPTS.values())


def test_every_script_the_code_calls_exists() -> None:
    # client.script("name", ...), client.scripts("name", ...) and SHAS["name"]
    called = re.compile(r"""\.scripts?\(\s*"(\w+)"|SHAS\["(\w+)"\]""")
    names: set[str] = set()
    for module in PACKAGE.glob("*.py"):
        for match in called.finditer(module.read_text(encoding="utf-8")):
            names.add(match.group(1) or match.group(2))
    assert {"claim", "enqueue", "finish", "put_results"} <= names
    assert names <= set(SCRIPTS)
