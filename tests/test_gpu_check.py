"""bench/gpu_check.py: the prepared GPU check runs end to end on its smoke path (tiny random
Qwen2 shapes on the CPU, a few seconds), writes every part into its one JSON with finite
positive figures, runs both strategies through the real runner into run folders, and its report
renders.  The models it builds for the real shapes have the presets' parameter counts (built on
the meta device: no memory), and its tokenizer covers the models' whole vocabulary.  Nothing
here asserts a wall-clock figure.  The ``gpu`` test runs the real check where CUDA is."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def check(bench_script):
    return bench_script("gpu_check")


@pytest.fixture(scope="module")
def smoke(check, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    folder = tmp_path_factory.mktemp("gpu-check")
    check.main(["--smoke", "--out", str(folder / "check.json"), "--runs", str(folder / "runs")])
    return json.loads((folder / "check.json").read_text()), folder


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_every_part_is_written_with_finite_positive_figures(smoke):
    data, folder = smoke
    assert data["smoke"] and data["finished_at"] and _positive(data["elapsed_s"])
    assert "accuracy is meaningless" in data["note"]
    assert set(data["parts"]) == {"ceilings", "per_token", "runner"}
    assert data["parts"]["ceilings"]["status"] in ("done", "skipped")
    assert not list(folder.glob("*.tmp"))  # every write was completed by its rename
    per_token = data["parts"]["per_token"]
    assert per_token["status"] == "done"
    cases = {(r["role"], r["attention"], r["kind"], r["batch"], r["context"], r["tokens"])
             for r in per_token["rows"]}
    # Both roles, both attentions, decode at every batch and a scored step: 2 x 2 x 3 cases.
    assert len(cases) == len(per_token["rows"]) == 12
    for row in per_token["rows"]:
        assert _positive(row["graph_s"]) and _positive(row["eager_s"]), row


def test_both_strategies_ran_through_the_runner(smoke, check):
    from atts.runner.run_folder import RunFolder

    data, folder = smoke
    part = data["parts"]["runner"]
    assert part["status"] == "done" and _positive(part["speedup"])
    work = part["workload"]
    samples = work["questions"] * work["samples"]
    assert 1 <= work["questions"] <= 2
    for name, run in part["runs"].items():
        rows = RunFolder(folder / "runs" / name).rows()
        assert len(rows) == run["samples"] == samples, name
        assert {r["strategy"] for r in rows} == {name}
        assert run["errors"] == 0 and all(r["status"] == "ok" for r in rows), run
        assert _positive(run["wall_seconds"]) and _positive(run["calls"]["target"]["busy_share"])
        # Every step runs to its token limit: rounds x step tokens, plus the forced answer.
        assert all(r["rounds"] == work["rounds"] and r["stop"] == "rounds" for r in rows)
    only, atts = part["runs"]["target_only"], part["runs"]["atts"]
    assert only["tokens"]["draft_decode"] == only["tokens"]["target_score"] == 0
    assert only["calls"]["draft"]["generate_calls"] == 0
    # The tallies count what the engines did: all of target-only's tokens are in its rows.
    assert only["calls"]["target"]["generated_tokens"] == only["tokens"]["target_decode"]
    assert _positive(atts["tokens"]["draft_decode"]) and _positive(atts["tokens"]["target_score"])
    assert atts["judged"] == samples * work["rounds"]
    assert 0 <= atts["rejection_rate"] <= 1
    assert atts["acceptance_rate"] == pytest.approx(1 - atts["rejection_rate"])
    # Calibration-only first steps (warm-up above N x questions) are drafted and scored too.
    assert atts["calls"]["draft"]["generated_tokens"] >= atts["tokens"]["draft_decode"]
    assert atts["calls"]["target"]["scored_tokens"] >= atts["tokens"]["target_score"]


def test_the_report_renders_both_tables(smoke, check, tmp_path):
    import argparse

    _, folder = smoke
    markdown = tmp_path / "check.md"
    check.report(argparse.Namespace(results=str(folder / "check.json"), markdown=str(markdown)))
    text = markdown.read_text()
    assert "Smoke run" in text
    assert "| draft | smoke-draft | decode | 1 | 32 |" in text
    assert "| sdpa |" in text and "ATTS's per-token bound" in text
    assert "| target_only |" in text and "| atts |" in text
    assert "ATTS speedup over target-only (wall):" in text


def test_the_report_says_what_was_skipped_and_what_did_not_finish(smoke, check, tmp_path):
    import argparse

    data, _ = smoke
    data = json.loads(json.dumps(data))  # a copy: the fixture is shared
    row = data["parts"]["per_token"]["rows"][0]
    for key in ("graph_s", "eager_s"):
        del row[key]
    row.update(skipped="memory", detail="KV cache too large")
    data["parts"]["runner"] = {"status": "skipped", "reason": "one question needs 900 s",
                               "runs": {}}
    data["finished_at"] = None
    path = tmp_path / "killed.json"
    path.write_text(json.dumps(data))
    text = check.report(argparse.Namespace(results=str(path), markdown=None))
    assert "did not finish" in text
    assert "runner skipped (one question needs 900 s)" in text
    assert f"| {row['role']} | {row['model']} | decode | 1 | 32 |  | skipped (memory) |" in text
    assert "| atts |" not in text


def test_a_spent_budget_skips_cases_and_says_so(check, tmp_path):
    record = check.Record(tmp_path / "c.json", {"parts": {}})
    check.per_token(torch, record, check.Budget(0.0), check.SMOKE, True, ["sdpa"], 1)
    part = json.loads((tmp_path / "c.json").read_text())["parts"]["per_token"]
    assert part["status"] == "partial"
    assert {r.get("skipped") for r in part["rows"]} == {"time"}


@pytest.mark.parametrize("name", ["r1-distill-qwen-1.5b", "qwen2.5-7b", "qwq-32b"])
def test_real_shapes_build_with_the_presets_parameter_counts(check, name):
    shape = check._shape(name)
    model = check._hf_model(torch, shape, 152064, "meta", torch.bfloat16, 0)
    assert model.dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
    assert check._count(model) == check._params(shape, 152064)
    assert check._count(model) == pytest.approx(shape.spec.params, rel=0.01)


def test_the_tokenizer_covers_the_vocabulary_and_round_trips_text(check):
    from atts.data import load_dataset

    tok = check._tokenizer(600)
    assert len(tok) == 600
    question = load_dataset("gsm8k", limit=1)[0].question + " héllo"
    ids = tok.encode(question, add_special_tokens=False)
    assert max(ids) < 256 and tok.decode(ids) == question  # one id per byte
    assert tok.decode([300, 10, 10]) == "<300>\n\n"  # filler ids decode to text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True,
                                   add_generation_prompt=True)
    chat = chat["input_ids"] if hasattr(chat, "keys") else chat
    assert chat[0] == 600 - 2 and tok.decode(chat, skip_special_tokens=True) == "user\nhi\n" \
        "assistant\n"


def test_the_probe_prices_both_strategies_at_their_worst(check):
    probe = check.Probe(draft_token_s=0.01, target_token_s=0.03, score_s=0.05)
    work = check.Workload(questions=4, samples=2, rounds=3, step_tokens=10)
    forced = 24 * 0.03  # the target's forced answer, once per sample in each strategy
    per_sample = (3 * 10 * 0.03 + forced) + (3 * (10 * 0.04 + 0.05) + forced)
    assert probe.question_seconds(work) == pytest.approx(2 * per_sample)


@pytest.mark.gpu
def test_the_real_check_on_this_gpu(check, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    check.main(["--out", str(tmp_path / "check.json"), "--runs", str(tmp_path / "runs")])
    data = json.loads((tmp_path / "check.json").read_text())
    assert not data["smoke"] and data["elapsed_s"] < 480
    assert data["parts"]["ceilings"]["status"] == "done"
    assert data["parts"]["per_token"]["status"] in ("done", "partial")
    assert any(r["attention"] == "sdpa" and _positive(r.get("graph_s"))
               for r in data["parts"]["per_token"]["rows"])
    runner = data["parts"]["runner"]
    assert runner["status"] == "done", runner.get("reason") or runner.get("error")
    assert all(run["errors"] == 0 for run in runner["runs"].values())
    assert _positive(runner["speedup"])
