"""A FastAPI app that hands work to OmniQ, with a worker process beside it (async API).

Two ways a web app uses a task queue, one endpoint each:

- ``POST /summaries`` enqueues a task and waits for its result (up to a timeout) before
  answering: the work runs in the worker, off the web server's process.
- ``POST /jobs`` enqueues and answers ``202`` with the task id at once; the client then
  polls ``GET /jobs/{task_id}`` for the status and, once it is complete, the result.

Run it from this directory, in two terminals (both find the stores through the same
settings: by default SQLite under ``./.omniq``; ``OMNIQ_BASE_DIR`` or any ``OMNIQ_*``
variable changes that for both)::

    omniq worker --app fastapi_app:oq          # the worker: imports this module
    uvicorn fastapi_app:app --port 8000        # the web app (pip install fastapi uvicorn)

    curl -s localhost:8000/summaries -H 'content-type: application/json' \\
         -d '{"text": "OmniQ runs tasks. Workers run beside the app."}'
    curl -s localhost:8000/jobs -H 'content-type: application/json' -d '{"text": "hi"}'
    curl -s localhost:8000/jobs/<task_id>

The worker imports this module (``--app fastapi_app:oq``), so it knows the task
``summarize`` by the name the app enqueues it under. It never starts the web app: that
is only built here, and served by uvicorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from omniq import AsyncOmniQ
from omniq.errors import ResultTimeoutError, TaskFailedError

# One client for the app (and, through --app, for the worker). Building it touches no
# storage; the app's lifespan connects it and closes it.
oq = AsyncOmniQ()


@oq.task(timeout="30s", max_retries=2)
async def summarize(text: str) -> dict[str, int | str]:
    """The work: a stand-in for something slow (a model call, a PDF render...)."""
    words = text.split()
    first_sentence = text.split(".")[0].strip()
    return {"words": len(words), "sentences": text.count("."), "first": first_sentence}


class Document(BaseModel):
    """The request body of both endpoints."""

    text: str


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Connect the client as the app starts and close it as the app stops."""
    async with oq:
        yield


app = FastAPI(title="OmniQ example", lifespan=lifespan)


@app.post("/summaries")
async def create_summary(doc: Document) -> dict[str, int | str]:
    """Enqueue the work and wait for it (at most 10 s): the result is the response."""
    handle = await summarize.delay(doc.text)
    try:
        return await handle.result(timeout=10)
    except ResultTimeoutError:
        # Still queued or running (is a worker up?): tell the client where to look.
        raise HTTPException(504, f"not done yet; poll /jobs/{handle}") from None
    except TaskFailedError as exc:
        raise HTTPException(500, f"summarize failed: {exc}") from None


@app.post("/jobs", status_code=202)
async def create_job(doc: Document) -> dict[str, str]:
    """Enqueue the work and answer at once with the id to poll."""
    handle = await summarize.delay(doc.text)
    return {"task_id": handle.task_id}


@app.get("/jobs/{task_id}")
async def get_job(task_id: str) -> dict[str, object]:
    """The task's status, and its result (or error) once it has finished."""
    task = await oq.get_task(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id}")
    body: dict[str, object] = {"task_id": task_id, "status": task.status.value}
    result = await oq.get_result(task_id)  # None until the task has finished
    if result is not None:
        body["result"] = result.result
        body["error"] = None if result.error is None else result.error.message
    return body
