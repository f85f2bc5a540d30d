"""``gcp-storage-emulator`` with GCS's preconditions: run as ``python _gcs_emulator.py PORT``.

See ``tests/gcsserver.py``: the emulator ignores ``ifGenerationMatch``; this serves it with
that rule added (a write or delete whose ``ifGenerationMatch`` is not the live generation,
``0`` for absent, gets 412 ``conditionNotMet``) and that an empty media upload is an empty
object. Self-contained: it runs as a script, with
no ``tests`` package on its path.
"""

from __future__ import annotations

import http.server
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

Handler = Callable[..., Any]


def _with_precondition(handler: Handler, object_name: Callable[[Any], str | None]) -> Handler:
    """``handler``, refusing with 412 a request whose ``ifGenerationMatch`` does not hold."""
    from gcp_storage_emulator.exceptions import NotFound  # type: ignore[import-untyped]

    def checked(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        wanted = request.query.get("ifGenerationMatch")
        name = object_name(request) if wanted else None
        if wanted and name is not None:
            try:
                live = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
            except NotFound:
                live = "0"
            if live != wanted[0]:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json(
                    {
                        "error": {
                            "code": 412,
                            "message": "At least one of the pre-conditions you specified "
                            "did not hold.",
                            "errors": [{"reason": "conditionNotMet"}],
                        }
                    }
                )
                return None
        return handler(request, response, storage, *args, **kwargs)

    return checked


def _uploaded_name(request: Any) -> str | None:
    if "name" in request.query:
        return str(request.query["name"][0])
    if request.query.get("uploadType") == ["multipart"]:
        return str(request.data["meta"].get("name"))
    return None


def main(port: int) -> None:
    """Serve the emulator, in memory, with preconditions on uploads and deletes."""
    import logging

    from gcp_storage_emulator.handlers import objects  # type: ignore[import-untyped]

    # Before the server module is imported: its routing table takes these functions.
    objects.insert = _with_precondition(objects.insert, _uploaded_name)
    objects.delete = _with_precondition(objects.delete, lambda r: r.params["object_id"])
    from gcp_storage_emulator import server  # type: ignore[import-untyped]

    # It reads an empty body as no body, and an empty media upload (an empty object, which
    # GCS stores) then fails with 500.
    read_data = server._read_data

    def read_data_or_empty(handler: Any, query: dict[str, list[str]]) -> Any:
        data = read_data(handler, query)
        if data is None and query.get("uploadType") == ["media"]:
            return b""
        return data

    server._read_data = read_data_or_empty

    # It serves one request at a time (which keeps each precondition check and its write
    # atomic) and closes every connection; with the default listen backlog of 5, clients
    # firing requests concurrently see their connections dropped and retried for seconds.
    http.server.HTTPServer.request_queue_size = 1024

    logging.basicConfig(level=logging.CRITICAL)
    server.create_server("127.0.0.1", port, in_memory=True).run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
