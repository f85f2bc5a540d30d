"""``python -m tests.chaos --backend redis --seconds 60 [--seed N]``: one chaos round."""

from __future__ import annotations

import argparse
import random
import sys

from tests.chaos.runner import Options, run
from tests.chaos.servers import BACKENDS


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--backend", required=True, choices=sorted(BACKENDS))
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the fault phase")
    parser.add_argument("--seed", type=int, help="replay a run (default: a fresh one, printed)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes at a time")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per worker")
    parser.add_argument(
        "--rate", type=float, help="load units submitted a second (default: the backend's)"
    )
    parser.add_argument("--settle", type=float, default=180.0, help="longest wait to settle, s")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**9)
    options = Options(**vars(args))
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
