"""URL helpers shared by the server backends (Redis, PostgreSQL)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact_url", "split_namespace", "split_option"]


def split_option(url: str, name: str) -> tuple[str, str | None]:
    """``url`` without the query parameter ``name``, and that parameter's value.

    OmniQ's own options ride in the URL's query beside the driver's; they are taken out
    before the URL reaches the driver, which would refuse (or forward to the server) a
    parameter it does not know. The last of repeated values wins.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [value for key, value in query if key == name]
    if not found:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != name])
    return urlunsplit(parts._replace(query=rest)), found[-1]


def split_namespace(url: str) -> tuple[str, str | None]:
    """``url`` without a ``namespace`` query parameter, and that parameter's value."""
    return split_option(url, "namespace")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
