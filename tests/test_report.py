"""Reports of a hand-built run folder: summary.json and report.md against hand-computed numbers,
real PNG files, the baseline speedup, the summary block `atts run` prints, the grade cache, and
clear errors for a folder that is not a run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from atts.cli.main import main
from atts.grading import GradeFailure
from atts.report.build import write_report
from atts.report.graded_run import GRADES, load_run, wall_time
from atts.report.metrics import clopper_pearson
from atts.report.summary import format_summary, print_summary, summarize_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GOLD = {"gsm8k/0": "18", "gsm8k/1": "3"}
# question -> answers of samples 0..3 (None: the sample failed).  Graded: q0 2/4 right, majority
# "18" right; q1 1/4 right, majority "4" wrong.  pass@1 = (2/4 + 1/4) / 2, maj@4 = 1/2, pass@4 = 1.
ANSWERS = {"gsm8k/0": ["18", "18", "17", None], "gsm8k/1": ["3", "4", "4", "5"]}
# (question, sample) -> decisions of its round-0 and round-1 draft steps; 1 + 3 of 14 rejected.
REJECTED = {("gsm8k/0", 1): (True, False), ("gsm8k/1", 0): (False, True),
            ("gsm8k/1", 2): (False, True), ("gsm8k/1", 3): (False, True)}
TOKENS = {"draft_decode": 30, "target_decode": 7, "target_score": 30}  # per answered sample
SECONDS = {"draft": 1.5, "score": 0.5, "target": 0.25, "wall": 3.0}


def step(round_: int, author: str, decision: str | None) -> dict[str, Any]:
    return {"round": round_, "author": author, "kind": "step", "text": "x", "tokens": 15,
            "kept": decision != "regenerate", "score": 2.0 if decision else None,
            "p_value": 0.1 if decision == "continue" else 0.6 if decision else None,
            "decision": decision, "seconds": 0.2}


def sample_row(qid: str, index: int, answer: str | None, strategy: str,
               start: float, finish: float) -> dict[str, Any]:
    steps = []
    if answer is not None and strategy == "atts":
        for round_, rejected in enumerate(REJECTED.get((qid, index), (False, False))):
            steps.append(step(round_, "draft", "continue" if rejected else "accept"))
            if rejected:
                steps.append(step(round_, "target", None))
    elif answer is not None:
        steps.append(step(0, "target", None))
    tokens = dict(TOKENS) if answer is not None else dict.fromkeys(TOKENS, 0)
    if strategy != "atts" and answer is not None:
        tokens = {"draft_decode": 0, "target_decode": 100, "target_score": 0}
    return {
        "question_id": qid, "dataset": "gsm8k", "sample_index": index, "seed": index,
        "strategy": strategy, "status": "ok" if answer is not None else "error",
        "error": None if answer is not None else "EngineError: boom",
        "answer": answer, "gold": GOLD[qid], "text": f"\\boxed{{{answer}}}", "rounds": 2,
        "steps": steps, "tokens": tokens,
        "seconds": dict(SECONDS) if answer is not None else dict.fromkeys(SECONDS, 0.0),
        "started_at": start, "finished_at": finish,
    }


def make_run(path: Path, *, strategy: str = "atts", session_wall: float = 12.0,
             skipped: int = 0, boot: str | None = "boot-a", steal: float | None = None,
             calls: dict[str, Any] | None = None) -> Path:
    """2 questions x 4 samples.  Question 0 runs 1000-1005 s, question 1 1001-1010 s: latencies
    5 s and 9 s, rows span 10 s; the session reports ``session_wall`` seconds and ran on
    ``boot`` (None: a run from before boots were recorded)."""
    path.mkdir(parents=True)
    rows = []
    for q, (qid, answers) in enumerate(ANSWERS.items()):
        for i, answer in enumerate(answers):
            finish = 1000.0 + q + [2, 3, 4, 5][i] + (4 if q and i == 3 else 0)
            rows.append(sample_row(qid, i, answer, strategy, 1000.0 + q, finish))
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"alpha": 0.25, "samples": 4, "strategy": strategy, "dataset": "gsm8k",
              "draft": "smollm2-135m", "target": "smollm2-135m", "engine": "fake"}
    manifest = {"config": config, "last_session": {
        "total": 8, "skipped": skipped, "written": 8 - skipped, "errors": 1,
        "wall_seconds": session_wall}}
    if calls is not None:
        manifest["last_session"]["engine_calls"] = calls
    if boot is not None:
        manifest["sessions"] = [{"boot_id": boot, "wall_seconds": session_wall,
                                 "written": 8 - skipped}]
        if steal is not None:
            manifest["sessions"][0]["cpu_share"] = {"busy": 1 - steal, "idle": 0.0,
                                                    "steal": steal}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("report")
    run = make_run(root / "atts-run")
    base = make_run(root / "base-run", strategy="target_only", session_wall=30.0)
    return write_report(run, [base])


def test_summary_json_holds_the_hand_computed_metrics_and_the_run_identity(report) -> None:
    summary = json.loads(report.summary_json.read_text())
    assert summary["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert summary["maj@4"] == pytest.approx(0.5)
    assert summary["pass@4"] == pytest.approx(1.0)
    # Per question, for paired differences: gold 18 and 3 (2 of 4 right, majority 18; 1 of 4).
    assert summary["per_question"] == {"gsm8k/0": {"pass@1": 0.5, "maj@4": 1.0, "pass@4": 1.0},
                                       "gsm8k/1": {"pass@1": 0.25, "maj@4": 0.0, "pass@4": 1.0}}
    assert summary["rejection_rate"] == pytest.approx(4 / 14)
    per_round = summary["rejection"]["per_round"]
    assert (per_round["0"]["rejections"], per_round["0"]["steps"]) == (1, 7)
    assert (per_round["1"]["rejections"], per_round["1"]["steps"]) == (3, 7)
    low, high = clopper_pearson(4, 14)
    assert summary["rejection"]["overall"]["low"] == pytest.approx(low)
    assert summary["rejection"]["overall"]["high"] == pytest.approx(high)
    assert (summary["strategy"], summary["dataset"], summary["alpha"]) == ("atts", "gsm8k", 0.25)
    assert summary["wall_seconds"] == 12.0 and summary["wall_source"] == "last_session"
    assert (summary["errors"], summary["no_answer"]) == (1, 1)
    assert summary["tokens"] == {"draft_decode": 210, "target_decode": 49, "target_score": 210,
                                 "decode": 259, "total": 469}
    assert summary["engine_seconds"] == pytest.approx(
        {"draft_decode": 10.5, "target_score": 3.5, "target_decode": 1.75})
    assert summary["timing"]["latency_p50"] == pytest.approx(7.0)  # latencies 5 s and 9 s
    assert summary["plots"] == {name: f"{name}.png"
                                for name in ("rejection", "accuracy", "latency", "tokens")}


def test_baseline_speedup_is_its_wall_over_this_runs_wall(report) -> None:
    (base,) = json.loads(report.summary_json.read_text())["baselines"]
    assert base["strategy"] == "target_only" and base["alpha"] is None
    assert base["speedup"] == pytest.approx(30.0 / 12.0)
    assert base["wall_seconds"] == 30.0
    assert (base["pass@1"], base["maj@4"], base["pass@4"]) == pytest.approx((0.375, 0.5, 1.0))
    assert base["rejection_rate"] is None
    assert base["token_ratio"] == pytest.approx(700 / 469)
    assert json.loads(report.summary_json.read_text())["notes"] == []  # same questions, same N


def test_every_plot_is_a_drawn_png(report) -> None:
    from matplotlib.image import imread

    assert set(report.plots) == {"rejection", "accuracy", "latency", "tokens"}
    for path in report.plots.values():
        assert path.parent == report.out_dir and path.read_bytes().startswith(PNG_MAGIC), path
        pixels = imread(path)[..., :3]
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600, path
        assert (pixels < 0.5).mean() > 0.005, path  # axes, text and marks, not a blank page


def test_the_plots_draw_the_numbers_of_the_summary(report) -> None:
    """The rejection plot's points are the per-round rates and the overall one, with alpha's
    line; the token plot's bars are the token counts by kind (values read off the artists)."""
    from atts.report.plots import plot_rejection, plot_tokens

    runs = [(load_run(report.out_dir), json.loads(report.summary_json.read_text()))]
    axes = plot_rejection(runs).axes[0]
    (points, *_) = axes.lines
    assert list(points.get_ydata()) == pytest.approx([1 / 7, 3 / 7, 4 / 14])
    assert any(list(line.get_ydata()) == [0.25, 0.25] for line in axes.lines)
    bars = plot_tokens(runs).axes[0].patches
    assert [b.get_width() for b in bars] == [210, 210, 49]  # draft, score, target tokens


