"""`atts replay FIRST --escalate-to TARGET`: the cascade replayed over two recorded runs.

The fixture (tests/fixtures/cascade) is eight GSM8K questions of two recorded runs of ours
(draft-only and target-only, N = 4, texts cut short).  Expected values are computed here from
the rows, independently of the replay: the questions ordered by their last first sample, the
disagreement of their normalised answers, and the deterministic conformal p-values of the
escalation warm-up (leave-one-out) and of the online bank after it."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from atts.cli.main import main
from atts.grading.normalize import normalize_answer
from atts.replay.escalation import cascade_replay
from atts.report.graded_run import load_run
from pipeline_helpers import config, engines, run

FIXTURE = Path(__file__).parent / "fixtures" / "cascade"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURE / name / "samples.jsonl").read_text()
            .splitlines()]


def grades(name: str) -> dict[tuple[str, str], bool]:
    data = json.loads((FIXTURE / name / "grades.json").read_text())
    return {(a, g): c for a, g, _, c in data["grades"]}


def expected_escalations(alpha: float, warmup: int) -> list[str]:
    """The deterministic decisions, computed from the draft rows alone."""
    draft = rows("draft")
    questions = sorted({r["question_id"] for r in draft},
                       key=lambda q: max(r["finished_at"] for r in draft
                                         if r["question_id"] == q))
    scores = []
    for q in questions:
        answers = [normalize_answer(r["answer"], "gsm8k") if r["answer"] else None
                   for r in draft if r["question_id"] == q]
        top = max(Counter(a for a in answers if a).values(), default=0)
        scores.append(1 - top / len(answers))
    escalated = []
    for i, (q, s) in enumerate(zip(questions, scores, strict=True)):
        # The warm-up leave-one-out against the rest of it; later ones online, against all
        # the questions before them.
        others = ([x for j, x in enumerate(scores[:warmup]) if j != i] if i < warmup
                  else scores[:i])
        p = (1 + sum(x >= s for x in others)) / (len(others) + 1)
        if p <= alpha:
            escalated.append(q)
    return escalated


def pass1(name: str, question: str) -> float:
    verdicts = grades(name)
    group = [r for r in rows(name) if r["question_id"] == question]
    return sum(bool(r["answer"]) and verdicts.get((r["answer"], r["gold"]), False)
               for r in group) / len(group)


@pytest.fixture()
def fixture_runs(tmp_path):
    copy = tmp_path / "cascade"
    shutil.copytree(FIXTURE, copy)  # load_run may write grades.json: never into the repo
    return load_run(copy / "draft"), load_run(copy / "target")


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.6, 0.8])
def test_the_replay_is_the_cascade_the_rows_imply(fixture_runs, alpha):
    first, target = fixture_runs
    replay = cascade_replay(first, target, [alpha], {"escalate_pvalue": "deterministic",
                                                     "escalate_warmup": 3})
    (point,) = replay.points
    # The warm-up is raised to what alpha needs: n + 1 >= 1/alpha with the question left out.
    escalated = expected_escalations(alpha, warmup=max(3, math.ceil(1 / alpha)))
    assert list(point.escalated_ids) == escalated
    questions = sorted({r["question_id"] for r in rows("draft")})
    expected = [pass1("target" if q in escalated else "draft", q) for q in questions]
    assert point.pass_at_1.estimate == pytest.approx(sum(expected) / len(expected))
    target_mean = sum(pass1("target", q) for q in questions) / len(questions)
    assert point.delta_pass_at_1.estimate == pytest.approx(point.pass_at_1.estimate
                                                           - target_mean)


def test_the_cost_is_the_first_run_plus_the_escalated_share_of_the_target_run(fixture_runs):
    first, target = fixture_runs
    (point,) = cascade_replay(first, target, [0.6], {"escalate_pvalue": "deterministic"}).points
    seconds = {}
    for r in rows("target"):
        seconds[r["question_id"]] = seconds.get(r["question_id"], 0.0) + (
            r["finished_at"] - r["started_at"])
    share = sum(seconds[q] for q in point.escalated_ids) / sum(seconds.values())
    assert point.cost == pytest.approx((first.wall_seconds + target.wall_seconds * share)
                                       / target.wall_seconds)


def test_a_live_cascade_takes_the_decisions_and_accuracy_its_replay_predicts(tmp_path):
    """The cascade's target samples are seeded as target-only's, so a cascade run and the
    replay of its first samples against a target-only run agree exactly (scripted engines)."""
    def draft_step(call):
        return f"so \\boxed{{{call.params.seed % 3}}}\n\n"  # 3 answers: votes split or agree

    def target_step(call):
        return f"so \\boxed{{{call.params.seed % 2 + 40}}}\n\n"

    settings = dict(calibration="adaptive", calibration_file=None, samples=3, rounds=2,
                    escalate_alpha=0.5, escalate_warmup=3)
    draft, target = engines(draft_step, target_step=target_step)
    run(config(strategy="cascade", **settings), draft, target, tmp_path / "cascade",
        questions=10)
    draft, target = engines(draft_step, target_step=target_step)
    run(config(strategy="target_only", **settings), draft, target, tmp_path / "target",
        questions=10)
    live, target_run = load_run(tmp_path / "cascade"), load_run(tmp_path / "target")
    (point,) = cascade_replay(live, target_run, [0.5]).points
    decided = [json.loads(line) for line in
               (tmp_path / "cascade" / "questions.jsonl").read_text().splitlines()]
    assert set(point.escalated_ids) == {d["question_id"] for d in decided if d["escalated"]}
    from atts.report.metrics import accuracy

    assert accuracy(live.rows).pass_at_1 == pytest.approx(point.pass_at_1.estimate)
    escalated = [r for r in live.rows if r.get("escalated")]
    by_key = {(r["question_id"], r["sample_index"]): r["answer"] for r in target_run.rows}
    assert escalated and all(r["answer"] == by_key[(r["question_id"], r["sample_index"] - 3)]
                             for r in escalated)


def write_run(folder: Path, keep: list[dict]) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(FIXTURE / "target" / "manifest.json", folder / "manifest.json")
    shutil.copy(FIXTURE / "target" / "grades.json", folder / "grades.json")
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    return folder


@pytest.mark.parametrize(("change", "words"), [
    (lambda rs: [r for r in rs if r["question_id"] != "gsm8k/3"],
     "hold different questions: 1 only in the first, 0 only in the target run (e.g. gsm8k/3)"),
    (lambda rs: [r for r in rs if r["sample_index"] < 2], "has [4] samples per question"),
    (lambda rs: [dict(r, status="error", answer=None) for r in rs], "holds no finished sample"),
])
def test_runs_that_cannot_pair_get_one_line_naming_the_difference(tmp_path, capsys, change,
                                                                   words):
    target = write_run(tmp_path / "target", change(rows("target")))
    if "no finished" in words:  # the first run is the one without finished samples
        first, target = target, FIXTURE / "target"
    else:
        first = FIXTURE / "draft"
    copy = tmp_path / "first"
    shutil.copytree(first, copy)
    code = main(["replay", str(copy), "--escalate-to", str(target)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert words in err


def test_the_cli_prints_one_json_object_per_alpha_and_a_plot(tmp_path, capsys):
    shutil.copytree(FIXTURE, tmp_path / "c")
    plot = tmp_path / "curve.png"
    assert main(["replay", str(tmp_path / "c" / "draft"), "--escalate-to",
                 str(tmp_path / "c" / "target"), "--alpha", "0.3", "0.7", "--json",
                 "--plot", str(plot), "--certify", "0.1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["alpha"] for line in lines[:2]] == [0.3, 0.7]
    for key in ("questions", "escalated", "pass@1", "target_pass@1", "cost"):
        assert key in lines[0]
    assert "too few questions: 8" in lines[2]["certify"]["reason"]
    from matplotlib.image import imread

    image = imread(plot)
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05  # drawn, not blank


def test_step_only_flags_are_refused_in_a_question_replay_and_vice_versa(capsys):
    assert main(["replay", str(FIXTURE / "draft"), "--plot", "x.png"]) == 2
    assert "--plot needs --escalate-to" in capsys.readouterr().err
    assert main(["replay", str(FIXTURE / "draft"), "--escalate-to", str(FIXTURE / "target"),
                 "--calibration", "marginal"]) == 2
    assert "--calibration is a step setting" in capsys.readouterr().err
