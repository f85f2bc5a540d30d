"""OmniQ's web dashboard (the ``web`` extra: ``pip install 'omniq[web]'``).

``create_app(oq)`` returns an ASGI app that shows queues, tasks, schedules and live
workers, and can cancel and requeue tasks and pause, resume or remove schedules; serve it
with ``omniq dashboard --app pkg.module:oq`` or mount it in an existing app::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from omniq.dashboard import create_app

    app = Starlette(routes=[Mount("/omniq", app=create_app(oq, auth="admin:s3cret"))])

Importing ``omniq`` never imports this package (nor Starlette).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniq.errors import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from omniq.core import AsyncOmniQ
    from omniq.sync import OmniQ

__all__ = ["create_app"]

# What the web extra brings (uvicorn only serves it: `omniq dashboard`).
_WEB_EXTRA = frozenset({"starlette", "jinja2"})


def create_app(
    oq: AsyncOmniQ | OmniQ,
    *,
    auth: str | tuple[str, str] | None = None,
    read_only: bool = False,
) -> ASGIApp:
    """The dashboard of ``oq`` (an ``AsyncOmniQ``, or an ``OmniQ`` whose blocking calls
    then run in worker threads) as an ASGI app.

    ``auth``: ``"user:password"`` (or a pair) turns on HTTP basic auth; None reads
    ``OMNIQ_DASHBOARD_AUTH`` (no auth when it is unset). ``read_only=True`` shows
    everything and refuses every action. Actions are POSTs that carry a CSRF token.
    The app does not close ``oq``: whoever made it does.

    Example::

        app = create_app(AsyncOmniQ("redis://localhost:6379/0"), read_only=True)
        # uvicorn module:app
    """
    try:
        from omniq.dashboard._app import build_app
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _WEB_EXTRA:
            raise
        raise ConfigError(
            f"the dashboard needs the web extra: pip install 'omniq[web]' ({exc})"
        ) from exc
    return build_app(oq, auth=auth, read_only=read_only)[1]
