"""The ATTS loop on scripted engines: who writes which step, and when a sample stops.

The bank is the scores 1..99 (n = 99), so a draft step of perplexity x has the p-value
``p = (1 + #{b >= x}) / 100`` (docs/METHOD.md section 3): x = 50 -> 0.51, x = 95 -> 0.06,
x = 99 -> 0.02, x = 500 -> 0.01.
"""

from __future__ import annotations

import pytest

from atts.config import RunConfig
from atts.conformal import classify
from pipeline_helpers import config, engines, round_of, run


def p_of(ppl: float) -> float:
    return (1 + sum(1 for b in range(1, 100) if b >= ppl)) / 100


def cycling(values: list[float], final: str | None = None):
    """A draft that writes steps of the given perplexities in turn (per sample, by round)."""

    def step(call):
        round_index = round_of(call)
        if final is not None and round_index >= len(values):
            return final
        return f"step {round_index} ppl={values[round_index % len(values)]}\n\n"

    return step


def test_target_intervenes_exactly_where_p_is_at_or_below_alpha(tmp_path):
    cfg = config(alpha=0.1, alpha_discard=0.03, rounds=4)
    draft, target = engines(cycling([50, 95, 99, 500]))
    _, rows = run(cfg, draft, target, tmp_path)
    assert len(rows) == 4
    for row in rows:
        steps = row["steps"]
        drafts = [s for s in steps if s["author"] == "draft"]
        assert [d["decision"] for d in drafts] == ["accept", "continue", "regenerate", "regenerate"]
        for d in drafts:
            assert d["p_value"] == pytest.approx(p_of(d["score"]))
            assert classify(d["p_value"], 0.1, 0.03).value == d["decision"]
        # The target writes right after each rejected draft step, and only there.
        for i, s in enumerate(steps):
            if s["author"] == "target":
                assert steps[i - 1]["author"] == "draft"
                assert steps[i - 1]["decision"] in ("continue", "regenerate")
        for i, s in enumerate(steps):
            if s["author"] == "draft" and s["decision"] != "accept":
                assert steps[i + 1]["author"] == "target"
        # A continued step stays in the text; a regenerated one does not.
        assert "ppl=95" in row["text"] and "ppl=99" not in row["text"]
        assert [d["kept"] for d in drafts] == [True, True, False, False]


@pytest.mark.parametrize(("alpha", "expected"), [(0.99, "continue"), (0.011, "accept")])
def test_alpha_near_one_rejects_every_step_and_near_zero_none(tmp_path, alpha, expected):
    cfg = config(alpha=alpha, rounds=3)
    draft, target = engines(cycling([2, 50, 98]))
    _, rows = run(cfg, draft, target, tmp_path)
    decisions = {s["decision"] for r in rows for s in r["steps"] if s["author"] == "draft"}
    assert decisions == {expected}
    target_steps = sum(s["author"] == "target" for r in rows for s in r["steps"])
    assert target_steps == (12 if expected == "continue" else 0)  # 4 samples x 3 rounds


def test_loop_stops_at_the_first_final_answer(tmp_path):
    cfg = config(rounds=10)
    draft, target = engines(cycling([50, 50], final="So \\boxed{7}.\n\n"))
    _, rows = run(cfg, draft, target, tmp_path)
    for row in rows:
        assert row["answer"] == "7"
        assert row["rounds"] == 3
        assert len(row["steps"]) == 3
        assert row["stop"] == "answer"


def test_loop_honours_T_and_forces_an_answer(tmp_path):
    cfg = config(rounds=4, force_answer="target")

    def target_step(call):
        return "12} because.\n" if call.prompt.endswith("\\boxed{") else "target continues.\n\n"

    draft, target = engines(cycling([50]), target_step=target_step)
    _, rows = run(cfg, draft, target, tmp_path)
    for row in rows:
        assert row["rounds"] == 4
        assert sum(s["author"] == "draft" for s in row["steps"]) == 4
        assert row["steps"][-1]["kind"] == "forced_answer"
        assert row["answer"] == "12"
        assert row["stop"] == "rounds"


def test_min_rounds_appends_wait_and_goes_on(tmp_path):
    cfg = config(rounds=6, min_rounds=3)
    draft, target = engines(lambda call: "So \\boxed{5}. ppl=10\n\n")
    _, rows = run(cfg, draft, target, tmp_path)
    for row in rows:
        assert row["rounds"] == 3
        kinds = [s["kind"] for s in row["steps"]]
        assert kinds == ["step", "wait", "step", "wait", "step"]
        assert row["answer"] == "5"


