"""How benchmarks run: interleaved implementations, repeated, medians and ratios.

A *workload* measures one thing (say, consume -> validate -> ack of N messages on the
memory broker) with up to three implementations: the raw client's idiomatic fastest loop,
FastStream, and fastapi_stream. Each implementation is an async callable that gets N and
returns the seconds its measured part took. Implementations run in a rotating order, each
in a fresh event loop, ``repeat`` times; the figures that count are the ratios of medians
from the same run, because the machine is small and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

Implementation = Callable[[int], Awaitable[float]]

RAW, FASTSTREAM, OURS = "raw", "faststream", "fastapi_stream"


@dataclass
class Workload:
    broker: str
    name: str
    implementations: dict[str, Implementation]
    unit: str = "msg/s"
    rates: dict[str, list[float]] = field(default_factory=dict)

    def median(self, implementation: str) -> float | None:
        values = self.rates.get(implementation)
        return statistics.median(values) if values else None

    def ratio(self, numerator: str, denominator: str) -> float | None:
        top, bottom = self.median(numerator), self.median(denominator)
        return top / bottom if top and bottom else None


def run(workloads: list[Workload], *, n: int, repeat: int) -> None:
    """Measure every workload; rates land in ``workload.rates``."""
    for workload in workloads:
        names = list(workload.implementations)
        for round_ in range(repeat):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                seconds = asyncio.run(workload.implementations[name](n))
                workload.rates.setdefault(name, []).append(n / seconds)
        print(f"  {workload.broker:<14} {workload.name:<34} " + _summary(workload), flush=True)


def _summary(workload: Workload) -> str:
    return "  ".join(f"{name} {_fmt(workload.median(name))}" for name in workload.implementations)


def _fmt(value: float | None, ratio: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if ratio else f"{value:,.0f}"


def _versions() -> dict[str, str]:
    found = {}
    for package in (
        "fastapi-stream",
        "faststream",
        "fastapi",
        "pydantic",
        "aiokafka",
        "aio-pika",
        "nats-py",
        "redis",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def report(workloads: list[Workload], *, n: int, repeat: int, out: Path) -> str:
    """Write ``out``.json and ``out``.md; return the markdown."""
    machine = f"{platform.machine()}, {_cpus()} cores, Python {platform.python_version()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = _versions()
    lines = [
        f"Measured {when} on {machine}; N={n:,} per run, median of {repeat} interleaved runs.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        "| broker | workload | raw | FastStream | fastapi_stream | ours/FastStream | ours/raw |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for w in workloads:
        lines.append(
            f"| {w.broker} | {w.name} | {_fmt(w.median(RAW))} | {_fmt(w.median(FASTSTREAM))} "
            f"| {_fmt(w.median(OURS))} | {_fmt(w.ratio(OURS, FASTSTREAM), True)} "
            f"| {_fmt(w.ratio(OURS, RAW), True)} |"
        )
        rows.append({"broker": w.broker, "workload": w.name, "unit": w.unit, "rates": w.rates})
    markdown = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown)
    document = {
        "date": when,
        "machine": machine,
        "n": n,
        "repeat": repeat,
        "versions": versions,
        "results": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    return markdown


def _cpus() -> int | None:
    return os.cpu_count()