def test_report_md_carries_tables_speedup_and_plots(report) -> None:
    text = report.markdown.read_text()
    assert text.startswith("# atts report: atts-run (atts)\n")
    assert "| atts-run (atts) | atts | 2 x 4 | 0.375 | 0.500 | 1.000 | 7 / 8 | 1 |" in text
    assert "| base-run (target_only) | target_only | 2 x 4 | 0.375 | 0.500 | 1.000 |" in text
    assert "Speedup over base-run (target_only): **2.5x** (its wall 30.0 s / this run's 12.0 s)" \
        in text
    assert "Overall: **0.286** (4 of 14 scored draft steps" in text
    assert "| 1 | 7 | 3 | 0.429 |" in text
    assert "nominal alpha 0.25 is inside the interval" in text
    for name in ("rejection", "accuracy", "latency", "tokens"):
        assert f"]({name}.png)" in text
    assert "1 sample(s) failed with: EngineError: boom" in text


def test_print_summary_prints_the_aligned_block(tmp_path, capsys) -> None:
    print_summary(make_run(tmp_path / "run"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    assert lines[0] == "atts · gsm8k · 2 questions x 4 samples · strategy atts · alpha 0.25"
    # Each accuracy carries its 95% bootstrap interval over the two questions.
    match = re.fullmatch(r"accuracy    pass@1 0\.375 \[(\S+), (\S+)\]   maj@4 0\.500 "
                         r"\[(\S+), (\S+)\]   pass@4 1\.000", lines[1])
    assert match, lines[1]
    low1, high1, low4, high4 = map(float, match.groups())
    assert 0 <= low1 <= 0.375 <= high1 <= 1 and 0 <= low4 <= 0.5 <= high4 <= 1
    low, high = clopper_pearson(4, 14)
    assert lines[2] == (f"rejection   0.286 of 14 draft steps (95% CI {low:.3f}-{high:.3f}) "
                        "vs alpha 0.25: inside")
    assert lines[3] == ("answers     7 of 8 samples boxed an answer · 1 error "
                        "(most: EngineError: boom)")
    assert lines[4].split() == ["time", "split", "draft", "decode", "target", "score", "target",
                                "decode", "(summed", "over", "samples)"]
    assert lines[5].split() == ["tokens", "210", "210", "49", "total", "469"]
    assert lines[6].split() == ["seconds", "10.5", "3.5", "1.8"]
    assert lines[7] == ("wall        12.0 s (one session) · question latency p50 7.0 s"
                        "  p90 8.6 s")


# The engines' calls of a one-session run (as CallStats.to_dict writes them): the target read
# 40 prompt rows, 2 again after an eviction and 221 beyond; the draft wrote 210 tokens.
CALLS = {
    "draft": {"decode_calls": 50, "decode_rows": 200, "decode_seconds": 8.0,
              "prefill_calls": 10, "prefill_rows": 100, "prefill_seconds": 1.0,
              "first_rows": 40, "evicted_rows": 0, "busy_share": 0.75},
    "target": {"decode_calls": 10, "decode_rows": 25, "decode_seconds": 2.0,
               "prefill_calls": 20, "prefill_rows": 263, "prefill_seconds": 5.26,
               "first_rows": 40, "evicted_rows": 2, "busy_share": 0.6},
}


def test_the_engine_calls_of_a_one_session_run_are_accounted_row_by_row(tmp_path) -> None:
    run = make_run(tmp_path / "run", calls=CALLS)
    use = summarize_run(load_run(run))["engine_use"]
    draft, target = use["engines"]["draft"], use["engines"]["target"]
    assert draft["mean_decode_batch"] == 4.0 and draft["decode_ms_per_row"] == 40.0
    assert target["mean_decode_batch"] == 2.5 and target["decode_ms_per_row"] == 80.0
    assert (target["prefill_rows"], target["prompt_rows"], target["reread_rows"]) == (263, 40, 2)
    assert target["prefill_ms_per_row"] == pytest.approx(20.0)
    assert use["rows_per_drafted_token"] == pytest.approx((263 - 40) / 210)
    lines = format_summary(summarize_run(load_run(run))).splitlines()[8:]
    assert lines[0].split() == ["engine", "calls", "decode", "rows", "a", "call", "ms/row",
                                "prefill", "rows", "prompts", "re-read", "ms/row", "busy"]
    assert lines[1].split() == ["draft", "200", "4.0", "40", "100", "40", "0", "10", "0.75"]
    assert lines[2].split() == ["target", "25", "2.5", "80", "263", "40", "2", "20", "0.60"]
    assert lines[3].strip() == ("the target read 1.06 rows per drafted token beyond the "
                                "prompts (scoring needs 1)")
    markdown = write_report(run, plots=False).markdown.read_text()
    assert "| target | 25 | 2.50 | 80.0 | 263 | 40 | 2 | 20.0 | 0.60 |" in markdown
    assert "The target read 1.06 prefill rows per drafted token" in markdown


def test_engine_calls_are_left_out_when_they_cover_part_of_the_run(tmp_path) -> None:
    # Resumed: the calls are the last session's, the tokens every session's.
    resumed = make_run(tmp_path / "resumed", skipped=2, calls=CALLS)
    summary = summarize_run(load_run(resumed))
    assert summary["engine_use"] is None
    assert "engine calls" not in format_summary(summary)
    # A manifest from before the prompt/re-read split: the rest is given, the ratio is not.
    old = {role: {k: v for k, v in stats.items() if k not in ("first_rows", "evicted_rows")}
           for role, stats in CALLS.items()}
    use = summarize_run(load_run(make_run(tmp_path / "old", calls=old)))["engine_use"]
    assert use["engines"]["target"]["prompt_rows"] is None
    assert use["rows_per_drafted_token"] is None
    # Target-only's draft, loaded and never called, gets no line.
    idle = {"draft": {"decode_calls": 0, "decode_rows": 0, "prefill_rows": 0},
            "target": CALLS["target"]}
    use = summarize_run(load_run(make_run(tmp_path / "idle", calls=idle)))["engine_use"]
    assert list(use["engines"]) == ["target"]


def test_wall_time_comes_from_the_rows_when_the_run_was_resumed() -> None:
    rows = [{"started_at": 0.0, "finished_at": 2.0}, {"started_at": 1.0, "finished_at": 3.0},
            {"started_at": 100.0, "finished_at": 101.0}]  # a pause between two sessions
    resumed = {"last_session": {"wall_seconds": 1.0, "skipped": 2, "written": 1}}
    assert wall_time(resumed, rows) == (4.0, "rows")
    one_session = {"last_session": {"wall_seconds": 5.0, "skipped": 0, "written": 3}}
    assert wall_time(one_session, rows) == (5.0, "last_session")


def test_grades_are_cached_in_the_run_folder_and_regrade_ignores_them(tmp_path) -> None:
    run = make_run(tmp_path / "run")
    assert load_run(run).cached_grades == 0
    cache = json.loads((run / GRADES).read_text())
    assert ["17", "18", "gsm8k", False] in cache["grades"]
    assert load_run(run).cached_grades == 7  # the failed sample has no answer to grade
    cache["grades"] = [[a, g, d, True] for a, g, d, _ in cache["grades"]]  # a forged cache
    (run / GRADES).write_text(json.dumps(cache))
    assert all(r["correct"] for r in load_run(run).rows if r["answer"])
    assert sum(r["correct"] for r in load_run(run, use_cache=False).rows) == 3


@pytest.mark.parametrize("cache", [
    '{"atts": "VERSION", "grades": 5}', '{"atts": "VERSION", "grades": [[1, 2]]}',
    '{"atts": "VERSION", "grades": [["18", "18", "gsm8k", "yes"]]}', "not json", b"\xff\xfe"])
def test_a_malformed_grade_cache_is_graded_again_not_trusted(tmp_path, capsys, cache) -> None:
    """grades.json is a cache: one that is not what atts writes costs a regrade, never a
    traceback or a verdict read from a string (issue 32)."""
    import atts

    run = make_run(tmp_path / "run")
    if isinstance(cache, bytes):
        (run / GRADES).write_bytes(cache)
    else:
        (run / GRADES).write_text(cache.replace("VERSION", atts.__version__))
    graded = load_run(run)
    assert graded.cached_grades == 0
    assert sum(r["correct"] for r in graded.rows) == 3
    assert "grading every answer again" in capsys.readouterr().err
    assert load_run(run).cached_grades == 7  # and the cache is written anew


class FlakyGrader:
    """Grades by string equality; the answer "17" times out (graded wrong, as Grader does)."""

    def __init__(self) -> None:
        self.failures: list[GradeFailure] = []

    def grade_many(self, pairs: list[tuple[str, str, str]]) -> list[bool]:
        for pred, gold, _ in pairs:
            if pred == "17":
                self.failures.append(GradeFailure(pred, gold, "timeout after 10.0s"))
        return [pred == gold for pred, gold, _ in pairs]


def test_a_grader_failure_is_reported_and_not_cached(tmp_path) -> None:
    run = load_run(make_run(tmp_path / "run"), FlakyGrader())  # type: ignore[arg-type]
    assert run.grading_failures == ["'17' vs '18': timeout after 10.0s"]
    cached = json.loads((run.path / GRADES).read_text())["grades"]
    assert [a for a, *_ in cached] == ["18", "3", "4", "5"]  # "17" is tried again next time
    assert sum(r["correct"] for r in run.rows) == 3


def test_a_target_only_run_gets_no_rejection_plot(tmp_path) -> None:
    files = write_report(make_run(tmp_path / "base", strategy="target_only"), plots=False)
    assert files.summary["rejection_rate"] is None and files.plots == {}
    assert "No draft step was scored (strategy target_only)" in files.markdown.read_text()


def test_a_missing_or_non_run_folder_is_a_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="does not exist; pass the --out folder"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a run folder"):
        print_summary(tmp_path / "empty")
    run = make_run(tmp_path / "run")
    with pytest.raises(ValueError, match="not a run folder"):
        write_report(run, [tmp_path / "empty"])
    assert not (run / "summary.json").exists()  # checked before anything is written
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_report_writes_into_out_and_prints_the_speedup(tmp_path, capsys) -> None:
    run = make_run(tmp_path / "run")
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0)
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    out = capsys.readouterr()
    assert "speedup     2.5x over base (target_only)" in out.out
    assert "wrote report.md, summary.json" in out.err
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"report.md", "summary.json"}


