"""URL helpers shared by the server backends (Redis, PostgreSQL)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact_url", "split_namespace"]


def split_namespace(url: str) -> tuple[str, str | None]:
    """``url`` without a ``namespace`` query parameter, and that parameter's value."""
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [value for key, value in query if key == "namespace"]
    if not found:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != "namespace"])
    return urlunsplit(parts._replace(query=rest)), found[-1]


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
