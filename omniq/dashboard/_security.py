"""Basic auth and cross-site request protection of the dashboard.

Cross-site requests: every action is a POST carrying a token that must match the one in
the dashboard's cookie (the double-submit pattern: another site can make a browser send
the cookie, but cannot read it to put it in the form). The cookie is ``SameSite=Strict``
and ``HttpOnly``, and a POST whose browser says it comes from another site
(``Sec-Fetch-Site: cross-site``) is refused before the token is even looked at.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CSRF_COOKIE", "BasicAuth", "csrf_refusal", "csrf_token"]

CSRF_COOKIE = "omniq_csrf"
CSRF_FIELD = "csrf"


class BasicAuth:
    """ASGI middleware: HTTP basic auth on every request (static files included)."""

    def __init__(self, app: ASGIApp, credentials: tuple[str, str]) -> None:
        self.app = app
        self._expected = _encode(*credentials)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b'Basic realm="OmniQ", charset="UTF-8"'),
                    (b"content-type", b"text/plain; charset=utf-8"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"Authentication required\n"})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() != b"basic":
                    return False
                try:
                    decoded = base64.b64decode(given.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                # Constant time over the whole "user:password": no early exit on the user.
                return hmac.compare_digest(decoded, self._expected)
        return False


def _encode(user: str, password: str) -> bytes:
    return f"{user}:{password}".encode()


def csrf_token(request: Request) -> str:
    """The page's token: the cookie's, or a new one the response sets."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
    request.state.csrf_token = token
    return token


def csrf_refusal(request: Request, form: Mapping[str, str]) -> str | None:
    """Why a POST is refused as cross-site, or None when it may go ahead."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get(CSRF_FIELD, "")
    if not cookie or not given or not hmac.compare_digest(cookie.encode(), given.encode()):
        return "missing or wrong CSRF token (reload the page and try again)"
    return None