def test_importing_the_report_package_leaves_matplotlib_unloaded() -> None:
    code = ("import sys, atts.report, atts.report.build, atts.report.summary, "
            "atts.cli.report_cmd\nprint('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_baseline_on_other_questions_gets_a_warning_not_a_speedup(tmp_path, capsys) -> None:
    """Issue 17: a baseline that answered other questions still printed a speedup."""
    run = make_run(tmp_path / "run")
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0)
    rows = (base / "samples.jsonl").read_text().replace('"gsm8k/1"', '"gsm8k/9"')
    (base / "samples.jsonl").write_text(rows)
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "speedup     none: base (target_only) answered other questions" in out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    entry = summary["baselines"][0]
    assert entry["comparable"] is False and entry["speedup"] is None
    assert entry["pass@1_difference"] is None
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Speedup over base (target_only): **not given**" in text
    assert "answered other questions (1 in common" in text


def test_a_baseline_of_another_boot_gets_no_speedup(tmp_path, capsys) -> None:
    """Wall times of two machines (or two boots of one) are not a speedup."""
    run = make_run(tmp_path / "run")
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0,
                    boot="boot-b")
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    assert "speedup     none: base (target_only) ran on another boot" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    entry = summary["baselines"][0]
    assert entry["same_boot"] is False and entry["speedup"] is None
    assert entry["pass@1_difference"] is not None  # accuracy still compares
    assert any("ran on another boot" in note for note in summary["notes"])
    assert "Speedup over base (target_only): **not given**" in (
        tmp_path / "r" / "report.md").read_text()


