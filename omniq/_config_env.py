"""The ``OMNIQ_*`` environment: the settings it holds, and the variables OmniQ does not read.

A variable named ``OMNIQ_`` + a field's upper-case name sets that field (``OMNIQ_CONFIG``
names a YAML file). Any other ``OMNIQ_*`` variable is a typo or a name from elsewhere: it
is ignored, with one warning per process naming the closest variable OmniQ reads.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from typing import Any

from omniq._config_values import ENV, ENV_PREFIX, RULES, convert

__all__ = ["CONFIG_ENV_VAR", "EnvConfig", "warn_unknown_variables"]

logger = logging.getLogger("omniq")

#: The variable that names a YAML file of settings.
CONFIG_ENV_VAR = "OMNIQ_CONFIG"
#: ``OMNIQ_*`` variables OmniQ reads that are not settings (the CLI reads OMNIQ_APP, the
#: dashboard OMNIQ_DASHBOARD_AUTH).
_OTHER_VARIABLES = frozenset({CONFIG_ENV_VAR, "OMNIQ_APP", "OMNIQ_DASHBOARD_AUTH"})
#: Prefixes of the variables of OmniQ's own test suite and benchmarks.
_OTHER_PREFIXES = ("OMNIQ_TEST_", "OMNIQ_BENCH_")
#: Variables of the plan OmniQ grew from, and the one to use instead (spelling alone
#: would point some of them the wrong way: GEVENT_WORKERS is close to EVENT_STORAGE_URL).
_PLAN_VARIABLES = {
    "OMNIQ_RETRY_ATTEMPTS": "OMNIQ_MAX_RETRIES",
    "OMNIQ_PROJECT_NAME": "OMNIQ_NAMESPACE",
    "OMNIQ_THREAD_WORKERS": "OMNIQ_MAX_WORKERS",
    "OMNIQ_PROCESS_WORKERS": "OMNIQ_MAX_WORKERS",
    "OMNIQ_GEVENT_WORKERS": "OMNIQ_MAX_WORKERS",
    "OMNIQ_FSSPEC_URI": "OMNIQ_TASK_QUEUE_URL",
    "OMNIQ_DISABLE_LOGGING": "OMNIQ_LOG_LEVEL",
}
# Unknown variables already warned about: once per process, however often settings load.
_warned_variables: set[str] = set()


class EnvConfig:
    """The settings found in ``OMNIQ_*`` variables of a mapping (default ``os.environ``).

    >>> EnvConfig({"OMNIQ_MAX_WORKERS": "4", "OMNIQ_TASK_TTL": "1h"}).values()
    {'max_workers': 4, 'task_ttl': 3600.0}

    ``OMNIQ_CONFIG`` names a YAML file. Other ``OMNIQ_*`` variables that are not settings
    (a typo such as ``OMNIQ_MAX_WORKER``) are ignored, with a warning on the ``omniq``
    logger the first time :meth:`values` meets each, naming the closest known variable.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    @property
    def config_file(self) -> str | None:
        """The YAML path in ``OMNIQ_CONFIG``, or None when unset or empty."""
        return self._environ.get(CONFIG_ENV_VAR) or None

    def unknown(self) -> dict[str, str | None]:
        """Each ``OMNIQ_*`` variable that OmniQ does not read, with the closest known name
        (or None).

        >>> EnvConfig({"OMNIQ_MAX_WORKER": "8"}).unknown()
        {'OMNIQ_MAX_WORKER': 'OMNIQ_MAX_WORKERS'}
        """
        known = {ENV_PREFIX + name.upper() for name in RULES} | _OTHER_VARIABLES
        # Compared without the prefix, which every name shares.
        suffixes = sorted(name.removeprefix(ENV_PREFIX) for name in known)
        found: dict[str, str | None] = {}
        for var in self._environ:
            if not var.startswith(ENV_PREFIX) or var in known or var.startswith(_OTHER_PREFIXES):
                continue
            if var in _PLAN_VARIABLES:
                found[var] = _PLAN_VARIABLES[var]
                continue
            close = difflib.get_close_matches(var.removeprefix(ENV_PREFIX).upper(), suffixes, n=1)
            found[var] = ENV_PREFIX + close[0] if close else None
        return found

    def values(self) -> dict[str, Any]:
        """Converted field values; a bad one raises ConfigError naming its variable.

        Warns (once per process) about each variable :meth:`unknown` finds."""
        warn_unknown_variables(self._environ)
        found: dict[str, Any] = {}
        for name in RULES:
            var = ENV_PREFIX + name.upper()
            if var in self._environ:
                found[name] = convert(name, self._environ[var], source=ENV, from_text=True)
        return found


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log a warning on the ``omniq`` logger for each ``OMNIQ_*`` variable of ``environ``
    (default ``os.environ``) that OmniQ does not read, once per variable and process.

    Returns the messages logged by this call. Settings loading calls it; so does the
    ``omniq`` command at start-up, where the warnings go to stderr.
    """
    messages = []
    for var, close in EnvConfig(environ).unknown().items():
        if var in _warned_variables:
            continue
        _warned_variables.add(var)
        hint = f" (did you mean {close}?)" if close else ""
        messages.append(f"environment variable {var} is not an OmniQ setting: ignored{hint}")
        logger.warning("%s", messages[-1])
    return messages
