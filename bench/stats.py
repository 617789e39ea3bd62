"""Timing and output helpers: wall-clock measurements, percentiles, progress lines."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays free for whatever the caller pipes."""
    print(f"[bench {time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send tally's per-award log lines and metric dumps to /dev/null while the bench runs.

    They are still formatted and written, as in Lambda (that cost is part of the sweep), but
    100k JSON lines would bury the bench's own output, which goes to stderr.
    """
    import tally.observability  # noqa: F401 - creates the "tally" logger and its handler

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        handlers = [
            h for h in logging.getLogger("tally").handlers if isinstance(h, logging.StreamHandler)
        ]
        previous = [h.setStream(sink) for h in handlers]  # the logger holds its own stream
        try:
            yield
        finally:
            for handler, stream in zip(handlers, previous, strict=True):
                if stream is not None:
                    handler.setStream(stream)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, like numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """Latency percentiles of one measurement, in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, seconds: list[float]) -> Summary:
        ms = [s * 1000 for s in seconds]
        return cls(
            n=len(ms),
            p50=percentile(ms, 50),
            p95=percentile(ms, 95),
            p99=percentile(ms, 99),
            mean=sum(ms) / len(ms) if ms else float("nan"),
            max=max(ms) if ms else float("nan"),
        )


def time_calls(call: Callable[[int], Any], repetitions: int, warmup: int = 10) -> list[float]:
    """Wall time of each call(i), in seconds, after a few untimed calls to warm the caches.

    The index lets a caller vary the input (e.g. a different user per call).
    """
    for i in range(warmup):
        call(i)
    timings = []
    for i in range(repetitions):
        started = time.perf_counter()
        call(i)
        timings.append(time.perf_counter() - started)
    return timings
