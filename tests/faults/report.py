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


def _verdict(group: list[Outcome]) -> str:
    failed = []
    for result in group:
        if result.lost:
            failed.append(f"lost {result.lost}")
        if result.duplicates > result.window:
            failed.append(f"{result.duplicates} duplicates > {result.window}")
        limit = result.recovery_limit
        if limit is not None and (result.recovery is None or result.recovery > limit):
            failed.append(f"recovery {result.recovery} s > {limit:g} s")
        noticed = result.detection_limit
        if noticed is not None and (result.detection is None or result.detection > noticed):
            failed.append(f"noticed after {result.detection} s > {noticed:g} s")
    verdict = "FAIL: " + ", ".join(failed) if failed else "ok"
    notes = {result.note for result in group}
    if len(notes) == 1 and (note := notes.pop()):
        verdict = f"{verdict}; {note}"
    return verdict


def table(results: list[Outcome] | None = None) -> str:
    """One row per case and transport; repeated runs are summed (lost) or maxed."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for result in results if results is not None else RESULTS:
        groups.setdefault((result.case, result.kind), []).append(result)
    rows = [
        "| case | transport | runs | confirmed | lost | duplicates, max (window) "
        "| recovery s, max (limit) | |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for (case, kind), group in groups.items():
        recoveries = [r.recovery for r in group]
        recovery = None if None in recoveries else max(r for r in recoveries if r is not None)
        limit = group[0].recovery_limit
        shown = "never" if recovery is None and limit is not None else "-"
        if recovery is not None:
            shown = f"{recovery:.1f}" + (f" (≤ {limit:g})" if limit is not None else "")
        worst = max(group, key=lambda r: r.duplicates)
        measured = all(r.lost_measured for r in group)
        lost = str(sum(r.lost for r in group)) if measured else "-"
        rows.append(
            f"| {case} | {kind} | {len(group)} | {sum(r.confirmed for r in group)} "
            f"| {lost} | {worst.duplicates} ({worst.window}) "
            f"| {shown} | {_verdict(group)} |"
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
