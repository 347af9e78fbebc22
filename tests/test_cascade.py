"""The cascade strategies in the runner, on scripted engines: which questions escalate, what
their target samples are, the order escalated work takes slots in, and resuming a killed run.

Every order here is the order of events on the event loop (one slot, instant fake engines),
not of real time."""

from __future__ import annotations

import json

from atts.pipeline.escalation import QuestionDecision
from atts.runner.run_folder import RunFolder
from atts.seeds import derive_seed
from pipeline_helpers import config, engines, run


def answers_by_question(agree: set[str]):
    """A draft that boxes 42 on the questions in ``agree`` and a different number per sample
    elsewhere (the sample's seed tells samples apart)."""

    def step(call) -> str:
        question = call.prompt.split("Question ", 1)[1].split("?", 1)[0]
        if question in agree:
            return "so \\boxed{42}\n\n"
        return f"so \\boxed{{{call.params.seed % 1000 + 100}}}\n\n"

    return step


def cascade(**changes):
    base = dict(strategy="cascade", calibration="adaptive", calibration_file=None, samples=3,
                rounds=2, escalate_alpha=0.5, escalate_pvalue="deterministic",
                escalate_warmup=2, max_active_samples=1)
    base.update(changes)
    return config(**base)


def decisions(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines()]


def test_disagreeing_questions_escalate_to_target_only_samples(tmp_path):
    cfg = cascade()
    draft, target = engines(answers_by_question(agree={"1", "3"}),
                            target_step=lambda call: "target says \\boxed{7}\n\n")
    outcome, rows = run(cfg, draft, target, tmp_path, questions=4)
    decided = {d["question_id"]: d for d in decisions(tmp_path)}
    assert list(decided) == ["t/0", "t/1", "t/2", "t/3"]  # one slot: question by question
    # The warm-up (t/0 disagrees: score 2/3; t/1 agrees: 0) is decided once both are in,
    # each leave-one-out: t/0's p = (1 + 1) / 2 = 1/2 <= 0.5 escalates, t/1's is 1.
    assert decided["t/0"]["p_value"] == 0.5 and decided["t/0"]["escalated"]
    assert decided["t/1"]["votes"] == {"42": 3} and decided["t/1"]["score"] == 0.0
    assert decided["t/1"]["p_value"] == 1.0 and not decided["t/1"]["escalated"]
    # Online: t/2 disagrees against the bank {2/3, 0}: p = (1 + 1) / 3 = 2/3 > 0.5, kept;
    # t/3 agrees: p = (1 + 3) / 4 = 1.
    assert decided["t/2"]["p_value"] == 2 / 3 and not decided["t/2"]["escalated"]
    assert decided["t/3"]["p_value"] == 1.0
    escalated = [r for r in rows if r["escalated"]]
    assert {r["question_id"] for r in escalated} == {"t/0"}
    assert sorted(r["sample_index"] for r in escalated) == [3, 4, 5]
    assert {r["strategy"] for r in escalated} == {"target_only"}
    assert {r["answer"] for r in escalated} == {"7"}
    # The seeds of target-only's samples 0..N-1: the samples target-only would have written.
    assert sorted(r["seed"] for r in escalated) == sorted(derive_seed(0, "t/0", j)
                                                          for j in range(3))
    assert not target.calls or all(c.kind == "generate" for c in target.calls)
    assert outcome.total == len(rows) == 4 * 3 + 3 and outcome.written == 15


def test_escalated_samples_take_the_next_free_slot_ahead_of_waiting_questions(tmp_path):
    cfg = cascade()
    draft, target = engines(answers_by_question(agree={"1"}))
    _, rows = run(cfg, draft, target, tmp_path, questions=4)
    order = [(r["question_id"], r["sample_index"]) for r in rows]
    # t/0 escalates when the warm-up (t/0, t/1) is in; its target samples come next, before
    # t/2 and t/3, which were waiting since the start.
    assert order[:9] == [("t/0", 0), ("t/0", 1), ("t/0", 2), ("t/1", 0), ("t/1", 1),
                         ("t/1", 2), ("t/0", 3), ("t/0", 4), ("t/0", 5)]


def test_a_killed_cascade_resumes_its_decisions_and_missing_target_samples(tmp_path):
    cfg = cascade()
    step = answers_by_question(agree={"1"})
    draft, target = engines(step)
    _, full = run(cfg, draft, target, tmp_path / "full", questions=3)
    # A session killed after t/0's decision and one of its target samples, and after t/1's
    # first samples were written but before its decision was.
    kept = [r for r in full if r["question_id"] == "t/1" or (r["sample_index"] < 4
            and r["question_id"] == "t/0")]
    folder = RunFolder(tmp_path / "killed")
    folder.prepare({"config": cfg.to_dict()})
    for row in kept:
        folder.append(row)
    first = decisions(tmp_path / "full")[0]
    folder.append_question(first)
    draft, target = engines(step)
    outcome, rows = run(cfg, draft, target, tmp_path / "killed", questions=3)
    assert sorted((r["question_id"], r["sample_index"]) for r in rows) == sorted(
        (r["question_id"], r["sample_index"]) for r in full)
    assert [d["question_id"] for d in decisions(tmp_path / "killed")] == ["t/0", "t/1", "t/2"]
    # Written now: t/0's two missing target samples and t/2's three first samples; t/0's and
    # t/1's first samples were there already, and t/1 was decided (kept) at the start.
    assert (outcome.written, outcome.skipped) == (2 + 3, 3 + 3)
    assert target.calls and all("Question 0?" in c.prompt for c in target.calls)
    for decision in decisions(tmp_path / "killed"):
        QuestionDecision.from_row(decision)  # every row reads back as a decision


def test_atts_cascade_runs_atts_first_and_target_only_after(tmp_path):
    cfg = cascade(strategy="atts_cascade", warmup=4, alpha=0.5)
    draft, target = engines(lambda call: f"s ppl={call.params.seed % 50 + 1}\\n\\n"
                            if "ppl=" not in call.prompt else
                            f"so \\boxed{{{call.params.seed % 7}}}\n\n")
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=2)
    first = [r for r in rows if not r["escalated"]]
    assert {r["strategy"] for r in first} == {"atts_cascade"}
    assert all(s["decision"] is not None for r in first for s in r["steps"]
               if s["author"] == "draft")
    assert len(decisions(tmp_path)) == 2
