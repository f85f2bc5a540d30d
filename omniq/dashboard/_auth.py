"""The dashboard's credentials: ``"user:password"``, given or from the environment.

Kept apart from the ASGI code so that the command line checks ``--auth`` without
importing Starlette.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from omniq.errors import ConfigError

__all__ = ["AUTH_VARIABLE", "auth_from", "parse_auth"]

#: The environment variable that turns basic auth on when no ``auth`` is given.
AUTH_VARIABLE = "OMNIQ_DASHBOARD_AUTH"


def parse_auth(auth: str | tuple[str, str] | None, *, source: str = "auth") -> tuple[str, str]:
    """``"user:password"`` (or a pair) as a pair; ConfigError naming ``source`` if not."""
    if isinstance(auth, tuple):
        user, password = auth
    else:
        user, sep, password = (auth or "").partition(":")
        if not sep:
            raise ConfigError(f"{source}: expected 'user:password'")
    if not user or not password:
        raise ConfigError(f"{source}: expected 'user:password' with neither part empty")
    return user, password


def auth_from(
    auth: str | tuple[str, str] | None, environ: Mapping[str, str] = os.environ
) -> tuple[str, str] | None:
    """The credentials to require: ``auth``, else ``OMNIQ_DASHBOARD_AUTH``, else none."""
    if auth is not None:
        return parse_auth(auth)
    value = environ.get(AUTH_VARIABLE)
    return parse_auth(value, source=AUTH_VARIABLE) if value else None
