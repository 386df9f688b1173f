"""Prometheus text exposition for processes that are API clients (the controller manager).

Only what the controller framework reports: counters, gauges read at scrape time, and
histograms with fixed buckets.  Small on purpose: a scrape renders a few dozen lines.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

#: seconds; client-go's workqueue buckets run from 1 µs to 10 s in powers of ten
BUCKETS = (1e-5, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> Iterable[str]:
        running = 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            yield f'{name}_bucket{{{labels},le="{bound:g}"}} {running}'
        yield f'{name}_bucket{{{labels},le="+Inf"}} {self.count}'
        yield f"{name}_sum{{{labels}}} {self.sum:.6f}"
        yield f"{name}_count{{{labels}}} {self.count}"


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Registry:
    """Families of samples, each rendered by a callable at scrape time."""

    def __init__(self) -> None:
        self._families: list[tuple[str, str, str, Callable[[], Iterable[str]]]] = []

    def family(self, name: str, kind: str, help_: str, render: Callable[[], Iterable[str]]) -> None:
        self._families.append((name, kind, help_, render))

    def render(self) -> str:
        out: list[str] = []
        for name, kind, help_, render in self._families:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(render())
        return "\n".join(out) + "\n"
