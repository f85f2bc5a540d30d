"""``omniq dashboard``: the dashboard served by uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from omniq.core import AsyncOmniQ
from omniq.errors import ConfigError

__all__ = ["serve"]

# On a stop, wait this long for the open requests (live streams end within a second),
# then close them.
_STOP_SECONDS = 2


async def serve(
    oq: AsyncOmniQ, *, host: str, port: int, auth: tuple[str, str] | None, read_only: bool
) -> None:
    """Serve ``oq``'s dashboard on ``host:port`` until SIGTERM or SIGINT (a second one
    stops at once), then close ``oq``."""
    try:
        import uvicorn

        from omniq.dashboard._app import build_app
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("starlette", "jinja2", "uvicorn"):
            raise
        raise ConfigError(
            f"dashboard needs the web extra: pip install 'omniq[web]' ({exc})"
        ) from None

    class Server(uvicorn.Server):
        # uvicorn re-raises the signal it caught once it has stopped, which would end the
        # process before the client is closed: stop the same way, and return instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()

            def stop() -> None:
                self.force_exit = self.should_exit
                self.should_exit = True
                dashboard.closing = True  # its live streams end: nothing is left waiting

            caught = []
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, stop)
                    caught.append(signum)
            try:
                yield
            finally:
                for signum in caught:
                    loop.remove_signal_handler(signum)

    dashboard, app = build_app(oq, auth=auth, read_only=read_only)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=_STOP_SECONDS,
    )
    print(f"OmniQ dashboard on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    try:
        await Server(config).serve()
    finally:
        await oq.close()
