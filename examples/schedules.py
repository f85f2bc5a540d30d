"""Recurring work: a cron schedule and an interval schedule (blocking API).

Schedules live in the store, not in a process: ``schedule(..., schedule_id=...)``
creates one or, with an id that exists, updates it (so running this file again changes
nothing twice), and *running workers* fire them, one task per tick however many workers
run. There is no separate beat process.

Run it (Ctrl-C stops the worker; the schedules stay in the store)::

    python examples/schedules.py                          # heartbeat every 10 s
    HEARTBEAT_INTERVAL=1s python examples/schedules.py    # every second

In production you would create the schedules once (a deploy step, or at start-up as
here) and run the workers with the command line, which fires them too::

    omniq worker --app schedules:oq       # from examples/
    omniq schedules --app schedules:oq    # what is scheduled, and when it runs next

The store is the embedded default (SQLite under ``./.omniq``, or ``OMNIQ_BASE_DIR``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from omniq import OmniQ

oq = OmniQ()


def heartbeat() -> str:
    """The interval task: say it ran (``flush`` so a pipe sees each line at once)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    print(f"heartbeat at {now}", flush=True)
    return now


def weekday_report(team: str) -> str:
    """The cron task: a report for ``team`` at 07:00 Paris time, Monday to Friday."""
    print(f"report for {team}", flush=True)
    return f"report for {team} sent"


def install() -> None:
    """Create or update both schedules, and print when each fires next."""
    oq.schedule(
        weekday_report,
        ("ops",),
        cron="0 7 * * mon-fri",
        timezone="Europe/Paris",
        schedule_id="weekday-report",
    )
    # An interval takes seconds, a timedelta or a string ("250ms", "10s", "5m").
    oq.schedule(
        heartbeat,
        interval=os.environ.get("HEARTBEAT_INTERVAL", "10s"),
        schedule_id="heartbeat",
    )
    for schedule in oq.list_schedules():
        assert schedule.next_run_at is not None
        every = schedule.cron or f"every {schedule.interval:g} s"
        print(f"schedule {schedule.id}: {every}, next at {schedule.next_run_at.isoformat()}")


def main() -> None:
    """Install the schedules, then run a worker until Ctrl-C."""
    with oq:
        install()
        print("worker running; Ctrl-C stops it", flush=True)
        try:
            # Not run(burst=True): a burst run only drains what is due and never fires
            # schedules; a running worker does.
            oq.worker(concurrency=2).run()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
