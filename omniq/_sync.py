"""The one bridge from blocking code to OmniQ's async core.

Every sync class (``OmniQ``, ``WorkerPool``, ``SQLiteQueue``…) runs the coroutines of its
async twin on a private event loop owned by a :class:`LoopThread`. One loop per sync
object keeps connections made in one call usable in the next (a fresh loop per call would
not). The calling thread runs that loop itself while nothing else needs it; background
work moves it to a real OS thread (always so under gevent).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
import logging
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, Self, TypeVar, cast, overload

from omniq import _fork
from omniq._greenlets import GreenletWake, NativeThread, native_lock, threading_patched
from omniq._handed_calls import HandedCall
from omniq.errors import SyncInAsyncError

__all__ = [
    "BlockingTwin",
    "LoopThread",
    "StorageTwin",
    "blocking",
    "ensure_not_in_loop",
    "may_wait",
    "twin_in_use",
    "twin_target",
]

T = TypeVar("T")
A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("omniq")

# Background tasks that can wait for the sync client's next call, each with how long: the
# event logger's writer. While only these are pending the calling thread keeps running
# the loop itself (a thread would cost every later call two wake-ups), and a timer runs
# them if no call comes within that time.
_MAY_WAIT: weakref.WeakKeyDictionary[asyncio.Future[Any], float] = weakref.WeakKeyDictionary()


def may_wait(task: asyncio.Future[Any], seconds: float) -> None:
    """Let ``task`` wait up to ``seconds`` for a :class:`LoopThread`'s next call before
    the loop runs it without one. Other loops ignore this."""
    _MAY_WAIT[task] = seconds


def ensure_not_in_loop(async_name: str) -> bool:
    """Refuse to block inside a running event loop, pointing to the async class, except
    in a cell of IPython/Jupyter (see :func:`_runs_ipython_cells`) and in a greenlet that
    is not running the loop's code (see :func:`_loop_is_another_greenlets`).

    Returns True when a loop runs in the calling thread all the same: the call must then
    run on another thread's loop while this one waits.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if _runs_ipython_cells() or _loop_is_another_greenlets(loop):
        return True
    raise SyncInAsyncError(
        f"the blocking API cannot be called from inside a running event loop; "
        f"use {async_name} (await its methods) instead"
    )


def _loop_is_another_greenlets(loop: asyncio.AbstractEventLoop) -> bool:
    """True when gevent has patched threading and another greenlet runs the loop found.

    asyncio's running loop belongs to the OS thread, so every greenlet of a thread where
    one greenlet runs a loop finds it: a ``thread`` worker's task runs in a greenlet of
    the loop's own thread there (its threads are greenlets), a ``gevent`` worker's child
    runs its async tasks in a greenlet of its own. Waiting in another greenlet is
    cooperative: the loop's greenlet runs on meanwhile. Which greenlet runs the loop is
    the loop's ``_thread_id`` (asyncio's own check of ``call_soon`` callers), which
    asyncio takes from ``threading.get_ident``, patched by gevent to name the greenlet.
    A loop without it (not asyncio's own) counts as running here.
    """
    if not threading_patched():
        return False
    runner = getattr(loop, "_thread_id", None)
    return runner is not None and runner != threading.get_ident()


