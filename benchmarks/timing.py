"""Timing shared by the benchmarks."""

import time
from collections.abc import Callable


def median_seconds(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median time per call of each function, timed round-robin so that any load on the machine falls on every
    implementation alike (a shared 2-core machine is noisy)."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}
