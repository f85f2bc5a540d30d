"""The Lua scripts, loaded by name from the ``lua/`` files beside this module.

Every ``.lua`` file but ``common.lua`` is a script named after its file, and runs with
``common.lua`` (the helpers every script shares) in front of it. The names come from the
files present, so a new script cannot be left out of the list loaded into Redis.
"""

from __future__ import annotations

import hashlib
from importlib import resources

__all__ = ["SCRIPTS", "SHAS"]

_LUA_DIR = resources.files(__package__).joinpath("lua")
_COMMON = "common.lua"


def _load_scripts() -> dict[str, str]:
    common = _LUA_DIR.joinpath(_COMMON).read_text(encoding="utf-8")
    scripts = {}
    for entry in sorted(_LUA_DIR.iterdir(), key=lambda entry: entry.name):
        if entry.name.endswith(".lua") and entry.name != _COMMON:
            text = entry.read_text(encoding="utf-8")
            scripts[entry.name.removesuffix(".lua")] = common + "\n" + text
    return scripts


#: Script name -> its full text (``common.lua``, then the script's file).
SCRIPTS = _load_scripts()
#: Script name -> the SHA1 ``EVALSHA`` calls it by.
SHAS = {
    # The name Redis gives a script (EVALSHA), not a security measure.
    name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    for name, text in SCRIPTS.items()
}
