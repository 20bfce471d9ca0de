"""Was a wall-clock figure a timing? How much of the machine other processes used while it ran.

A training minute measured on a shared machine is not a timing: the load average cannot tell (our own
run raises it), but the kernel's busy time minus our own CPU time can. ``CpuMeter`` records both around
a piece of work; ``foreign_cpu_share`` is the share of all cores other processes kept busy meanwhile.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuMeter", "is_timing"]

FOREIGN_LIMIT = 0.05
"""A run is a timing when other processes used at most this share of the cores and it had every core."""


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot (``/proc/stat``); None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class CpuMeter:
    """Wall time, own CPU time and the machine's busy time around a ``with`` block.

    >>> with CpuMeter() as meter:
    ...     _ = sum(range(10))
    >>> sorted(meter.record())[:3]
    ['cpus', 'foreign_cpu_share', 'load_average_1min_at_start']
    """

    threads: int | None = None
    """Compute threads the work ran on (``torch.get_num_threads()``); recorded, and compared to the cores."""

    def __enter__(self) -> CpuMeter:
        self._load = os.getloadavg()[0]
        self._t0 = time.perf_counter()
        self._own0 = _own_cpu_seconds()
        self._busy0 = _machine_busy_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.own_cpu_s = _own_cpu_seconds() - self._own0
        busy1 = _machine_busy_seconds()
        self.machine_busy_s = None if busy1 is None or self._busy0 is None else busy1 - self._busy0

    def record(self) -> dict[str, Any]:
        """What a result file keeps: cores, threads, shares and whether it counts as a timing."""
        cpus = os.cpu_count() or 1
        foreign = None
        if self.machine_busy_s is not None and self.wall_s > 0:
            foreign = max(0.0, self.machine_busy_s - self.own_cpu_s) / (self.wall_s * cpus)
        rec: dict[str, Any] = {
            "cpus": cpus,
            "foreign_cpu_share": None if foreign is None else round(foreign, 4),
            "load_average_1min_at_start": round(self._load, 2),
            "own_cpu_share": round(self.own_cpu_s / (self.wall_s * cpus), 4) if self.wall_s > 0 else None,
            "threads": self.threads,
            "wall_s": round(self.wall_s, 2),
        }
        rec["timed"] = is_timing(rec)
        return rec


def is_timing(rec: dict[str, Any] | None) -> bool:
    """True when a ``CpuMeter.record`` shows every core and at most ``FOREIGN_LIMIT`` foreign use.

    A record without a measured foreign share (an older result, another OS) is not a timing unless it
    says so itself (``"timed": true``, e.g. annotated from a session log).
    """
    if not rec:
        return False
    foreign = rec.get("foreign_cpu_share")
    if foreign is None:
        return bool(rec.get("timed", False))
    threads = rec.get("threads")
    return foreign <= FOREIGN_LIMIT and (threads is None or threads >= rec.get("cpus", 1))
