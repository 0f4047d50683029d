"""How benchmarks run: interleaved implementations, repeated, medians and ratios.

A *workload* measures one thing (say, consume -> validate -> ack of N messages on the
memory broker) with up to three implementations: the raw client's idiomatic fastest loop,
FastStream, and fastapi_stream. Each implementation is an async callable that gets N and
returns the seconds its measured part took. Implementations run in a rotating order, each
in a fresh event loop, ``repeat`` times; the figures that count are the ratios of medians
from the same run, because the machine is small and noisy.

N is chosen per implementation so that every measured run lasts at least ``min_seconds``:
unrecorded calibration runs from ``n`` messages up give the rate, and the recorded runs use
as many messages as that rate handles in ``min_seconds`` (with a margin), never fewer than
``n`` and never more than ``MAX_N``. A workload of slow steps (sequential request -> reply
round trips) may start lower than ``n``, from its ``least``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.footprint import Figure

Implementation = Callable[[int], Awaitable[float]]

RAW, FASTSTREAM, OURS = "raw", "faststream", "fastapi_stream"

#: The most messages one run may use, whatever the calibration says: runs stay bounded.
MAX_N = 3_000_000
#: Calibrated runs aim this much above ``min_seconds``, for runs a little slower than the first.
_MARGIN = 1.25


@dataclass
class Workload:
    broker: str
    name: str
    implementations: dict[str, Implementation]
    unit: str = "msg/s"
    #: Set for workloads whose size is fixed (no calibration): ``n`` is used as given.
    fixed_n: bool = False
    #: The least N of this workload's runs, and its first calibration run's, when lower
    #: than the run's ``n``: for workloads whose steps take milliseconds each.
    least: int | None = None
    rates: dict[str, list[float]] = field(default_factory=dict)
    #: Per implementation: the N of its recorded runs and the seconds each took.
    sizes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, implementation: str) -> float | None:
        values = self.rates.get(implementation)
        return statistics.median(values) if values else None

    def ratio(self, numerator: str, denominator: str) -> float | None:
        top, bottom = self.median(numerator), self.median(denominator)
        return top / bottom if top and bottom else None


def run(workloads: list[Workload], *, n: int, repeat: int, min_seconds: float) -> None:
    """Measure every workload; rates land in ``workload.rates``."""
    for workload in workloads:
        names = list(workload.implementations)
        least = min(n, workload.least or n)
        for name in names:
            workload.sizes[name] = (
                least if workload.fixed_n else _calibrate(workload, name, least, min_seconds)
            )
        for round_ in range(repeat):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                size = workload.sizes[name]
                seconds = _once(workload, name, size)
                workload.seconds.setdefault(name, []).append(seconds)
                workload.rates.setdefault(name, []).append(size / seconds)
        print(f"  {workload.broker:<14} {workload.name:<34} " + _summary(workload), flush=True)


def _once(workload: Workload, name: str, size: int) -> float:
    """Seconds one run of ``name`` with ``size`` messages takes, in an event loop of its
    own; a run that times out says which implementation and workload it was."""
    try:
        return asyncio.run(workload.implementations[name](size))
    except TimeoutError as exc:
        raise RuntimeError(
            f"{workload.broker} {workload.name}: {name} with N={size:,} timed out: {exc}"
        ) from exc


def _calibrate(workload: Workload, name: str, n: int, min_seconds: float) -> int:
    """The N with which ``name`` runs for at least ``min_seconds``.

    Unrecorded runs, growing from ``n`` until one takes a quarter of ``min_seconds`` (a
    small run's rate says little: warm-up, fixed costs), also warm the implementation up.
    """
    size = n
    while True:
        seconds = _once(workload, name, size)
        wanted = _round_up(size / seconds * min_seconds * _MARGIN)
        if seconds >= min_seconds / 4 or size >= MAX_N:
            return min(max(n, wanted), MAX_N)
        size = min(max(size * 2, wanted // 4), MAX_N)


def _round_up(value: float) -> int:
    """``value`` rounded up to three significant digits: a readable N."""
    step: int = 10 ** max(0, math.floor(math.log10(max(value, 1))) - 2)
    return math.ceil(value / step) * step


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


def report(
    workloads: list[Workload],
    *,
    n: int,
    repeat: int,
    min_seconds: float,
    out: Path,
    footprint: Sequence[Figure] = (),
) -> str:
    """Write ``out``.json and ``out``.md; return the markdown."""
    machine = f"{platform.machine()}, {_cpus()} cores, Python {platform.python_version()}"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = _versions()
    lines = [
        f"Measured {when} on {machine}; median of {repeat} interleaved runs per figure, "
        f"each run at least {min_seconds:g} s long (N per implementation from a calibration "
        f"run, at least {n:,}{_fewer(workloads, n)}; the JSON file has each run's N and "
        "seconds)"
        f"{_short(workloads, min_seconds)}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        "| broker | workload | raw | FastStream | fastapi_stream | ours/FastStream | ours/raw |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for w in workloads:
        lines.append(
            f"| {w.broker} | {_title(w)} | {_fmt(w.median(RAW))} | {_fmt(w.median(FASTSTREAM))} "
            f"| {_fmt(w.median(OURS))} | {_fmt(w.ratio(OURS, FASTSTREAM), True)} "
            f"| {_fmt(w.ratio(OURS, RAW), True)} |"
        )
        rows.append(
            {
                "broker": w.broker,
                "workload": w.name,
                "unit": w.unit,
                "n": w.sizes,
                "seconds": w.seconds,
                "rates": w.rates,
            }
        )
    if footprint:
        lines += [
            "",
            "Footprint (lower is better; each figure the median of fresh interpreters):",
            "",
            "| figure | unit | raw | FastStream | fastapi_stream | ours/FastStream | ours/raw |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for f in footprint:
            lines.append(
                f"| {f.name} | {f.unit} | {_fmt(f.median(RAW))} | {_fmt(f.median(FASTSTREAM))} "
                f"| {_fmt(f.median(OURS))} | {_fmt(f.ratio(OURS, FASTSTREAM), True)} "
                f"| {_fmt(f.ratio(OURS, RAW), True)} |"
            )
    markdown = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown)
    document = {
        "date": when,
        "machine": machine,
        "min_n": n,
        "min_seconds": min_seconds,
        "repeat": repeat,
        "versions": versions,
        "results": rows,
        "footprint": [{"figure": f.name, "unit": f.unit, "values": f.values} for f in footprint],
    }
    out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    return markdown


def _title(workload: Workload) -> str:
    """The workload's name, with its unit when it is not the table's msg/s."""
    return workload.name if workload.unit == "msg/s" else f"{workload.name} ({workload.unit})"


def _fewer(workloads: list[Workload], n: int) -> str:
    """Where some workloads start lower than ``n``: the least of them."""
    lower = [w.least for w in workloads if w.least is not None and w.least < n]
    return f" ({min(lower):,} or more for the slowest round trips)" if lower else ""


def _short(workloads: list[Workload], min_seconds: float) -> str:
    """A warning for runs that came out shorter than asked (a calibration run was fast)."""
    short = sum(
        s < min_seconds
        for w in workloads
        if not w.fixed_n
        for runs in w.seconds.values()
        for s in runs
    )
    return f" ({short} run(s) came out shorter than {min_seconds:g} s)" if short else ""


def _cpus() -> int | None:
    return os.cpu_count()