def _runs_ipython_cells() -> bool:
    """True in a thread where an IPython shell runs its cells.

    A Jupyter kernel (ipykernel) runs an asyncio loop in its main thread and runs each
    cell from a coroutine on it, so a cell always finds a running loop. Blocking there
    stalls nothing a cell does not stall already: ipykernel runs a cell without a
    top-level ``await`` synchronously (``shell.run_cell`` called from its ``do_execute``
    coroutine), so its loop stands still for the whole cell, as under ``time.sleep``. A
    blocking OmniQ call waits only for the client's own loop thread, never for the
    kernel's loop, so it cannot deadlock there: the call runs on that thread and the cell
    waits, as it waits for ``requests.get``. Anywhere else (a coroutine under
    ``asyncio.run``, a server's loop, a thread of the user's in a notebook) blocking would
    stall other tasks, and the error stays. ipykernel 7's subshells run cells in threads
    of their own: those count too.

    IPython is looked up, never imported: its ``get_ipython()`` returns a shell only once
    one runs (ipykernel's ``ZMQInteractiveShell``; the terminal's, whose cells see a
    running loop only with a top-level ``await``), None when IPython is merely imported.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None or get_ipython() is None:
        return False
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return True
    subshell = getattr(sys.modules.get("ipykernel.subshell"), "SubshellThread", None)
    return isinstance(subshell, type) and isinstance(thread, subshell)


class LoopThread:
    """A private asyncio event loop, run by the calling thread while nothing else needs
    it, and on its own daemon thread once something does.

    ``run(coro)`` blocks until the coroutine returns. While no background work exists
    (no pending task: a started worker pool…), the calling thread runs the loop itself
    for the length of the call. That is about as fast as plain asyncio: handing each
    call to another thread and back costs two thread wake-ups, which is most of the
    price of a short call. Work that can wait (see :func:`may_wait`: buffered events
    being written) does not change that: it moves on during later calls, and if none
    comes within its wait, a timer thread runs the loop until that work is done. Once a
    call leaves other work behind, or :meth:`submit` is used, or another thread calls
    while one is already running the loop, a daemon thread takes the loop over and
    keeps it running, and later calls are handed to it. Under gevent monkey-patching
    the loop always runs on its own real OS thread, and callers wait in their hubs
    (see :mod:`omniq._greenlets`). :meth:`stop` ends it all.

    Calls handed to the loop from many threads at once share its wake-ups: each joins an
    inbox, and only a call that finds no wake-up already on its way asks the loop for one
    (a self-pipe write), so the loop starts every call waiting there in one turn, and
    their requests leave together on the pipelined connections. Nothing waits for
    company: a lone call wakes the loop at once (there is no timer or linger).
    """

    def __init__(self, name: str = "omniq-loop", *, async_name: str = "the async API") -> None:
        self._name = name
        self._async_name = async_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | NativeThread | None = None
        # gevent has patched threading: the loop always runs on a real OS thread (a
        # caller running it would run it in a greenlet), and callers wait as greenlets.
        # Decided again whenever a new loop opens (_choose_mode).
        self._greenlets = threading_patched()
        self._lock = self._new_lock()
        # A caller thread is running the loop right now (inside run()).
        self._caller_runs = False
        # Calls handed to the loop while a caller thread runs it: that caller starts the
        # loop thread when it finishes, so they complete.
        self._handed_over = 0
        self._inline = not self._greenlets
        # Calls run by a caller thread so far, and the timer armed for work that waits.
        self._calls = 0
        self._timer: threading.Timer | None = None
        # Calls handed to the loop from other threads, not started yet, and whether a
        # wake-up that starts them is already on its way (see _hand_over).
        self._inbox: deque[HandedCall[Any]] = deque()
        self._wake_sent = False
        _fork.track(self)

    def _after_fork_in_child(self) -> list[Any]:
        """In a forked child: the loop's thread did not come along, and its selector is
        shared with the parent; start over with a new loop at the next call."""
        dropped: list[Any] = [self._loop, self._thread, self._timer]
        self._loop = None
        self._thread = None
        self._timer = None
        self._lock = self._new_lock()  # may have been held by a thread that is gone
        self._caller_runs = False
        self._handed_over = 0
        dropped.append(self._inbox)  # the parent's calls: their threads are not here
        self._inbox = deque()
        self._wake_sent = False
        return dropped

    def _new_lock(self) -> _thread.LockType:
        # Never held across a wait, so an OS lock is right among greenlets too (gevent's
        # would be taken by the loop thread, which is no greenlet of theirs).
        return native_lock() if self._greenlets else threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop, kept running on its thread from now on."""
        with self._lock:
            return self._loop_running_on_thread()

    def _choose_mode(self) -> None:
        """Whether callers are greenlets, looked at again as a new loop opens (called with
        the lock held, no loop open): a gunicorn gevent worker patches after it forks,
        and a client of the app it preloaded was made before that."""
        self._greenlets = threading_patched()
        self._inline = not self._greenlets

    def _loop_running_on_thread(self) -> asyncio.AbstractEventLoop:
        # Called with the lock held.
        loop = self._loop
        if loop is None or loop.is_closed():
            self._choose_mode()
        if self._greenlets:
            if loop is None or loop.is_closed() or not self._thread_runs():
                loop = self._loop = self._start_native_loop()
            return loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.new_event_loop()
        if self._caller_runs:
            self._handed_over += 1  # that caller passes the loop to a thread when done
        elif not self._thread_runs():
            self._start_thread(loop)
        return loop

    def _thread_runs(self) -> bool:
        # True while the loop has a thread of its own (then calls are handed to it).
        return self._thread is not None and self._thread.is_alive()

    def _start_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        ready = threading.Event()
        thread = threading.Thread(
            target=_serve, args=(loop, ready.set), name=self._name, daemon=True
        )
        thread.start()
        ready.wait()
        self._thread = thread

    def _start_native_loop(self) -> asyncio.AbstractEventLoop:
        """Under gevent: a new loop, made and run on a new OS thread (called with the
        lock held).

        Made there because the patched default selector (gevent's) serves the hub of
        the thread that uses it: while the loop waits for I/O, that thread's hub runs
        the greenlets its libraries start as threads (aiosqlite's connection, the
        default executor's workers). The caller waits on an OS lock until the loop
        runs: gevent's Event does not work across threads, and the wait is short
        enough to hold up its hub.
        """
        ready = native_lock()
        ready.acquire()
        made: list[asyncio.AbstractEventLoop] = []
        failed: list[BaseException] = []

        def main() -> None:
            try:
                loop = asyncio.new_event_loop()
            except BaseException as exc:
                failed.append(exc)
                ready.release()
                return
            made.append(loop)
            _serve(loop, ready.release)

        thread = NativeThread(main, self._name)
        thread.start()
        ready.acquire()
        if failed:
            raise failed[0]
        self._thread = thread
        return made[0]

    @staticmethod
    def _is_current(thread: threading.Thread | NativeThread | None) -> bool:
        # True when called from ``thread`` (from the greenlet running its loop when it
        # is native: its other greenlets may wait for that loop).
        if isinstance(thread, NativeThread):
            return thread.is_current()
        return thread is threading.current_thread()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop (running it on its thread) and return a
        concurrent future at once."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and block until it returns."""
        try:
            # In a notebook cell a loop runs here: hand the call to a loop thread.
            in_loop = ensure_not_in_loop(self._async_name)
            if self._thread is not None and self._is_current(self._thread):
                raise SyncInAsyncError(
                    f"the blocking API was called from its own loop thread; use {self._async_name}"
                )
        except BaseException:
            coro.close()
            raise
        with self._lock:
            loop = self._loop
            if loop is None:
                self._choose_mode()
            inline = (
                self._inline and not in_loop and not self._caller_runs and not self._thread_runs()
            )
            if inline:
                if loop is None or loop.is_closed():
                    loop = self._loop = asyncio.new_event_loop()
                self._caller_runs = True
                self._calls += 1
            else:
                try:
                    loop = self._loop_running_on_thread()
                except BaseException:
                    coro.close()
                    raise
                inbox = self._inbox
        if inline:
            assert loop is not None
            return self._run_here(loop, coro)
        return self._hand_over(coro, loop, inbox)

    def _hand_over(
        self,
        coro: Coroutine[Any, Any, T],
        loop: asyncio.AbstractEventLoop,
        inbox: deque[HandedCall[Any]],
    ) -> T:
        """Run ``coro`` on ``loop``, which another thread runs, and block until it returns.

        Cheaper than :meth:`submit` per call, which matters when many threads call at
        once: calls arriving together share one wake-up of the loop (``inbox``), and each
        caller waits on a bare lock the loop releases, not on a concurrent future.
        """
        call = HandedCall(coro, GreenletWake() if self._greenlets else None)
        # Append before looking at the flag, and the loop clears the flag before it
        # empties the inbox: a call either finds a wake-up on its way that will still
        # see it, or sends one. Two callers may both send one; the second finds the
        # inbox empty, which is harmless.
        inbox.append(call)
        if not self._wake_sent:
            self._wake_sent = True
            try:
                loop.call_soon_threadsafe(self._start_calls, inbox)
            except BaseException:  # the loop was closed meanwhile
                self._wake_sent = False
                with contextlib.suppress(ValueError):
                    inbox.remove(call)
                coro.close()
                raise
        try:
            call.done.acquire()
        except BaseException:
            # KeyboardInterrupt while blocked: stop the coroutine rather than leak it.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(call.cancel)
            raise
        return call.outcome()

    def _start_calls(self, inbox: deque[HandedCall[Any]]) -> None:
        # On the loop: start every call waiting in the inbox, in arrival order, this turn.
        self._wake_sent = False
        loop = asyncio.get_running_loop()
        while inbox:
            inbox.popleft().start(loop)

    def _run_here(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
        # Not run_until_complete: it stops the loop from a done callback, one loop turn
        # (a poll of the selector) more per call. The task stops the loop as it ends.
        stopper = _Stopper(loop)
        task = loop.create_task(stopper.run(coro))
        try:
            loop.run_forever()
            if not task.done():
                raise RuntimeError("the event loop stopped before the call completed")
            return task.result()
        except BaseException:
            task.cancel()  # finished by the loop thread started below
            raise
        finally:
            stopper.armed = False  # the task may yet end on a loop thread: not its stop
            with self._lock:
                self._caller_runs = False
                handed_over, self._handed_over = self._handed_over, 0
                if self._loop is not loop:  # stopped meanwhile
                    if not loop.is_running():
                        _shut_down(loop)
                elif handed_over:
                    self._start_thread(loop)
                else:
                    self._after_call(loop)

    def _after_call(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called with the lock held, by the thread that just ran the loop.
        pending = asyncio.all_tasks(loop)
        if not pending:
            return
        waits = [_MAY_WAIT.get(task) for task in pending]
        if None in waits:
            self._start_thread(loop)
        else:
            self._arm_timer(min(wait for wait in waits if wait is not None))

    def _arm_timer(self, delay: float) -> None:
        # Called with the lock held. One timer at a time: it looks again when it fires.
        if self._timer is not None:
            return
        timer = threading.Timer(delay, self._on_timer, args=(self._calls, delay))
        timer.name = f"{self._name}-timer"
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _on_timer(self, calls: int, delay: float) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # stopped, or replaced
            self._timer = None
            loop = self._loop
            if loop is None or loop.is_closed() or self._thread_runs():
                return  # stopped, or a loop thread runs it anyway
            if self._caller_runs or self._calls != calls:
                self._arm_timer(delay)  # calls keep the loop turning; look again later
                return
            self._caller_runs = True  # this thread runs the loop now, as a caller would
        try:
            self._run_here(loop, _waiting_work())
        except Exception:
            logger.debug("running background work between calls failed", exc_info=True)

    def stop(self) -> None:
        """Stop the loop (and its thread, if it has one). Safe to call twice."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            caller_runs = self._caller_runs
            timer, self._timer = self._timer, None
            # Calls still waiting to start belong to the loop that stops: the next loop
            # gets an inbox and wake-ups of its own, and those callers an error.
            inbox, self._inbox = self._inbox, deque()
            self._wake_sent = False
        while inbox:
            inbox.popleft().abandon()
        if timer is not None:
            timer.cancel()
        if loop is None or loop.is_closed():
            return
        if thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            if not self._is_current(thread):
                thread.join(timeout=10)
        elif caller_runs:
            loop.call_soon_threadsafe(loop.stop)  # that caller closes it
        else:
            _shut_down(loop)


class _Stopper:
    """Runs one call's coroutine and, while armed, stops the loop when it ends (the loop
    finishes its current turn first)."""

    __slots__ = ("armed", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.armed = True

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        finally:
            if self.armed:
                self.loop.stop()


async def _waiting_work() -> None:
    """Wait for the loop's background work that can wait (run by the timer)."""
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current and task in _MAY_WAIT]
    if pending:
        await asyncio.wait(pending)