def test_a_baseline_without_a_recorded_boot_gets_its_speedup_with_a_warning(tmp_path) -> None:
    run = make_run(tmp_path / "run")
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0, boot=None)
    files = write_report(run, [base], tmp_path / "r", plots=False)
    entry = files.summary["baselines"][0]
    assert entry["same_boot"] is None and entry["speedup"] == pytest.approx(2.5)
    assert any("did not record the boot" in note for note in files.summary["notes"])
    assert "**2.5x** (boots not recorded: see the notes)" in files.markdown.read_text()


def test_a_run_resumed_on_another_boot_gets_no_speedup_over_either(tmp_path, capsys) -> None:
    run = make_run(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["sessions"].append({"boot_id": "boot-b", "written": 3})
    (run / "manifest.json").write_text(json.dumps(manifest))
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0)
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    assert "ran on another boot" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["baselines"][0]["speedup"] is None
    assert any("this run wrote samples on more than one boot" in n for n in summary["notes"])


def test_a_comparable_baseline_gives_the_speedup_beside_the_accuracy_difference(report) -> None:
    entry = json.loads(report.summary_json.read_text())["baselines"][0]
    assert entry["comparable"] is True
    diff = entry["pass@1_difference"]
    assert diff["estimate"] == pytest.approx(0.0) and diff["questions"] == 2
    text = report.markdown.read_text()
    assert "at a pass@1 difference of +0.000 [+0.00, +0.00] (95%, paired over 2 questions; " \
           "too few to decide)" in text