def test_target_only_and_draft_only_use_one_model(tmp_path):
    """Forced answers included (force_answer=auto): a draft-only baseline never calls the
    target, a target-only one never calls the draft."""
    for strategy, author in (("target_only", "target"), ("draft_only", "draft")):
        cfg = config(strategy=strategy, rounds=2, force_answer="auto")
        draft, target = engines(cycling([50]))
        _, rows = run(cfg, draft, target, tmp_path / strategy)
        authors = {s["author"] for r in rows for s in r["steps"]}
        assert authors == {author}
        assert all(r["steps"][-1]["kind"] == "forced_answer" for r in rows)
        assert all(s["decision"] is None for r in rows for s in r["steps"])
        unused = target if author == "draft" else draft
        assert unused.calls == []


def test_token_counts_and_trace_fields(tmp_path):
    cfg = config(alpha=0.1, alpha_discard=0.0, rounds=2)
    draft, target = engines(cycling([50, 95]))
    _, rows = run(cfg, draft, target, tmp_path)
    row = rows[0]
    drafted = sum(s["tokens"] for s in row["steps"] if s["author"] == "draft")
    targeted = sum(s["tokens"] for s in row["steps"] if s["author"] == "target")
    assert row["tokens"] == {
        "draft_decode": drafted, "target_decode": targeted, "target_score": drafted,
    }
    assert set(row) >= {
        "question_id", "sample_index", "answer", "steps", "seed", "status", "gold", "seconds",
    }
    assert row["status"] == "ok" and row["error"] is None


def test_an_eos_step_ends_the_sample_and_is_reopened_for_wait_and_forced_answers(tmp_path):
    from atts.engines.fake import EOS_ID

    cfg = config(rounds=5, min_rounds=2, force_answer="target")

    def target_step(call):
        return "9}\n" if call.prompt.endswith("\\boxed{") else "target continues.\n\n"

    draft, target = engines(lambda call: "I am done. ppl=10<|im_end|>", target_step=target_step)
    _, rows = run(cfg, draft, target, tmp_path, questions=1)
    for row in rows:
        # Round 1 ends the message before min_rounds: "Wait" goes on; round 2 ends it again,
        # with no answer: the answer is forced after the EOS is dropped.
        assert [s["kind"] for s in row["steps"]] == ["step", "wait", "step", "forced_answer"]
        assert row["rounds"] == 2 and row["answer"] == "9"
        assert row["stop"] == "eos"
    # The EOS id is scored with its step, but never stays inside a prompt that goes on.
    scored = [c for c in target.calls if c.kind == "score"]
    assert scored and all(c.step.endswith("ppl=10") for c in scored)
    assert all(EOS_ID not in c.prompt_ids for c in draft.calls + target.calls)


def test_each_ended_sample_releases_its_text_and_steps_record_their_prefill(tmp_path):
    cfg = config(alpha=0.1, alpha_discard=0.0, rounds=2)
    draft, target = engines(cycling([50, 95]))
    _, rows = run(cfg, draft, target, tmp_path)
    # One release per sample and engine, with the sample's whole text (Engine.release).
    assert len(draft.released) == len(target.released) == len(rows) == 4
    texts = sorted(draft.detokenize(ids) for ids in draft.released)
    assert texts == sorted(target.detokenize(ids) for ids in target.released)
    assert all(any(t.endswith(row["text"]) for t in texts) for row in rows)
    # The fake engine caches nothing when generating and everything when scoring, so a draft
    # step's prefill is its generation prompt, and a target step's its own prompt.
    prompts = {call.prompt_ids: len(call.prompt_ids) for call in draft.calls + target.calls
               if call.kind == "generate"}
    for row in rows:
        for step in row["steps"]:
            assert step["prefill_tokens"] in prompts.values()
    assert all(s["prefill_tokens"] > 0 for row in rows for s in row["steps"])


def test_a_sample_stops_before_a_round_that_might_not_fit_the_context(tmp_path):
    from atts.engines.fake import FakeEngine

    cfg = config(rounds=10, draft_tokens=40, target_tokens=40, force_answer="target")
    draft, target = engines(cycling([50]), target_step=lambda call: "3}\n")
    # A prompt of about 250 characters (one token each), 15-character steps, and a round
    # needing 80 tokens of room plus the forced answer's reserve: 9 rounds fit in 500.
    small = FakeEngine("target", step=target._step, score=target._score, context_length=500)
    _, rows = run(cfg, draft, small, tmp_path, questions=1)
    for row in rows:
        assert row["stop"] == "context" and 0 < row["rounds"] < 10
        assert row["steps"][-1]["kind"] == "forced_answer" and row["answer"] == "3"


def test_the_strategy_registry_is_the_one_list_of_strategies():
    from atts.config import STRATEGIES as NAMES
    from atts.pipeline.strategies import STRATEGIES

    assert set(STRATEGIES) == set(NAMES)  # config validates names without importing pipeline
    assert [s.name for s in STRATEGIES.values() if s.calibrated] == ["atts", "atts_cascade"]
    assert [s.name for s in STRATEGIES.values() if s.barrier] == ["sync"]
    assert [s.name for s in STRATEGIES.values() if s.escalates] == ["cascade", "atts_cascade"]


