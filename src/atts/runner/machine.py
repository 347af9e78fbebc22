"""Which machine, and which boot of it, ran a run: what a wall-time ratio needs to be honest.

A speedup divides two wall times, and on shared machines the same command can take 20% longer
on one day than on the next (BENCHMARKS.md, the two repeats of section 0.3).  So each session
of a run records the boot it ran on (Linux's ``/proc/sys/kernel/random/boot_id``, new at every
boot of every machine), and a comparison of two runs can tell whether they ran on one machine
in one boot, on two, or whether that was never recorded (runs from before 2026-12-03).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atts.engines.compute import machine_cores

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), so timings name their hardware."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def boot_id(path: Path = BOOT_ID) -> str | None:
    """This boot of this machine (None where the system does not say, as on macOS)."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def machine_block() -> dict[str, Any]:
    """The manifest's ``machine``: the hardware the run's timings belong to."""
    return {"platform": platform.platform(), "processor": platform.machine(),
            "cpu": cpu_model(), "cores": machine_cores(), "boot_id": boot_id()}


def session_record(started_at: float, wall_seconds: float, written: int) -> dict[str, Any]:
    """One entry of the manifest's ``sessions`` list, appended when a session ends."""
    return {"boot_id": boot_id(), "cpu": cpu_model(), "started_at": started_at,
            "finished_at": time.time(), "wall_seconds": wall_seconds, "written": written}


def boots(manifest: Mapping[str, Any]) -> frozenset[str] | None:
    """The boots that ran the run's sessions; None when a session did not record its boot."""
    sessions = manifest.get("sessions") or []
    found = {s.get("boot_id") for s in sessions}
    if not sessions or None in found:
        return None
    return frozenset(str(b) for b in found)


def same_boot(run: Mapping[str, Any], other: Mapping[str, Any]) -> bool | None:
    """Whether two runs (their manifests) ran every session on one boot of one machine: True,
    False, or None when either did not record it (so nobody can tell)."""
    return one_boot(boots(run), boots(other))


def one_boot(mine: frozenset[str] | None, theirs: frozenset[str] | None) -> bool | None:
    """``same_boot`` on the runs' ``boots``."""
    if mine is None or theirs is None:
        return None
    return len(mine) == 1 and mine == theirs