def test_unequal_host_steal_is_named_beside_the_speedup(tmp_path, capsys) -> None:
    """The hypervisor took a third of the cores from one side: the ratio measures it too."""
    run = make_run(tmp_path / "run", steal=0.34)
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0, steal=0.02)
    assert main(["report", str(run), "--baseline", str(base), "--out", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["host_steal"] == pytest.approx(0.34)
    assert summary["baselines"][0]["host_steal"] == pytest.approx(0.02)
    assert summary["baselines"][0]["speedup"] == pytest.approx(2.5)  # given, with the note
    assert any("The host took 34% of the machine's CPU time during this run and 2% during"
               in note for note in summary["notes"])
    assert "the host took 34% of the machine's CPU time meanwhile" in out
    # Shares within 5 points of each other, or unrecorded, say nothing.
    even = make_run(tmp_path / "even", strategy="target_only", session_wall=30.0, steal=0.31)
    files = write_report(run, [even], tmp_path / "r2", plots=False)
    assert not any("The host took" in note for note in files.summary["notes"])
    assert "host took" not in format_summary(summarize_run(load_run(make_run(tmp_path / "q"))))


def _probe_file(path: Path, *, overlap: bool) -> Path:
    path.write_text(json.dumps({
        "batch": 8, "context": 64, "decode_tokens": 16, "step_tokens": 32, "overlap": overlap,
        "mode": "continue", "seconds_per_token": {"draft_decode": 0.01, "target_decode": 0.05,
                                                  "target_score": 0.002}}))
    return path


@pytest.mark.parametrize(("overlap", "bound_seconds"), [
    # 7 answered samples: 210 draft tokens x 0.01 + 210 scored x 0.002 + 49 target x 0.05 s,
    # summed on shared cores (4.97 s), or the busier engine on its own device (target: 2.87 s).
    (False, 4.97), (True, 2.87)])
def test_a_probe_gives_the_runs_bound_and_measured_over_bound(tmp_path, capsys, overlap,
                                                              bound_seconds) -> None:
    """Issue 30: the run's own tokens priced at a probe's full-batch costs; the baseline's 700
    target tokens need 35 s, so its speedup bound is 35 / bound, of which the measured 2.5x
    (30 s / 12 s) is the share printed."""
    run = make_run(tmp_path / "run")
    base = make_run(tmp_path / "base", strategy="target_only", session_wall=30.0)
    probe = _probe_file(tmp_path / "probe.json", overlap=overlap)
    assert main(["report", str(run), "--baseline", str(base), "--no-plots",
                 "--probe", str(probe)]) == 0
    out = capsys.readouterr().out
    bound = json.loads((run / "summary.json").read_text())["bound"]
    assert bound["bound_seconds"] == pytest.approx(bound_seconds)
    assert bound["measured_over_bound"] == pytest.approx(12.0 / bound_seconds)
    [entry] = bound["baselines"]
    assert entry["speedup_bound"] == pytest.approx(35.0 / bound_seconds)
    assert entry["share_of_bound"] == pytest.approx(2.5 / (35.0 / bound_seconds))
    assert f"measured / bound {12.0 / bound_seconds:.2f}" in out
    share = entry["share_of_bound"]
    assert f"bound {35.0 / bound_seconds:.3g}x (measured {share:.2f} of it)" in out
    assert "measured wall / bound" in (run / "report.md").read_text()


@pytest.mark.parametrize("content", ["not json", json.dumps({"seconds_per_token": {}}),
                                     json.dumps({"seconds_per_token": {
                                         "draft_decode": 0.01, "target_decode": float("nan"),
                                         "target_score": 0.1}, "overlap": False, "batch": 8})])
def test_a_bad_probe_file_is_one_line_before_any_grading(tmp_path, capsys, content) -> None:
    run = make_run(tmp_path / "run")
    (tmp_path / "probe.json").write_text(content)
    assert main(["report", str(run), "--no-plots", "--probe", str(tmp_path / "probe.json")]) == 2
    err = capsys.readouterr().err
    assert "probe.json" in err and "Traceback" not in err
    assert not (run / "summary.json").exists()