@pytest.mark.parametrize("strategy", ["target_only", "judge", "sync"])
def test_strategies_that_do_not_calibrate_draft_no_warmup(tmp_path, strategy):
    """Only a calibrated strategy builds a calibrator: under a pooled calibration a baseline
    used to pre-draft warm-up first steps (and target_only would have called the draft)."""
    cfg = config(strategy=strategy, calibration="adaptive", calibration_file=None, warmup=8,
                 alpha=0.25, rounds=2)
    draft, target = engines(cycling([50]))
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=2)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    if strategy == "target_only":
        assert draft.calls == []
    assert not any(s.get("calibration") for r in rows for s in r["steps"])


def test_a_null_alpha_discard_regenerates_every_rejected_step_at_any_alpha(tmp_path):
    cfg = config(alpha=0.1, alpha_discard=None, rounds=4)
    assert cfg.discard_level == 0.1
    draft, target = engines(cycling([50, 95, 99, 500]))
    _, rows = run(cfg, draft, target, tmp_path)
    for row in rows:
        drafts = [s for s in row["steps"] if s["author"] == "draft"]
        assert [d["decision"] for d in drafts] == ["accept", "regenerate", "regenerate",
                                                   "regenerate"]
    assert RunConfig(alpha=0.4, alpha_discard=None).discard_level == 0.4


def test_a_row_reads_back_as_the_trace_that_wrote_it_and_old_rows_read_too():
    """SampleTrace.from_row is to_row's inverse; Step.judged / rejected define the rate."""
    from atts.pipeline.trace import SampleTrace, Step, TokenCounts, rejection_counts

    steps = (Step(0, "draft", "a\n\n", 3, score=2.5, p_value=0.2, decision="accept", t=0.1),
             Step(1, "draft", "b\n\n", 3, kept=False, score=9.0, p_value=0.01,
                  decision="regenerate", t=0.3),
             Step(1, "target", "c\n\n", 3, t=0.5))
    trace = SampleTrace("q/1", "q", 0, 7, "atts", "What?", "5", "ok", "5", "a\n\nc\n\n", 2,
                        steps, tokens=TokenCounts(6, 3, 6), stop="answer")
    row = {**trace.to_row(), "correct": True}  # a graded row carries more keys
    assert SampleTrace.from_row(row) == trace
    assert rejection_counts(trace.steps) == (1, 2)
    assert [s.judged for s in steps] == [True, True, False]
    old = trace.to_row()
    del old["question"], old["stop"]
    for step in old["steps"]:
        del step["t"], step["prefill_tokens"]
    back = SampleTrace.from_row(old)
    assert back.question == "" and back.stop is None and back.steps[0].t is None


def test_counters_follow_from_the_steps():
    from atts.pipeline.trace import Step, step_counters

    steps = [
        Step(0, "draft", "a", 10, decision="regenerate", kept=False, seconds=3.0,
             score_tokens=10, score_seconds=0.5),
        Step(0, "target", "b", 12, seconds=4.0),
        Step(1, "draft", "c", 6, decision="accept", seconds=2.0, score_tokens=9,
             score_seconds=1.0, rating_tokens=2),  # the judge: step and cue read, 2 written
        Step(1, "target", "\n\nWait", 5, kind="wait"),  # appended, not decoded
        Step(2, "draft", "d", 7, kind="forced_answer", seconds=1.5),
    ]
    tokens, seconds = step_counters(steps, wall=20.0)
    assert (tokens.draft_decode, tokens.target_decode, tokens.target_score) == (23, 14, 19)
    assert (seconds.draft, seconds.score, seconds.target, seconds.wall) == pytest.approx(
        (2.5 + 1.0 + 1.5, 1.5, 4.0, 20.0))


@pytest.mark.parametrize("strategy", ["atts", "sync", "judge", "target_only", "draft_only"])
def test_every_strategy_counts_each_token_once(tmp_path, strategy):
    cfg = config(strategy=strategy, rounds=3, alpha=0.25)
    draft, target = engines(cycling([50, 500, 99]))
    _, rows = run(cfg, draft, target, tmp_path)
    for row in rows:
        steps = row["steps"]
        decoded = {"draft": 0, "target": 0}
        for s in steps:
            if s["kind"] != "wait":
                decoded[s["author"]] += s["tokens"]
        assert row["tokens"]["draft_decode"] == decoded["draft"]
        assert row["tokens"]["target_decode"] == decoded["target"] + sum(
            s["rating_tokens"] for s in steps)
        assert row["tokens"]["target_score"] == sum(s["score_tokens"] for s in steps)
        if strategy in ("atts", "sync"):  # the target scores every drafted token
            assert row["tokens"]["target_score"] == sum(
                s["tokens"] for s in steps if s["author"] == "draft" and s["kind"] == "step")
