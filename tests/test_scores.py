"""The nonconformity scores (atts.conformal.scores) on hand-computed log-probability vectors,
and their plumbing: config errors, banks that name their score, llr from the draft's own
log-probabilities, and the judge baseline on scripted engines."""

from __future__ import annotations

import json
import math

import pytest

from atts.config import ConfigError, RunConfig
from atts.conformal import ScoreMismatchError, load_bank, make_fingerprint, save_bank
from atts.conformal.scores import SCORES, score_label, step_score
from atts.engines.fake import FakeEngine
from atts.pipeline.rating import RATING_CUE, read_rating
from pipeline_helpers import config, engines, round_of, run

# Four tokens with surprisals 0.1, 0.2, 2.3 and 0.4 nat (the third is the "slip").
TARGET = [-0.1, -0.2, -2.3, -0.4]
DRAFT = [-0.05, -0.1, -0.3, -0.2]


def test_ppl_is_the_exponentiated_mean_surprisal():
    assert step_score("ppl", TARGET) == pytest.approx(math.exp(3.0 / 4))


def test_max_surprisal_is_the_least_likely_token():
    assert step_score("max_surprisal", TARGET) == pytest.approx(2.3)


def test_tail_mean_averages_the_k_largest_surprisals():
    assert step_score("tail_mean", TARGET, k=2) == pytest.approx((2.3 + 0.4) / 2)
    assert step_score("tail_mean", TARGET, k=1) == pytest.approx(2.3)
    # A step shorter than k: the mean of all its tokens.
    assert step_score("tail_mean", TARGET, k=10) == pytest.approx(3.0 / 4)


def test_llr_is_the_mean_draft_minus_target_log_probability():
    expected = ((-0.05 + 0.1) + (-0.1 + 0.2) + (-0.3 + 2.3) + (-0.2 + 0.4)) / 4
    assert step_score("llr", TARGET, DRAFT) == pytest.approx(expected)
    with pytest.raises(ValueError, match="draft's log-probabilities"):
        step_score("llr", TARGET)
    with pytest.raises(ValueError, match="same tokens"):
        step_score("llr", TARGET, DRAFT[:3])


def test_one_unlikely_token_moves_the_tail_scores_more_than_ppl():
    """Why the registry exists: a slip among 60 likely tokens barely changes the mean."""
    clean = [-0.1] * 60
    slip = [-0.1] * 59 + [-6.0]
    ppl_ratio = step_score("ppl", slip) / step_score("ppl", clean)
    assert ppl_ratio < 1.11
    assert step_score("max_surprisal", slip) / step_score("max_surprisal", clean) > 50
    assert step_score("tail_mean", slip) / step_score("tail_mean", clean) > 10


def test_unknown_score_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="choose one of ppl, max_surprisal, tail_mean, llr"):
        step_score("entropy", TARGET)
    with pytest.raises(ConfigError, match="invalid score: choose one of ppl"):
        RunConfig(score="entropy")
    with pytest.raises(ConfigError, match="score_k"):
        RunConfig(score_k=0)
    with pytest.raises(ConfigError, match="judge_threshold"):
        RunConfig(judge_threshold=10)
    with pytest.raises(ConfigError, match="remote engines do not return"):
        RunConfig(score="llr", engine="vllm", draft_url="http://a", target_url="http://b")
    assert SCORES == ("ppl", "max_surprisal", "tail_mean", "llr")


def test_a_bank_of_one_score_is_refused_for_another_even_forced(tmp_path):
    path = tmp_path / "bank.json"
    save_bank(path, [1.5, 2.0, 3.0], make_fingerprint(score=score_label("ppl"), draft="d"))
    assert load_bank(path, make_fingerprint(score="ppl", draft="d")).tolist() == [1.5, 2.0, 3.0]
    wanted = make_fingerprint(score=score_label("tail_mean", 8), draft="d")
    for force in (False, True):
        with pytest.raises(ScoreMismatchError, match=r"holds ppl scores.*--score tail_mean "
                                                      r"--set score_k=8"):
            load_bank(path, wanted, force=force)


