"""Helpers shared by the benchmark scripts: timing, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from contextlib import contextmanager
from pathlib import Path

from matdisco.provenance import package_versions

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its (finished) children, MB."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self": round(self_kb / 1024, 1), "children_max": round(child_kb / 1024, 1)}


@contextmanager
def timer(store: dict, key: str):
    """Record the wall time of a block in ``store[key]`` (seconds)."""
    t0 = time.perf_counter()
    yield
    store[key] = round(time.perf_counter() - t0, 3)


def write(name: str, result: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with machine facts added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "packages": package_versions(),
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
