"""The blocking client in a Jupyter notebook, executed by a real kernel (ipykernel, run by
nbclient), and the error it keeps for any other running event loop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import BlockingKernelClient, KernelManager
from nbclient import NotebookClient

import omniq
from omniq import OmniQ
from omniq.errors import SyncInAsyncError

TASKS = """
def add(a: int, b: int) -> int:
    return a + b
"""

# Each cell, and what it prints. A cell runs inside the kernel's running event loop.
CELLS = [
    (
        "import asyncio\nprint(asyncio.get_running_loop().is_running())",
        "True\n",
    ),
    (
        "from omniq import OmniQ\n"
        "import nbtasks\n"
        "oq = OmniQ(base_dir='store')\n"
        "task_id = oq.enqueue(nbtasks.add, 2, 3)\n"
        "print(oq.stats()['default']['pending'])",
        "1\n",
    ),
    (
        "oq.worker(concurrency=2).run(burst=True)\n"
        "print(oq.get_result(task_id).result)\n"
        "print([e.event_type.value for e in oq.get_events(task_id)])",
        "5\n['enqueued', 'executing', 'complete']\n",
    ),
    (
        # A thread of the notebook's with its own running loop is no cell: it keeps the error.
        "import threading\n"
        "from omniq.errors import SyncInAsyncError\n"
        "caught = []\n"
        "async def blocking_inside_a_coroutine():\n"
        "    try:\n"
        "        oq.stats()\n"
        "    except SyncInAsyncError as exc:\n"
        "        caught.append(exc)\n"
        "thread = threading.Thread(target=asyncio.run, args=(blocking_inside_a_coroutine(),))\n"
        "thread.start(); thread.join()\n"
        "print(type(caught[0]).__name__, 'AsyncOmniQ' in str(caught[0]))",
        "SyncInAsyncError True\n",
    ),
    (
        "with OmniQ(base_dir='store') as again:\n"
        "    print(again.get_result(task_id).result)\n"
        "oq.close()\n"
        "print('closed')",
        "5\nclosed\n",
    ),
]


@pytest.fixture
def kernel_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory a kernel runs in, with ``nbtasks`` importable from it."""
    (tmp_path / "nbtasks.py").write_text(TASKS)
    # A kernelspec of our own, first on JUPYTER_PATH, runs the kernel on this interpreter
    # whatever kernels the machine has; the kernel imports this omniq and the tasks.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    source_root = str(Path(omniq.__file__).resolve().parent.parent)
    paths = [str(tmp_path), source_root, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    for name in [name for name in os.environ if name.startswith("OMNIQ_")]:
        monkeypatch.delenv(name)
    return tmp_path


def test_the_blocking_client_works_in_a_notebook(kernel_dir: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source, _ in CELLS]
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=60,
        startup_timeout=60,
        resources={"metadata": {"path": str(kernel_dir)}},
    )
    client.execute()

    for cell, (source, printed) in zip(notebook.cells, CELLS, strict=True):
        # The kernel may send what a cell prints in several pieces.
        kinds = {(output["output_type"], output.get("name")) for output in cell.outputs}
        assert kinds == {("stream", "stdout")}, f"{source!r} gave {cell.outputs}"
        assert "".join(output["text"] for output in cell.outputs) == printed, source
    assert (kernel_dir / "store" / "omniq.db").exists()


SUBSHELL_CELL = """\
import asyncio, threading, nbtasks
from omniq import OmniQ
print(asyncio.get_running_loop().is_running(), threading.current_thread().name)
with OmniQ(base_dir='store') as oq:
    task_id = oq.enqueue(nbtasks.add, 4, 5)
    oq.worker().run(burst=True)
    print(oq.get_result(task_id).result)
"""


def test_the_blocking_client_works_in_a_kernel_subshell(kernel_dir: Path) -> None:
    # ipykernel 7 runs a subshell's cells in a thread of its own, on a loop of its own.
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(kernel_dir))
    client = manager.blocking_client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=60)
        client.control_channel.send(client.session.msg("create_subshell_request", {}))
        subshell_id = client.control_channel.get_msg(timeout=30)["content"]["subshell_id"]
        request = client.session.msg("execute_request", {"code": SUBSHELL_CELL, "silent": False})
        request["header"]["subshell_id"] = subshell_id
        client.shell_channel.send(request)
        printed = _outputs_until_idle(client, request["header"]["msg_id"])
        # Skip replies to wait_for_ready's kernel_info requests: it sends one a second
        # until the first reply comes, so a slow start leaves some behind.
        reply = client.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != request["header"]["msg_id"]:
            reply = client.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "ok", printed
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert printed == f"True subshell-{subshell_id}\n9\n"


def _outputs_until_idle(client: BlockingKernelClient, msg_id: str) -> str:
    """What the request printed (its tracebacks too), once the kernel is done with it."""
    printed: list[str] = []
    while True:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind == "error":
            printed.append("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(printed)


def test_a_coroutine_under_asyncio_run_still_gets_the_error(tmp_path: Path) -> None:
    # IPython imported (as a library may) but no shell running: not a notebook.
    import IPython

    assert IPython.get_ipython() is None
    oq = OmniQ(base_dir=str(tmp_path))
    oq.connect()

    async def main() -> None:
        with pytest.raises(SyncInAsyncError, match="AsyncOmniQ"):
            oq.stats()

    try:
        asyncio.run(main())
        assert oq.stats() == {}  # outside the loop it still works
    finally:
        oq.close()