def test_a_bank_written_before_scores_were_named_holds_perplexities(tmp_path):
    path = tmp_path / "old.json"
    save_bank(path, [1.5, 2.0], make_fingerprint(draft="d"))
    assert load_bank(path, make_fingerprint(score="ppl", draft="d")).tolist() == [1.5, 2.0]
    with pytest.raises(ScoreMismatchError, match="holds ppl scores"):
        load_bank(path, make_fingerprint(score="max_surprisal", draft="d"))


def test_llr_runs_take_the_draft_log_probabilities_from_its_generation(tmp_path):
    # The draft gives every token log-probability -0.5; the target scores "ppl=x" steps at
    # -log(x): llr = -0.5 + log(x).
    draft, target = engines(lambda call: f"step {round_of(call)} ppl=20\n\n")
    draft = FakeEngine("draft", step=draft._step, score=lambda call: -0.5)
    bank = tuple(float(v) for v in range(-20, 80))
    cfg = config(score="llr", rounds=2)
    _, rows = run(cfg, draft, target, tmp_path, bank=bank)
    drafted = [c for c in draft.calls if c.kind == "generate"]
    assert drafted and all(c.params is not None and c.params.logprobs for c in drafted)
    steps = [s for row in rows for s in row["steps"] if s["author"] == "draft"]
    assert steps and all(s["score"] == pytest.approx(-0.5 + math.log(20)) for s in steps)


def test_max_surprisal_runs_record_that_score(tmp_path):
    draft, target = engines(lambda call: f"step {round_of(call)} ppl=20\n\n")
    _, rows = run(config(score="max_surprisal", rounds=2), draft, target, tmp_path)
    steps = [s for row in rows for s in row["steps"] if s["author"] == "draft"]
    # The fake target gives every token the same log-probability -log(20).
    assert steps and all(s["score"] == pytest.approx(math.log(20)) for s in steps)
    assert not any(c.params and c.params.logprobs for c in draft.calls)


@pytest.mark.parametrize(("text", "rating"), [("7", 7), (" 9.", 9), ("[3]", 3), ("ok", None),
                                              ("", None), ("10", 1)])
def test_read_rating_takes_the_first_digit(text, rating):
    assert read_rating(text) == rating


def test_judge_keeps_steps_rated_at_or_above_the_threshold(tmp_path):
    """The scripted target rates a step by the digit its text carries; below 7 it rewrites."""

    def target_step(call):
        if call.prompt.endswith(RATING_CUE):
            step = call.prompt[: -len(RATING_CUE)].rstrip("\n").rsplit("\n\n", 1)[-1]
            return step.split("rate=")[1][0]
        return "target rewrites.\n\n"

    ratings = ["8", "3", "7"]
    draft, target = engines(lambda call: f"step rate={ratings[round_of_judge(call)]}\n\n",
                            target_step=target_step)
    _, rows = run(config(strategy="judge", rounds=3), draft, target, tmp_path)
    assert len(rows) == 4
    for row in rows:
        drafts = [s for s in row["steps"] if s["author"] == "draft"]
        assert [d["score"] for d in drafts] == [8.0, 3.0, 7.0]
        assert [d["decision"] for d in drafts] == ["accept", "regenerate", "accept"]
        assert [d["kept"] for d in drafts] == [True, False, True]
        authors = [s["author"] for s in row["steps"]]
        assert authors == ["draft", "draft", "target", "draft"]
        assert "rate=3" not in row["text"] and row["text"].count("target rewrites") == 1
        assert row["tokens"]["target_score"] > 0 and row["tokens"]["target_decode"] > 0
    assert json.dumps(rows)  # rows stay plain JSON


def round_of_judge(call) -> int:
    """Rounds so far in a judge sample: kept draft steps plus the target's rewrites."""
    return call.prompt.count("rate=") - call.prompt.count("rate=3") + call.prompt.count(
        "target rewrites")


def test_every_configuration_problem_is_named_at_once():
    """Issue 17: errors used to come one per run; now one line names them all."""
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping({"samples": 0, "alpha": 2.0, "score": "entropy", "rounds": 0})
    message = str(caught.value)
    assert "\n" not in message
    for key in ("invalid samples", "invalid alpha", "invalid score", "invalid rounds"):
        assert key in message, key
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping({"samples": "many", "alpha": "high"})
    assert "invalid samples" in str(caught.value) and "invalid alpha" in str(caught.value)