def _serve(loop: asyncio.AbstractEventLoop, started: Callable[[], object]) -> None:
    """Run ``loop`` on this thread until it is stopped (``started`` once it runs), then
    shut it down: the body of every loop thread."""
    asyncio.set_event_loop(loop)
    loop.call_soon(started)
    try:
        loop.run_forever()
    finally:
        _shut_down(loop)


def _shut_down(loop: asyncio.AbstractEventLoop) -> None:
    """Finish a stopped loop's async generators and executor, then close it (only
    close it when called inside another running loop, which it could not run in)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
    else:
        loop.close()


class blocking(Generic[P, R]):
    """A blocking method of a twin: its async original, run on the twin's loop.

    ``method`` is the async class's function (``AsyncSQLiteQueue.claim``); the twin's
    attribute takes its name, signature and docstring, so type checkers and ``help()``
    see the blocking call as it is, and a twin cannot drift from its original::

        class SQLiteQueue(StorageTwin[AsyncSQLiteQueue]):
            async_class = AsyncSQLiteQueue
            claim = blocking(AsyncSQLiteQueue.claim)
    """

    def __init__(self, method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]) -> None:
        functools.update_wrapper(cast(Any, self), method)
        self.name: str = method.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> blocking[P, R]: ...

    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: object, owner: type) -> Any:
        if obj is None:
            return self
        # A partial, not a closure kept on the object: no reference cycle through it.
        return functools.partial(self._call, obj)

    def _call(self, twin: Any, /, *args: Any, **kwargs: Any) -> Any:
        return twin._runner.run(getattr(twin._async, self.name)(*args, **kwargs))

    def __call__(self, twin: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Called on the class, as an unbound method: ``OmniQ.stats(oq)``."""
        return self._call(twin, *args, **kwargs)


