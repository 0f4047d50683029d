"""The fault suite's collection rule and its figures table.

Cases marked ``faults_full`` run only under ``FAULTS_FULL=1`` (``make faults``); the
others are the CI subset that every pytest run includes. After a run that measured
anything the table is printed; ``FAULTS_DOCS=<path>`` also writes it into that page.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults import report
from tests.faults.kinds import KINDS
from tests.faults.rig import Rig

FULL = os.environ.get("FAULTS_FULL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    dropped = [item for item in items if item.get_closest_marker("faults_full")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("faults_full")]


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """The case's rig for the transport it is parametrized with (``indirect``)."""
    rig = Rig(KINDS[request.param])
    try:
        yield rig
    finally:
        rig.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not report.RESULTS:
        return
    terminalreporter.section("fault suite: lost, duplicates, recovery")
    terminalreporter.write_line(report.table())
    docs = os.environ.get("FAULTS_DOCS")
    if docs:
        report.write_docs(Path(docs))
        terminalreporter.write_line(f"table written to {docs}")
