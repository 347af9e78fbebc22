"""`atts replay`: a replay under a run's own settings takes the run's decisions, exactly.

Recorded runs of the real pair (runs/bench, question mode: order-free) and FakeEngine runs of
every mode (order-dependent online banks and adaptive levels, ordered by the new ``t``) are
replayed and compared step by step, p-values included.  Then the table, the JSON shape and the
one-line errors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from atts.cli.main import main
from atts.replay import read_run, replay_config, replay_paths, replay_run
from atts.report.metrics import clopper_pearson
from pipeline_helpers import config, engines, run

BENCH = Path(__file__).resolve().parents[1] / "runs" / "bench" / "gsm8k-6q-n4"
QUESTION_RUNS = sorted(p for p in BENCH.glob("atts-a0.25-question-*/rep*") if p.is_dir()) + sorted(
    BENCH.glob("atts-a0.4-question-*/rep*")
)


def seeded_ppl(call) -> str:
    return f"s ppl={(call.params.seed % 50) + 1}\n\n"


def jitter(call) -> float:
    seed = call.params.seed if call.params is not None else call.step
    return random.Random(f"{seed}/{call.prompt}").uniform(0.001, 0.004)


def fake_run(tmp_path: Path, **changes: object) -> Path:
    cfg = config(**{"calibration_file": None, "samples": 4, "rounds": 4, "alpha": 0.25,
                    **changes})
    draft, target = engines(seeded_ppl, draft_delay=jitter, target_delay=jitter)
    run(cfg, draft, target, tmp_path, bank=(), questions=4)
    return tmp_path


def assert_reproduced(path: Path) -> int:
    recorded = read_run(path)
    replayed = replay_run(recorded, replay_config(recorded, {}))
    assert len(replayed) == len(recorded.steps)
    for r in replayed:
        assert r.decision.value == r.step.decision, r.step
        assert r.p_value == r.step.p_value, r.step
    return len(replayed)


@pytest.mark.parametrize("path", QUESTION_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay_reproduces_recorded_runs_of_the_real_pair_exactly(path):
    assert assert_reproduced(path) >= 100


@pytest.mark.parametrize(
    "changes",
    [
        dict(calibration="question", calibration_m=4),
        dict(calibration="question", calibration_m=4, grow_bank=True, alpha_discard=0.1),
        dict(calibration="marginal", warmup=6),
        dict(calibration="marginal", warmup=6, strata="round"),
        dict(calibration="marginal", warmup=6, strata="question_round"),
        dict(calibration="adaptive", warmup=6, adaptive_gamma=0.05),
        dict(calibration="adaptive", warmup=6, strata="round", pvalue="smoothed"),
        dict(calibration="question", calibration_m=4, pvalue="smoothed", alpha_discard=0.25),
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_replay_reproduces_a_run_under_its_own_settings_exactly(tmp_path, changes):
    assert assert_reproduced(fake_run(tmp_path, **changes)) >= 32


def test_every_step_records_when_it_was_decided(tmp_path):
    rows = json.loads("[" + ",".join(
        (fake_run(tmp_path, calibration="marginal", warmup=6) / "samples.jsonl")
        .read_text().splitlines()) + "]")
    for row in rows:
        times = [step["t"] for step in row["steps"]]
        assert all(t is not None and t >= 0 for t in times)
        assert times == sorted(times)
        assert times[-1] <= row["seconds"]["wall"]


def test_rows_without_t_fall_back_to_the_summed_seconds(tmp_path):
    row = {"question_id": "q", "sample_index": 0, "started_at": 100.0, "steps": [
        {"round": 0, "author": "draft", "kind": "step", "score": 2.0, "seconds": 1.5},
        {"round": 0, "author": "target", "kind": "step", "score": None, "seconds": 0.5},
        {"round": 1, "author": "draft", "kind": "step", "score": 3.0, "seconds": 2.0},
    ]}
    (tmp_path / "samples.jsonl").write_text(json.dumps(row) + "\n")
    steps = read_run(tmp_path).steps
    assert [s.at for s in steps] == [101.5, 104.0]
    assert [s.first for s in steps] == [True, False]


def test_json_has_exactly_the_documented_keys(tmp_path, capsys):
    path = fake_run(tmp_path, calibration="question", calibration_m=4)
    assert main(["replay", str(path), "--json", "--calibration", "adaptive"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"alpha", "calibration", "judged", "rejected", "rate", "ci95", "rounds"}
    assert out["calibration"] == "adaptive"
    assert set(out["rounds"]) == {"0", "1", "2", "3"}
    for entry in out["rounds"].values():
        assert set(entry) == {"judged", "rejected", "rate", "ci95"}
    assert sum(e["judged"] for e in out["rounds"].values()) == out["judged"]
    assert out["ci95"] == list(clopper_pearson(out["rejected"], out["judged"]))


def test_text_table_has_round_buckets_band_and_control_accuracy(tmp_path, capsys):
    path = fake_run(tmp_path, calibration="question", calibration_m=4)
    assert main(["replay", str(path), str(path / "samples.jsonl")]) == 0
    text = capsys.readouterr().out
    for needle in ("overall", "round 0", "round 3+", "band [0.050, 0.250]", "control accuracy",
                   "2 run(s)"):
        assert needle in text


def test_clopper_pearson_matches_scipy():
    from scipy import stats  # a dev dependency: a missing scipy fails here, not skips
    for x, n in ((0, 10), (3, 10), (47, 133), (133, 133)):
        low, high = clopper_pearson(x, n)
        assert low == pytest.approx(0.0 if x == 0 else stats.beta.ppf(0.025, x, n - x + 1))
        assert high == pytest.approx(1.0 if x == n else stats.beta.ppf(0.975, x + 1, n - x))


def test_bad_input_is_one_line_naming_the_file_line_or_setting(tmp_path, capsys):
    good = {"question_id": "q", "sample_index": 0, "started_at": 1.0, "steps": []}
    bad = {"question_id": "q", "sample_index": 1, "steps": []}
    (tmp_path / "samples.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert main(["replay", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "samples.jsonl:2" in err and "started_at" in err

    (tmp_path / "samples.jsonl").write_text(json.dumps(good) + "\n")
    assert main(["replay", str(tmp_path)]) == 2
    assert "no scored draft steps" in capsys.readouterr().err

    path = fake_run(tmp_path / "run", calibration="question", calibration_m=4)
    assert main(["replay", str(path), "--calibration", "bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "calibration" in err and "adaptive" in err


def test_runs_that_differ_in_alpha_need_an_explicit_alpha(tmp_path):
    a = fake_run(tmp_path / "a", calibration="question", calibration_m=4)
    b = fake_run(tmp_path / "b", calibration="question", calibration_m=4, alpha=0.4)
    with pytest.raises(ValueError, match="--alpha"):
        replay_paths([a, b], {})
    summary, _ = replay_paths([a, b], {"alpha": 0.25})
    assert summary.runs == 2


def test_a_folder_written_before_the_new_calibration_settings_still_resumes(tmp_path):
    from atts.runner.run_folder import ADDED_DEFAULTS, RunFolder, _config_differences

    cfg = config(calibration="question", calibration_file=None, calibration_m=4, alpha=0.25)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ADDED_DEFAULTS}
    assert {"pvalue", "adaptive_gamma", "escalate_alpha", "escalate_warmup"} <= set(cfg.to_dict())
    assert _config_differences(old, cfg.to_dict()) == []
    RunFolder(tmp_path).prepare({"config": old})
    RunFolder(tmp_path).append({"question_id": "q", "sample_index": 0})  # a run to resume
    RunFolder(tmp_path).prepare({"config": cfg.to_dict()})  # no "different configuration"
    assert RunFolder(tmp_path).read_manifest()["config"] == old  # the recorded one stays
    changed = {**cfg.to_dict(), "escalate_alpha": 0.3}  # an added key set otherwise does differ
    assert _config_differences(old, changed) == ["escalate_alpha: 0.7 -> 0.3"]
