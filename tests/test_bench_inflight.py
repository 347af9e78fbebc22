"""bench/bench_inflight.py: the runs it makes, in order, and its table of hand-made run folders
(no model runs here: the runs themselves are make demo's job, minutes each)."""

from __future__ import annotations

import pytest

from test_report import CALLS, _probe_file, make_run


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("bench_inflight")


def test_the_plan_pairs_each_setting_and_adds_the_unmoved_engine_at_8(bench) -> None:
    names = [name for name, _, _ in bench.plan([8, 16])]
    assert names == ["to-m8", "atts-m8", "atts-m8-nomove", "to-m8-nomove", "to-m16", "atts-m16"]
    moved = {name: flag for name, _, flag in bench.plan([8])}
    assert moved == {"to-m8": True, "atts-m8": True, "atts-m8-nomove": False,
                     "to-m8-nomove": False}
    args = dict((name, extra) for name, extra, _ in bench.plan([16]))
    assert args["atts-m16"] == ["--strategy", "atts", "--max-active-samples", "16"]


def test_the_report_divides_target_onlys_wall_by_each_runs(bench, tmp_path, capsys) -> None:
    make_run(tmp_path / "to-m8", strategy="target_only", session_wall=30.0, calls=CALLS)
    make_run(tmp_path / "atts-m8", session_wall=12.0, calls=CALLS)
    out = tmp_path / "table.md"
    assert bench.main(["report", "--root", str(tmp_path), "--markdown", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| atts-m8 ")]
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # 30 s / 12 s; no target-only at its own 8 apart; 469 tokens in 12 s
    assert cells[1:5] == ["12", "39.1", "2.50x", "-"]
    assert cells[10] == "1.06"  # target rows per drafted token, as test_report computes it
    assert cells[11] == "- / -"  # no moves recorded in these calls


def test_the_report_needs_target_only_at_8(bench, tmp_path, capsys) -> None:
    make_run(tmp_path / "atts-m8")
    assert bench.main(["report", "--root", str(tmp_path)]) == 2
    assert "no finished to-m8 run" in capsys.readouterr().err


def test_the_gap_to_the_bound_is_split_into_parts_that_add_up(bench, tmp_path) -> None:
    """The measured parts add up to the wall, the bound's to its seconds: the table accounts
    for every second between them."""
    make_run(tmp_path / "to-m8", strategy="target_only", session_wall=30.0, calls=CALLS)
    run = make_run(tmp_path / "atts-m8", session_wall=20.0, calls=CALLS)
    probe = _probe_file(tmp_path / "probe-m8.json", overlap=False)
    summary = bench._summary(run, [tmp_path / "to-m8"], probe)
    parts = bench.gap_parts(summary, CALLS)
    assert list(parts) == list(bench.GAP_PARTS)
    assert sum(m for m, _ in parts.values()) == pytest.approx(20.0)
    assert sum(b for _, b in parts.values()) == pytest.approx(summary["bound"]["bound_seconds"])
    # The target's prefill seconds split by rows: 40 of 263 were prompts.
    assert parts["target prompts"][0] == pytest.approx(5.26 * 40 / 263)
    assert parts["outside the calls"][0] == pytest.approx(20.0 - (8 + 1 + 2 + 5.26))


def test_a_run_the_plan_does_not_have_is_refused_before_any_run(bench, tmp_path, capsys) -> None:
    code = bench.main(["run", "--root", str(tmp_path), "--only", "atts-m9", "to-m8"])
    assert code == 2 and not any(tmp_path.iterdir())
    assert "--only atts-m9: not in the plan; choose from to-m8 atts-m8" in capsys.readouterr().err
