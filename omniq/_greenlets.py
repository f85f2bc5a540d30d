"""What the blocking client needs in a process gevent monkey-patched: a real OS thread
for its event loop, and a wait for it that lets the other greenlets run.

After ``gevent.monkey.patch_all()`` ``threading.Thread`` starts a greenlet, not a thread
(even the class ``monkey.get_original("threading", "Thread")`` returns: its ``start``
goes through the patched ``_thread``). A loop run there runs in the caller's OS thread,
where asyncio sees it running from every greenlet, and a caller blocked on a real lock
stops the hub, so the loop greenlet never runs. So the loop gets a thread of
``_thread``'s original ``start_new_thread`` (:class:`NativeThread`), and a greenlet
waits for a call through its hub (:class:`GreenletWake`), woken from that thread with
``loop.run_callback_threadsafe``, gevent's documented way in from a foreign thread.

gevent is an optional extra: nothing here imports it unless the process has imported
``gevent.monkey`` already (:func:`threading_patched`).
"""

from __future__ import annotations

import _thread
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["GreenletWake", "NativeThread", "native_get_ident", "native_lock", "threading_patched"]


def threading_patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process (then a blocked
    OS thread stops every greenlet). Never imports gevent."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _original(name: str) -> Any:
    # Called only when threading_patched(): gevent.monkey is imported.
    from gevent import monkey

    return monkey.get_original("_thread", name)


def native_lock() -> _thread.LockType:
    """A lock of the OS, not gevent's, even when ``_thread`` is patched."""
    lock: _thread.LockType = _original("allocate_lock")()
    return lock


def native_get_ident() -> Callable[[], int]:
    """``_thread.get_ident`` of the OS thread (the patched one names the greenlet)."""
    get_ident: Callable[[], int] = _original("get_ident")
    return get_ident


class NativeThread:
    """A daemon OS thread in a monkey-patched process: the few members of
    ``threading.Thread`` a :class:`~omniq._sync.LoopThread` uses.

    Started with the original ``_thread.start_new_thread``; Python does not wait for it
    at exit (as for a daemon thread).
    """

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.name = name
        self._target = target
        self.ident: int | None = None
        self._get_ident = native_get_ident()
        # The thread's own greenlet (the one running the target), once it runs.
        self._greenlet: object = None
        # Held from start() until the target returns: join() waits for it.
        self._running = native_lock()

    def start(self) -> None:
        """Start the thread."""
        self._running.acquire()
        try:
            _original("start_new_thread")(self._main, ())
        except BaseException:
            self._running.release()
            raise

    def _main(self) -> None:
        from gevent import getcurrent

        self.ident = self._get_ident()
        self._greenlet = getcurrent()
        try:
            self._target()
        finally:
            self._running.release()

    def is_alive(self) -> bool:
        """True from :meth:`start` until the target returned."""
        return self._running.locked()

    def is_current(self) -> bool:
        """True when called from the greenlet running the target (the other greenlets
        of this thread can wait for it: its hub runs them while the target waits)."""
        from gevent import getcurrent

        return getcurrent() is self._greenlet

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the target to return. Blocks the OS thread
        (its hub too): only the loop's own shutdown is waited for this way. Returns at
        once in this thread itself (a greenlet of it cannot wait for the others)."""
        if self.ident == self._get_ident():
            return
        if self._running.acquire(timeout=timeout):
            self._running.release()


def _keep_hub_waiting() -> None:
    """The callback of the watcher that keeps a hub waiting (it is never sent)."""


class GreenletWake:
    """The wake-up of one greenlet waiting for a call its loop thread runs: the
    ``acquire``/``release`` pair of the lock it replaces, for a greenlet.

    Made by the waiting greenlet. :meth:`release` (from any thread, once) has that
    greenlet's hub switch back to it: ``loop.run_callback_threadsafe`` schedules the
    switch and wakes the hub. :meth:`acquire` parks the greenlet in its hub meanwhile,
    so the other greenlets run; it holds a referenced watcher for that time, without
    which a hub with nothing else to do would end the wait with ``LoopExit`` (the
    thread-safe callbacks' own watcher does not keep a hub running).
    """

    __slots__ = ("_hub", "_waiter")

    def __init__(self) -> None:
        from gevent.hub import Waiter, get_hub

        self._hub = get_hub()
        self._waiter = Waiter(self._hub)

    def release(self) -> None:
        """Wake the greenlet (from any thread). Safe after it stopped waiting: a switch
        that finds no greenlet waiting only keeps the value."""
        loop = self._hub.loop
        if loop is not None:  # None once the hub was destroyed: nobody waits there
            loop.run_callback_threadsafe(self._waiter.switch, None)

    def acquire(self) -> bool:
        """Wait until :meth:`release` (from the greenlet that made this); raises what
        interrupts the wait (``gevent.Timeout``, ``GreenletExit``, KeyboardInterrupt)."""
        keep_waiting = self._hub.loop.async_()
        keep_waiting.start(_keep_hub_waiting)
        try:
            self._waiter.get()
        finally:
            keep_waiting.stop()
            keep_waiting.close()
        return True
