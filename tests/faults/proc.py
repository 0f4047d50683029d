"""A process's resident memory, open file descriptors and CPU time, from ``/proc``."""

from __future__ import annotations

import os

__all__ = ["process_stats"]


def process_stats(pid: int) -> dict[str, float]:
    """``rss`` (bytes), ``fds`` and ``cpu`` (seconds, user + system) of process ``pid``."""
    with open(f"/proc/{pid}/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return {
        "rss": rss,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"),
    }
