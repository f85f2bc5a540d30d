"""A dashboard over a real client, driven through Starlette's TestClient.

``dash`` is parametrised over the two clients ``create_app`` takes: an ``AsyncOmniQ``
(called on the TestClient's event loop, through its portal) and a blocking ``OmniQ``
(whose calls the dashboard makes in threads).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from omniq import AsyncOmniQ, OmniQ
from omniq.dashboard import create_app


class Dash:
    """A client with its dashboard: ``call`` runs a client method wherever it must run."""

    def __init__(self, oq: AsyncOmniQ | OmniQ, http: TestClient) -> None:
        self.oq = oq
        self.http = http

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.oq, OmniQ):
            return getattr(self.oq, name)(*args, **kwargs)
        method = getattr(self.oq, name)
        return self.http.portal.call(functools.partial(method, *args, **kwargs))

    def submit(self, func: str, *args: Any, **options: Any) -> str:
        task_id: str = self.call("submit", func, args, **options)
        return task_id

    def drain(self, queues: str = "default") -> None:
        """Run everything due now on ``queues`` (a burst worker)."""
        if isinstance(self.oq, OmniQ):
            self.oq.worker(worker_type="thread", queues=queues).run(burst=True)
            return
        pool = self.oq.worker(worker_type="async", queues=queues)
        self.http.portal.call(functools.partial(pool.run, burst=True))

    def csrf(self, page: str = "/") -> str:
        """The CSRF token a page's forms carry (a GET also sets its cookie)."""
        html = self.http.get(page).text
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        if found:
            return found.group(1)
        token = self.http.cookies.get("omniq_csrf")
        assert token, "no CSRF token on the page or in the cookie"
        return token

    def post(self, path: str, token: str | None = None, **headers: str) -> Any:
        data = {} if token is None else {"csrf": token}
        return self.http.post(path, data=data, headers=headers, follow_redirects=False)


def make_client(kind: str, path: Path) -> AsyncOmniQ | OmniQ:
    url = f"sqlite:///{path / 'omniq.db'}"
    cls: Callable[..., AsyncOmniQ | OmniQ] = AsyncOmniQ if kind == "async" else OmniQ
    return cls(task_queue=url, result_storage=url, event_storage=url, base_dir=str(path))


@pytest.fixture(params=["async", "sync"])
def dash(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dash]:
    """A dashboard (no auth, actions on) over a fresh SQLite store."""
    oq = make_client(request.param, tmp_path)
    with TestClient(create_app(oq)) as http:
        yield Dash(oq, http)
        if isinstance(oq, AsyncOmniQ):
            http.portal.call(oq.close)
    if isinstance(oq, OmniQ):
        oq.close()
