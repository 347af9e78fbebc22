"""Bad input meets the newer commands (issue 32's sweep, as a table): each case gets one clear
line naming the problem, the right exit code (2: the user's input; 1: the machine or an
engine), no traceback, and nothing written that a corrected command would trip over."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from atts.cli.main import main

FIXTURE = Path(__file__).parent / "fixtures" / "cascade"


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "caf\xe9?", "answer": "1"}\n')
    (tmp_path / "latin1.yaml").write_bytes(b"alpha: 0.3\n# caf\xe9\n")
    (tmp_path / "replaced.yaml").write_text("samples: abc\nalpha: 7\nengine: vllm\n")
    (tmp_path / "folder").mkdir()
    return {name.replace(".", "_"): str(tmp_path / name) for name in
            ("empty.jsonl", "latin1.jsonl", "latin1.yaml", "replaced.yaml", "folder", "out")}


# (command with {file} placeholders, exit code, words the one line must hold)
CASES = [
    (["simulate", "paper", "--samples", "0"], 2, "--samples: must lie in [1, 100,000], got 0"),
    (["simulate", "bound", "--batch", "0"], 2, "--batch: must lie in [1, 100,000], got 0"),
    (["simulate", "bound", "--draft-decode", "nan"], 2, "--draft-decode: must be a finite"),
    (["simulate", "bound", "--target-score", "-1"], 2, "must be a finite number of seconds"),
    (["simulate", "run", "--max-active", "0"], 2, "--max-active: must lie in [1, 100,000]"),
    (["simulate", "run", "--samples", "10000000"], 2, "--samples: must lie in [1, 100,000]"),
    (["simulate", "run", "--stop", "2"], 2, "--stop: must be a number in [0, 1], got 2"),
    (["serve", "--engine", "fake", "--api-key", ""], 2, "the API key is empty"),
    (["serve", "--engine", "fake", "--alpha", "abc"], 2, "invalid alpha: cannot read 'abc'"),
    (["serve", "--engine", "fake", "--host", "nosuch.invalid"], 2,
     "--host 'nosuch.invalid' is not an address of this machine"),
    (["serve", "--engine", "fake", "--set", "strategy=sync"], 2, "drop strategy='sync'"),
    (["serve", "--engine", "fake", "--set", "calibration=question"], 2,
     "drop calibration='question'"),
    (["run", "--engine", "fake", "--dataset", "jsonl:{empty_jsonl}", "--out", "{out}"], 2,
     "gives no problems to run"),
    (["run", "--engine", "fake", "--dataset", "jsonl:{latin1_jsonl}", "--out", "{out}"], 2,
     "latin1.jsonl:1: not UTF-8 text"),
    (["run", "--engine", "fake", "--recipe", "{latin1_yaml}", "--out", "{out}"], 2,
     "latin1.yaml:2: not UTF-8 text"),
    (["run", "--engine", "fake", "--warmup", "100000", "--out", "{out}"], 2,
     "invalid warmup: must lie in [1, 4096]"),
    (["run", "--engine", "fake", "--escalate-alpha", "1.5", "--out", "{out}"], 2,
     "invalid escalate_alpha: must lie in (0, 1)"),
    (["calibrate", "--engine", "fake", "--out", "{folder}"], 2, "is a directory; give the bank"),
    # A bad value that a later setting replaces is still refused (engine: vllm alone lacks its
    # URLs, which is no fault of that value, so it passes).
    (["run", "--engine", "fake", "--recipe", "{replaced_yaml}", "--samples", "2", "--alpha",
      "0.3", "--out", "{out}"], 2,
     "invalid alpha: must lie in (0, 1), got 7.0; invalid samples: cannot read 'abc' as int"),
    (["run", "--engine", "fake", "--set", "samples=x", "--samples", "2", "--out", "{out}"], 2,
     "--set: invalid samples: cannot read 'x' as int"),
    (["serve", "--engine", "vllm"], 2, "needs --draft-url and --target-url"),
    (["serve", "--engine", "vllm", "--draft-url", "http://127.0.0.1:9", "--target-url",
      "http://127.0.0.1:9", "--max-retries", "0"], 1, "http://127.0.0.1:9"),
    (["run", "--engine", "vllm", "--draft-url", "http://127.0.0.1:9", "--target-url",
      "http://127.0.0.1:9", "--max-retries", "0", "--out", "{out}"], 1,
     "http://127.0.0.1:9"),
]


@pytest.mark.parametrize(("command", "code", "words"), CASES,
                         ids=[" ".join(c[0][:3]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_one_line_and_its_exit_code(files, capsys, command, code, words):
    args = [part.format(**files) if "{" in part else part for part in command]
    with pytest.raises(SystemExit) if command[0] == "simulate" else _nothing() as caught:
        result = main(args)
    if caught is not None and getattr(caught, "value", None) is not None:
        result = caught.value.code
    err = capsys.readouterr().err.strip()
    assert result == code, err
    assert words in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len([line for line in lines if "error" in line]) == 1, err
    assert not Path(files["out"]).exists()  # nothing a corrected command would trip over


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def rows_with(tmp_path: Path, change) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(FIXTURE / "draft", folder)
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    change(rows)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize(("change", "words"), [
    (lambda rows: rows[2].update(started_at=None), "samples.jsonl:3: started_at must be"),
    (lambda rows: rows[0].update(steps="oops"), "samples.jsonl:1: steps must be a list"),
    (lambda rows: rows[1]["steps"].insert(0, 7), "samples.jsonl:2: step 0 must be a JSON"),
    (lambda rows: rows[4].update(sample_index="x"), "samples.jsonl:5: sample_index must be"),
])
def test_a_malformed_recorded_row_is_named_by_file_line_and_field(tmp_path, capsys, change,
                                                                   words):
    """A judged step with a null start used to end in a TypeError traceback (issue 32)."""
    folder = rows_with(tmp_path, change)
    for row in (json.loads(line) for line in (folder / "samples.jsonl").read_text()
                .splitlines()):
        assert row  # the file still holds JSON rows: the fields are what is wrong
    assert main(["replay", str(folder / "samples.jsonl"), "--alpha", "0.5",
                 "--set", "calibration=marginal"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_replay_without_the_runs_manifest_says_whose_settings_judge_it(tmp_path, capsys):
    from atts.perf.virtual_clock import run_virtual  # noqa: F401  (the fake run is virtual)
    from pipeline_helpers import config, engines, run

    cfg = config(calibration="adaptive", calibration_file=None, alpha=0.25, samples=4)
    run(cfg, *engines(lambda call: f"s ppl={call.params.seed % 40 + 1}\n\n"), tmp_path,
        bank=(), questions=3)
    (tmp_path / "manifest.json").unlink()
    assert main(["replay", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "has no manifest.json: its steps are judged under the defaults" in err
    assert "alpha 0.5" in err  # the default, not the run's 0.25
