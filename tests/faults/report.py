"""The figures table: what each fault case measured, printed after the run and written
into ``docs/reliability.md`` by ``make faults``."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.faults.harness import Outcome

__all__ = ["RESULTS", "record", "table", "write_docs"]

RESULTS: list[Outcome] = []
START = "<!-- faults-table:start -->"
END = "<!-- faults-table:end -->"


def record(result: Outcome) -> Outcome:
    RESULTS.append(result)
    return result


def _recovery(result: Outcome) -> str:
    if result.recovery is None:
        return "never" if result.recovery_limit is not None else "-"
    limit = f" (≤ {result.recovery_limit:g})" if result.recovery_limit is not None else ""
    return f"{result.recovery:.1f}{limit}"


def table(results: list[Outcome] | None = None) -> str:
    rows = [
        "| case | transport | confirmed | lost | duplicates (window) | recovery s (limit) | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results if results is not None else RESULTS:
        verdict = "FAIL: " + "; ".join(result.problems()) if result.problems() else "ok"
        if result.note:
            verdict = f"{verdict}; {result.note}"
        rows.append(
            f"| {result.case} | {result.kind} | {result.confirmed} | {result.lost} "
            f"| {result.duplicates} ({result.window}) | {_recovery(result)} | {verdict} |"
        )
    return "\n".join(rows)


def write_docs(path: Path, results: list[Outcome] | None = None) -> None:
    """Replace the table between the markers in ``path`` with this run's."""
    text = path.read_text()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = f"{START}\n\nMeasured by `make faults` on {stamp}.\n\n{table(results)}\n\n{END}"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {START} ... {END} section")
    path.write_text(pattern.sub(lambda _: body, text))
