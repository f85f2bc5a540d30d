"""``python -m benchmarks``: OmniQ and its peers, side by side, in one run.

Examples::

    python -m benchmarks --backend all --workload all           # the documented run
    python -m benchmarks --backend redis --workload drain --runs 1 --quick
    python -m benchmarks --peers none                           # OmniQ only
    python -m benchmarks --peers none --reuse-peers benchmarks/results/peers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from benchmarks import harness, report
from benchmarks.adapters import PEER_LIBRARIES, REGISTRY
from benchmarks.floors import latency_floors
from benchmarks.workloads import calibrate


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int, label: str) -> None:
        """Draw the bar for ``done`` of ``total`` steps, now running ``label``."""
        elapsed = time.monotonic() - self.started
        frac = done / total if total else 1.0
        filled = int(self.width * frac)
        eta = f" eta {_clock(elapsed / done * (total - done))}" if 0 < done < total else ""
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"{_clock(elapsed)}{eta}  {label}"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if done >= total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _labels(peers: str, omniq: bool, events_off_row: bool) -> list[str]:
    if peers == "all":
        chosen = [e.label for e in REGISTRY.values() if e.library != "omniq" and not e.variant]
    elif peers == "none":
        chosen = []
    else:
        chosen = []
        for name in (p.strip() for p in peers.split(",") if p.strip()):
            if name in REGISTRY and REGISTRY[name].library != "omniq":
                chosen.append(name)
            elif name in PEER_LIBRARIES:
                chosen += [
                    e.label for e in REGISTRY.values() if e.library == name and not e.variant
                ]
            else:
                known = sorted(set(PEER_LIBRARIES) | {k for k in REGISTRY if k[:5] != "omniq"})
                raise SystemExit(f"--peers: unknown peer {name!r}; known: {', '.join(known)}")
    head = (["omniq"] + (["omniq-noevents"] if events_off_row else [])) if omniq else []
    return head + list(dict.fromkeys(chosen))


def _choice(value: str, allowed: Sequence[str], option: str) -> list[str]:
    if value == "all":
        return list(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    for item in items:
        if item not in allowed:
            raise SystemExit(
                f"{option}: unknown value {item!r}; choose from all, {', '.join(allowed)}"
            )
    return items


#: Where a full run (and --report-from) writes the published report by default.
_DOCS = "docs/benchmarks.md"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the plan, write the report."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--backend", default="all", help="redis, sqlite, file, postgres, nats, a comma list or all"
    )
    parser.add_argument(
        "--workload",
        default="all",
        help="enqueue, bulk, drain, latency, sleep, memory, sync, ratelimit, enqueue-concurrent, "
        "backlog, a comma list or all",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        metavar="N",
        help=f"tasks waiting in the backlog workload (default {harness.SIZES['backlog']:,}; "
        f"--quick {harness.QUICK_SIZES['backlog']:,})",
    )
    parser.add_argument("--runs", type=int, default=3, help="repetitions per cell (default 3)")
    parser.add_argument(
        "--peers", default="all", help="all, none, or a comma list (arq,saq,rq,taskiq,...)"
    )
    parser.add_argument("--no-omniq", action="store_true", help="run the peers only")
    parser.add_argument(
        "--no-events-row",
        action="store_true",
        help="skip the extra OmniQ row with event_storage=False",
    )
    parser.add_argument("--quick", action="store_true", help="small N smoke mode (development)")
    parser.add_argument("--out", default="benchmarks/results", help="results directory")
    parser.add_argument(
        "--reuse-peers",
        metavar="FILE",
        help="take peer figures from a stored results JSON (same machine) instead of running them",
    )
    parser.add_argument(
        "--docs",
        default=None,
        help="write the full report here too ('' to skip); the chart goes beside it "
        f"(default: {_DOCS} for a full run of every backend, workload and peer, "
        "else nowhere, so a partial run never replaces the published table)",
    )
    parser.add_argument(
        "--report-from",
        metavar="FILE",
        help="run nothing: rewrite the report from a stored results JSON (into --out; into "
        "docs only with --docs FILE)",
    )
    args = parser.parse_args(argv)
    if args.report_from:
        source = Path(args.report_from)
        stored = json.loads(source.read_text())
        # Rewrite that run's own report set (results-<stamp>.*) rather than add a copy.
        stamp = source.stem.removeprefix("results-")
        if stamp == source.stem or source.parent.resolve() != Path(args.out).resolve():
            stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = report.write(
            stored["records"],
            stored["meta"],
            out=Path(args.out),
            stamp=stamp,
            workloads=stored.get("workloads", list(harness.WORKLOADS)),
            # Only where asked: a stored partial or quick run must not replace the
            # published table by default.
            docs=Path(args.docs) if args.docs else None,
        )
        for path in paths:
            print(path)
        return 0

    backends = _choice(args.backend, harness.BACKENDS, "--backend")
    workloads = _choice(args.workload, harness.WORKLOADS, "--workload")
    labels = _labels(args.peers, not args.no_omniq, not args.no_events_row)
    reused: list[dict[str, Any]] = []
    reused_meta: dict[str, Any] | None = None
    if args.reuse_peers:
        stored = json.loads(Path(args.reuse_peers).read_text())
        wanted = {"drain" if w == "memory" else w for w in workloads}
        reused = [
            r
            for r in stored["records"]
            if r["library"] != "omniq" and r["backend"] in backends and r["workload"] in wanted
        ]
        reused_meta = stored.get("meta")
        # Reused peers replace the run of those peers; their labels still appear in the table.
        labels = [lb for lb in labels if REGISTRY[lb].library == "omniq"]
    if args.docs is None:
        full = (
            backends == list(harness.BACKENDS)
            and workloads == list(harness.WORKLOADS)
            and args.peers == "all"
            and not (args.quick or args.no_omniq or args.no_events_row or args.reuse_peers)
        )
        args.docs = _DOCS if full else ""
    cells = harness.plan(backends, workloads, labels)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    partial = out / f"partial-{stamp}.json"
    done: list[dict[str, Any]] = []

    def keep(record: dict[str, Any]) -> None:
        done.append(record)
        partial.write_text(json.dumps({"records": reused + done}, indent=1))
        if not record.get("ok"):
            sys.stderr.write(
                f"\n  ! {record['label']}/{record['backend']}/{record['workload']} "
                f"run {record['run']}: {record.get('error')}\n"
            )

    sys.stderr.write(
        f"{len(cells)} cells x {args.runs} runs; backends {','.join(backends)}; "
        f"workloads {','.join(workloads)}; rows {', '.join(labels) or '(reused only)'}\n"
    )
    calibration = calibrate(harness.WORK_ROOT / "calibrate", postgres="postgres" in backends)
    if "latency" in workloads:
        calibration |= latency_floors(postgres="postgres" in backends)
    sizes = {"backlog": args.backlog} if args.backlog else None
    records = harness.run_plan(cells, args.runs, args.quick, Progress(), keep, sizes=sizes)
    meta = report.machine(
        quick=args.quick, runs=args.runs, reused_from=args.reuse_peers, calibration=calibration
    )
    if reused_meta is not None:
        meta["reused_meta"] = reused_meta
    paths = report.write(
        reused + records,
        meta,
        out=out,
        stamp=stamp,
        workloads=workloads,
        docs=Path(args.docs) if args.docs else None,
    )
    partial.unlink(missing_ok=True)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