class BlockingTwin(Generic[A]):
    """The blocking twin of an async class: the same constructor arguments, and each
    public coroutine as a :class:`blocking` method, run on a private loop
    (:class:`LoopThread`). Other public attributes are read through."""

    #: The async class this twin drives.
    async_class: ClassVar[type[Any]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async: A = self.async_class(*args, **kwargs)
        self._runner = LoopThread(
            f"omniq-{type(self).__name__}", async_name=self.async_class.__name__
        )

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._async, attr)

    def _stop(self) -> None:
        """Close the private loop (the next call opens a new one)."""
        self._runner.stop()


class StorageTwin(BlockingTwin[A]):
    """A blocking storage component: ``connect``/``close`` and a context manager; closing
    also closes the private loop."""

    def connect(self) -> None:
        """Open connections and create the schema if needed. Safe to call twice."""
        self._runner.run(self._async.connect())  # type: ignore[attr-defined]

    def close(self) -> None:
        """Release connections. Safe to call twice."""
        try:
            self._runner.run(self._async.close())  # type: ignore[attr-defined]
        finally:
            self._stop()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def twin_target(obj: object) -> Any | None:
    """The async instance a :class:`BlockingTwin` drives, or None
    when ``obj`` is no such twin (a client given ``SQLiteQueue(...)`` uses this)."""
    async_cls = getattr(type(obj), "async_class", None)
    inner = getattr(obj, "__dict__", {}).get("_async")
    if isinstance(async_cls, type) and isinstance(inner, async_cls):
        return inner
    return None


def twin_in_use(obj: Any) -> bool:
    """True while a twin's own loop is open (it was used and not closed): whatever it
    connected belongs to that loop."""
    loop = obj._runner._loop
    return loop is not None and not loop.is_closed()
