"""Step statistics read back from run folders, validation, markdown sections and the CLI."""

from __future__ import annotations

import argparse
import json

import pytest

from atts.cli import simulate_cmd
from atts.perf.report import replace_section, table
from atts.perf.scenarios import validate
from atts.perf.stats import estimate_prompt_tokens, load_run_stats, plan_from_row
from pipeline_helpers import config, engines, run


def drafts(ppls: list[float]):
    """The draft writes one scripted step per round, boxing its answer in the last one."""
    def step(call) -> str:
        round_index = call.prompt.count("ppl=") + call.prompt.count("target regenerates")
        ppl = ppls[min(round_index, len(ppls) - 1)]
        end = " \\boxed{42}" if round_index >= len(ppls) - 1 else ""
        return f"d{round_index} ppl={ppl}{end}\n\n"
    return step


@pytest.fixture()
def atts_run(tmp_path):
    # Calls take (virtual) time, so the run has a wall time to validate against.
    draft, target = engines(drafts([2.0, 99.5, 3.0]), draft_delay=lambda call: 0.5,
                            target_delay=lambda call: 0.2)
    cfg = config(samples=2, rounds=4, alpha=0.1, alpha_discard=0.0)
    run(cfg, draft, target, tmp_path / "run")
    return tmp_path / "run"


def test_plans_follow_the_recorded_steps(atts_run):
    stats = load_run_stats(atts_run)
    rows = [json.loads(line) for line in (atts_run / "samples.jsonl").read_text().splitlines()]
    assert stats.strategy == "atts" and len(stats.workload.plans) == len(rows)
    assert [p.key for p in stats.workload.plans] == sorted(p.key for p in stats.workload.plans)
    for plan in stats.workload.plans:
        assert [r.decision for r in plan.rounds] == ["accept", "continue", "accept"]
        assert plan.rounds[1].target_tokens == len("target continues.\n\n")
        assert plan.rounds[0].draft_tokens == len("d0 ppl=2.0\n\n")
    summary = stats.step_summary()
    assert summary["rejection"] == pytest.approx(1 / 3)
    assert summary["rounds_mean"] == 3


def test_a_forced_answer_and_a_wait_cue_are_read():
    row = {"question_id": "q", "sample_index": 1, "rounds": 2, "steps": [
        {"round": 0, "author": "target", "kind": "step", "tokens": 40},
        {"round": 0, "author": "target", "kind": "wait", "tokens": 9},
        {"round": 1, "author": "target", "kind": "step", "tokens": 30},
        {"round": 2, "author": "target", "kind": "forced_answer", "tokens": 3}]}
    plan = plan_from_row(row, 100, "target_only")
    assert [(r.target_tokens, r.cue_tokens) for r in plan.rounds] == [(40, 9), (30, 0)]
    assert (plan.forced_tokens, plan.forced_author) == (3, "target")


def test_prompt_tokens_are_estimated_from_the_question():
    assert estimate_prompt_tokens("x" * 39) == 49 + 10
    assert estimate_prompt_tokens("$x^2$" * 14) == 49 + 25  # LaTeX: 2.8 characters a token


def test_validation_predicts_every_run_under_a_folder(atts_run):
    (rows,) = validate([atts_run.parent]).rows
    assert rows.strategy == "atts" and rows.samples == 4
    assert rows.measured > 0 and rows.preset > 0 and rows.calibrated > 0
    # The fake engines cache nothing when generating, so every call re-reads its context;
    # the simulator (no pool for the fake engine) evaluates about one token per call.
    stats = load_run_stats(atts_run)
    recorded = sum(s["prefill_tokens"] for line in (atts_run / "samples.jsonl").open()
                   for s in json.loads(line)["steps"])
    assert rows.prefill is not None and rows.prefill[0] == recorded == stats.prefill_tokens
    assert 0 < rows.prefill[1] < recorded
    with pytest.raises(ValueError, match="no run folder"):
        validate([atts_run / "nothing-here"])


def test_sections_are_replaced_between_their_markers(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Title\n\nprose\n")
    replace_section(path, "one", "first")
    replace_section(path, "two", table(["a", "b"], [[1, 2]]))
    replace_section(path, "one", "second")
    text = path.read_text()
    assert text.startswith("# Title\n\nprose\n")
    assert "second" in text and "first" not in text and "| 1 | 2 |" in text
    assert text.index("one:begin") < text.index("two:begin")
    with pytest.raises(ValueError):
        replace_section(path, "bad name", "x")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command", required=True)
    simulate_cmd.register(subparsers)
    args = parser.parse_args(["simulate", *argv])
    return int(args.func(args))


def test_cli_bound_run_and_validate(tmp_path, atts_run, capsys):
    assert _cli(["bound", "--device", "h200", "--markdown", str(tmp_path / "b.md")]) == 0
    assert "Break-even" in (tmp_path / "b.md").read_text()
    assert _cli(["run", "--questions", "2", "--samples", "4", "--rounds", "3",
                 "--section", "sim", "--benchmarks", str(tmp_path / "B.md")]) == 0
    assert "sim:begin" in (tmp_path / "B.md").read_text()
    assert _cli(["validate", str(atts_run)]) == 0
    out = capsys.readouterr().out
    assert "speedup vs target_only" in out and "self-calibrated" in out


def test_cli_sweep_draws_its_figure(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sync.png"
    assert _cli(["sweep", "--samples", "4", "8", "--rounds", "1", "3", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", [["bound", "--device", "a100"],
                                     ["paper", "--device", "a100"],
                                     ["run", "--draft-device", "nope"]])
def test_an_unknown_device_is_a_usage_error_listing_the_presets(command, capsys):
    """It used to be a KeyError traceback (issue 17)."""
    with pytest.raises(SystemExit) as info:
        _cli(command)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice" in err and "a100-80gb" in err and "cpu-2core" in err
