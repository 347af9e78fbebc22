"""The `atts` command: flags, recipes and overrides, clear errors, resume, and a real run on the
tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from atts.cli.main import main
from atts.cli.run_cmd import config_from_args, register


def parse_run(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["run", *argv])


def test_import_atts_stays_light():
    code = (
        "import sys, atts, atts.conformal, atts.cli.main, atts.engines, atts.runner.session\n"
        "heavy = [m for m in ('torch', 'llama_cpp', 'transformers', 'matplotlib', 'httpx')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_precedence_defaults_recipe_set_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("alpha: 0.3\nsamples: 8\nrounds: 5\n")
    args = parse_run(["--recipe", str(recipe), "--set", "samples=6", "--set", "rounds=7",
                      "--rounds", "9", "--out", "x"])
    config = config_from_args(args)
    assert (config.alpha, config.samples, config.rounds) == (0.3, 6, 9)
    assert config.draft_tokens == 160  # untouched default


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--alpha", "1.5"], "invalid alpha: must lie in (0, 1)"),
        (["--alpha", "0.1", "--alpha-discard", "0.2"], "alpha_discard"),
        (["--strategy", "magic"], "choose one of atts, sync, target_only, draft_only"),
        (["--set", "nonsense=1"], "unknown configuration key(s): nonsense"),
        (["--samples", "two"], "cannot read 'two'"),
        (["--dataset", "nope"], "nope"),
        (["--alpha", "0.1", "--calibration-m", "4"], "needs at least 10 calibration steps"),
        (["--calibration", "file"], "--calibration-file"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, capsys, argv, message):
    code = main(["run", "--engine", "fake", "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_run_report_and_resume_with_the_fake_engine(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--engine", "fake", "--limit", "2", "--samples", "4", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["answer"] == "42" for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["samples"] == 4 and manifest["engines"]["draft"]["backend"] == "fake"
    capsys.readouterr()
    assert main(argv) == 0  # resume: nothing left to do
    assert "0 samples finished now, 8 already in" in capsys.readouterr().err
    assert main([*argv, "--alpha", "0.3"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_a_real_run_on_the_tiny_model(tmp_path, tiny_model):
    """End to end on SmolLM2-135M as both draft and target (the same weights, two roles)."""
    out = tmp_path / "tiny"
    code = main([
        "run", "--draft", "smollm2-135m", "--target", "smollm2-135m", "--limit", "1",
        "--samples", "4", "--rounds", "2", "--draft-tokens", "24", "--target-tokens", "24",
        "--max-active-samples", "4", "--out", str(out), "--no-progress", "--no-report",
    ])
    assert code == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        judged = [s for s in row["steps"] if s["author"] == "draft" and s["score"] is not None]
        assert judged and all(s["score"] > 1.0 and 0 < s["p_value"] <= 1 for s in judged)
        assert row["tokens"]["target_score"] == sum(s["tokens"] for s in judged)


def test_calibrate_then_run_from_the_bank_file_checks_its_fingerprint(tmp_path, capsys):
    bank = tmp_path / "bank.json"
    assert main(["calibrate", "--engine", "fake", "--pool", "gsm8k_train", "--pool-limit", "12",
                 "--out", str(bank), "--no-progress"]) == 0
    saved = json.loads(bank.read_text())
    assert saved["count"] == 12 and set(saved["fingerprint"]) >= {"draft", "target", "step"}
    run = ["run", "--engine", "fake", "--limit", "1", "--samples", "2", "--calibration", "file",
           "--calibration-file", str(bank), "--no-progress", "--no-report"]
    assert main([*run, "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    # Other step settings than the bank was made with: refused, unless forced.
    assert main([*run, "--draft-tokens", "99", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "step" in err and "--force-bank" in err
    with pytest.warns(UserWarning):
        code = main([*run, "--draft-tokens", "99", "--force-bank", "--out", str(tmp_path / "c")])
    assert code == 0
    assert main(["calibrate", "--engine", "fake", "--pool", "gsm8k", "--out", str(bank)]) == 2
    assert "is a test set" in capsys.readouterr().err
