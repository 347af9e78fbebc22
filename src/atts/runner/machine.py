"""Which machine, and which boot of it, ran a run: what a wall-time ratio needs to be honest.

A speedup divides two wall times, and two runs on different machines, or on one machine
rebooted in between, measure different hardware: a shared cloud machine is not the same
machine after a restart.  So each session of a run records the boot it ran on (Linux's
``/proc/sys/kernel/random/boot_id``, new at every boot of every machine), and a comparison of
two runs can tell whether they ran on one boot, on two, or whether that is unknown (runs made
before ``BOOTS_RECORDED_SINCE``, or on a system without a boot id such as macOS).  One boot is
necessary, not sufficient: the same command took 2484 s one afternoon and 2944 s that evening
on these shared cores (BENCHMARKS.md section 0.3), so the benchmarks also run the two sides
of a ratio in one session and record the load.

On a shared virtual machine the host also takes CPU time from the guest (``steal`` in
``/proc/stat``): on 2026-12-03 it took a third of these cores' time during a benchmark, and
the same target-only command ran twice as long as two days before.  So each session records
how the machine's CPU time was shared while it ran (``cpu_share``: busy, idle, stolen), and a
comparison can say when the two sides of a ratio were slowed by the host unequally.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atts.engines.compute import machine_cores

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PROC_STAT = Path("/proc/stat")
# The aggregate "cpu" line of /proc/stat in order (proc(5)); guest time is already in user.
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
BOOTS_RECORDED_SINCE = "2026-12-03"  # runs made before it hold no boot ids
UNKNOWN_BOOT = (f"did not record the boot it ran on (runs before {BOOTS_RECORDED_SINCE}, or a "
                "system without a boot id)")


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


def cpu_ticks(path: Path = PROC_STAT) -> dict[str, int] | None:
    """The whole machine's CPU time so far by kind, in clock ticks (Linux); None where the
    system does not say."""
    try:
        first = path.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[:1] != ["cpu"] or len(first) < 1 + len(CPU_FIELDS):
        return None
    return dict(zip(CPU_FIELDS, (int(v) for v in first[1:]), strict=False))


def cpu_share(start: Mapping[str, int], end: Mapping[str, int]) -> dict[str, float] | None:
    """How the machine's CPU time between two ``cpu_ticks`` readings was spent, as shares of
    it: ``busy`` (user, nice, system, irq, softirq: this run and anything else running),
    ``idle`` (idle, iowait) and ``steal`` (the hypervisor ran something else on our cores).
    None when no time passed or a reading is missing."""
    delta = {k: end.get(k, 0) - start.get(k, 0) for k in CPU_FIELDS}
    total = sum(delta.values())
    if total <= 0 or any(v < 0 for v in delta.values()):
        return None
    idle = delta["idle"] + delta["iowait"]
    return {"busy": (total - idle - delta["steal"]) / total, "idle": idle / total,
            "steal": delta["steal"] / total}


def machine_block() -> dict[str, Any]:
    """The manifest's ``machine``: the hardware the run was created on (each session's boot
    is in ``sessions``)."""
    return {"platform": platform.platform(), "processor": platform.machine(),
            "cpu": cpu_model(), "cores": machine_cores()}


def session_start(rows_before: int, sessions: list[dict[str, Any]], *,
                  ticks: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """``sessions`` with this session's entry appended as it begins, so that a session killed
    part-way still names its boot (its ``written`` stays None: unknown, maybe some).  Rows
    written before sessions were recorded get one entry of unknown boot first.  ``ticks``
    (``cpu_ticks()`` unless given) is kept until ``session_end`` turns it into ``cpu_share``."""
    earlier = list(sessions)
    if not earlier and rows_before:
        earlier.append({"boot_id": None, "written": rows_before,
                        "note": "sessions before boots were recorded"})
    return [*earlier, {"boot_id": boot_id(), "cpu": cpu_model(), "started_at": time.time(),
                       "finished_at": None, "wall_seconds": None, "written": None,
                       "cpu_ticks_at_start": dict(ticks) if ticks is not None else cpu_ticks()}]


def session_end(sessions: list[dict[str, Any]], wall_seconds: float, written: int, *,
                ticks: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """``sessions`` with the last entry (this session's, from ``session_start``) completed:
    its wall time, rows written and how the machine's CPU time was shared meanwhile."""
    *earlier, current = sessions
    start = current.get("cpu_ticks_at_start")
    current = {k: v for k, v in current.items() if k != "cpu_ticks_at_start"}
    end = ticks if ticks is not None else cpu_ticks()
    share = cpu_share(start, end) if start is not None and end is not None else None
    return [*earlier, {**current, "finished_at": time.time(), "wall_seconds": wall_seconds,
                       "written": written, "cpu_share": share}]


def host_steal(manifest: Mapping[str, Any]) -> float | None:
    """The share of the machine's CPU time the host took while the run's samples were written
    (sessions weighted by wall time); None when a session that wrote samples did not record
    it (runs before 2026-12-03, a killed session, a system without /proc/stat)."""
    sessions = [s for s in manifest.get("sessions") or [] if s.get("written") != 0]
    if not sessions or any(not s.get("cpu_share") or not s.get("wall_seconds")
                           for s in sessions):
        return None
    wall = sum(float(s["wall_seconds"]) for s in sessions)
    return sum(float(s["cpu_share"]["steal"]) * float(s["wall_seconds"])
               for s in sessions) / wall if wall > 0 else None


def boots(manifest: Mapping[str, Any]) -> frozenset[str] | None:
    """The boots that wrote the run's samples; None when one of them is unknown.  A session
    that wrote nothing (a finished run opened again) adds no boot; one that did not finish
    may have written some, so it counts."""
    sessions = [s for s in manifest.get("sessions") or [] if s.get("written") != 0]
    found = {s.get("boot_id") for s in sessions}
    if not sessions or None in found:
        return None
    return frozenset(str(b) for b in found)


def same_boot(run: Mapping[str, Any], other: Mapping[str, Any]) -> bool | None:
    """Whether two runs (their manifests) wrote every sample on one boot of one machine: True,
    False, or None when either did not record it (so nobody can tell)."""
    return same_boots(boots(run), boots(other))


def same_boots(mine: frozenset[str] | None, theirs: frozenset[str] | None) -> bool | None:
    """``same_boot`` on the runs' ``boots``."""
    if mine is None or theirs is None:
        return None
    return len(mine) == 1 and mine == theirs
