"""Which boot ran a run (atts.runner.machine): the rule that says when two wall times may be
divided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atts.runner.machine import (
    CPU_FIELDS,
    boot_id,
    boots,
    cpu_share,
    cpu_ticks,
    host_steal,
    same_boot,
    session_end,
    session_start,
)


def _manifest(*boot_ids: str | None) -> dict[str, Any]:
    return {"sessions": [{"boot_id": b, "wall_seconds": 1.0, "written": 1} for b in boot_ids]}


def test_boot_id_reads_the_kernel_file_and_is_none_without_it(tmp_path: Path) -> None:
    file = tmp_path / "boot_id"
    file.write_text("3f2a-77\n")
    assert boot_id(file) == "3f2a-77"
    assert boot_id(tmp_path / "missing") is None
    file.write_text("\n")
    assert boot_id(file) is None


def test_runs_of_one_boot_compare_and_runs_of_two_do_not() -> None:
    assert same_boot(_manifest("a"), _manifest("a")) is True
    assert same_boot(_manifest("a", "a"), _manifest("a")) is True  # resumed on the same boot
    assert same_boot(_manifest("a"), _manifest("b")) is False
    # A run resumed on another boot spans two machines' timings: nothing compares with it.
    assert same_boot(_manifest("a", "b"), _manifest("a")) is False
    assert same_boot(_manifest("a", "b"), _manifest("a", "b")) is False


def test_an_unrecorded_boot_is_unknown_not_equal() -> None:
    legacy: dict[str, Any] = {"last_session": {"wall_seconds": 5.0}}
    assert boots(legacy) is None
    assert same_boot(legacy, _manifest("a")) is None
    assert same_boot(legacy, legacy) is None
    assert same_boot(_manifest("a", None), _manifest("a")) is None


def test_a_session_that_wrote_nothing_adds_no_boot() -> None:
    reopened = _manifest("a")
    reopened["sessions"].append({"boot_id": "b", "written": 0})
    assert boots(reopened) == frozenset({"a"})
    assert same_boot(reopened, _manifest("a")) is True


def test_a_session_names_its_boot_when_it_begins_and_counts_at_its_end() -> None:
    begun = session_start(0, [])
    assert len(begun) == 1 and begun[0]["boot_id"] == boot_id()
    assert begun[0]["written"] is None  # killed now: its boot is known, its rows are not
    if boot_id() is not None:
        assert boots({"sessions": begun}) == frozenset({boot_id()})
    ended = session_end(begun, 12.5, 3)
    assert (ended[0]["wall_seconds"], ended[0]["written"]) == (12.5, 3)
    assert ended[0]["finished_at"] >= ended[0]["started_at"]


def test_rows_from_before_sessions_were_recorded_make_the_boots_unknown() -> None:
    resumed = session_start(40, [])
    assert resumed[0] == {"boot_id": None, "written": 40,
                          "note": "sessions before boots were recorded"}
    assert boots({"sessions": session_end(resumed, 1.0, 40)}) is None
    # With sessions already recorded, nothing is added before the new one.
    assert len(session_start(40, _manifest("a")["sessions"])) == 2


def _ticks(**kinds: int) -> dict[str, int]:
    return {k: kinds.get(k, 0) for k in CPU_FIELDS}


def test_cpu_ticks_read_the_aggregate_line_of_proc_stat(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 20 300 7 0 3 65 0 0\ncpu0 50 2 10 150 3 0 1 30 0 0\n")
    assert cpu_ticks(stat) == {"user": 100, "nice": 5, "system": 20, "idle": 300,
                               "iowait": 7, "irq": 0, "softirq": 3, "steal": 65}
    stat.write_text("intr 1 2 3\n")
    assert cpu_ticks(stat) is None
    assert cpu_ticks(tmp_path / "missing") is None


def test_cpu_share_splits_the_time_between_two_readings() -> None:
    # 100 ticks passed: 40 busy (user 30, system 10), 26 idle (idle 20, iowait 6), 34 stolen.
    share = cpu_share(_ticks(user=5, idle=5), _ticks(user=35, system=10, idle=25, iowait=6,
                                                     steal=34))
    assert share == pytest.approx({"busy": 0.40, "idle": 0.26, "steal": 0.34})
    assert cpu_share(_ticks(user=5), _ticks(user=5)) is None  # no time passed
    assert cpu_share(_ticks(user=9), _ticks(user=5)) is None  # a counter went back: a reboot


def test_a_session_records_how_the_host_shared_the_cpu() -> None:
    begun = session_start(0, [], ticks=_ticks(user=0, idle=0))
    assert begun[0]["cpu_ticks_at_start"]["user"] == 0
    ended = session_end(begun, 10.0, 5, ticks=_ticks(user=50, idle=25, steal=25))
    assert "cpu_ticks_at_start" not in ended[0]
    assert "cpu_ticks_at_start" in begun[0]  # the input is left as it was
    assert ended[0]["cpu_share"] == pytest.approx({"busy": 0.5, "idle": 0.25, "steal": 0.25})
    assert host_steal({"sessions": ended}) == pytest.approx(0.25)


def test_host_steal_weights_sessions_by_wall_time_and_needs_every_one() -> None:
    def session(wall: float, steal: float, written: int = 4) -> dict[str, Any]:
        return {"boot_id": "a", "written": written, "wall_seconds": wall,
                "cpu_share": {"busy": 1 - steal, "idle": 0.0, "steal": steal}}

    assert host_steal({"sessions": [session(30, 0.1), session(10, 0.5)]}) == pytest.approx(0.2)
    # A session that wrote nothing does not count; one without a record makes it unknown.
    assert host_steal({"sessions": [session(30, 0.1), session(5, 0.9, written=0)]}) == \
        pytest.approx(0.1)
    assert host_steal({"sessions": [session(30, 0.1), {"boot_id": "a", "written": 3}]}) is None
    assert host_steal({}) is None
