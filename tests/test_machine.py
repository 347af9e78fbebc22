"""Which boot ran a run (atts.runner.machine): the rule that says when two wall times may be
divided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atts.runner.machine import boot_id, boots, same_boot, session_end, session_start


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
