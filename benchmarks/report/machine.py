"""What a run ran on: CPU, memory, OS, interpreter and server versions, raw limits."""

from __future__ import annotations

import os
import platform
import sqlite3
import time
from pathlib import Path
from typing import Any

import redis

from benchmarks.adapters.base import REDIS_URL


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine(
    *,
    quick: bool,
    runs: int,
    reused_from: str | None,
    calibration: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What this run ran on: CPU, memory, OS, interpreter and server versions, raw limits."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        (
            int(ln.split()[1])
            for ln in _read("/proc/meminfo").splitlines()
            if ln.startswith("MemTotal")
        ),
        0,
    )
    os_name = next(
        (
            ln.split("=", 1)[1].strip().strip('"')
            for ln in _read("/etc/os-release").splitlines()
            if ln.startswith("PRETTY_NAME=")
        ),
        platform.system(),
    )
    try:
        client = redis.Redis.from_url(REDIS_URL)
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        redis_version = str(info["redis_version"])
        client.close()
    except redis.RedisError:
        redis_version = "unreachable"
    from benchmarks import pg

    postgres_version = pg.server_version()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "postgres": postgres_version,
        "sqlite": sqlite3.sqlite_version,
        "quick": quick,
        "runs": runs,
        "reused_peers_from": reused_from,
        "calibration": calibration or {},
        "load_average_1m_at_end": os.getloadavg()[0],
    }
