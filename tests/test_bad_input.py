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
    (tmp_path / "badvalue.yaml").write_text("alpha: 0.3\nsamples: abc\n")
    (tmp_path / "folder").mkdir()
    good = '{"question": "1+1?", "answer": "\\\\boxed{2}", "uid": "a"}\n'
    for name, line in DATASET_LINES.items():  # a good record, then the bad one on line 2
        (tmp_path / f"{name}.jsonl").write_text(good + line + "\n")
    (tmp_path / "binary.jsonl").write_bytes(b"\x00\xff\xfe\x89PNG")  # no newline: not torn
    for name, text in RECIPES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    names = ("empty.jsonl", "latin1.jsonl", "latin1.yaml", "replaced.yaml", "badvalue.yaml",
             "folder", "out",
             "binary.jsonl", *(f"{n}.jsonl" for n in DATASET_LINES),
             *(f"{n}.yaml" for n in RECIPES))
    return {name.replace(".", "_"): str(tmp_path / name) for name in names}


# Line 2 of a user dataset (line 1 is good), by the name of its file.
DATASET_LINES = {
    "notjson": '{"question": "x?", "answer": ', "alist": "[1, 2]", "null": "null",
    "noquestion": '{"answer": "2"}', "noanswer": '{"question": "x?"}',
    "numquestion": '{"question": 5, "answer": "2"}',
    "nullanswer": '{"question": "x?", "answer": null}',
    "listanswer": '{"question": "x?", "answer": [1, 2]}',
    "objanswer": '{"question": "x?", "answer": {"a": 1}}',
    "emptyanswer": '{"question": "x?", "answer": " "}',
    "nananswer": '{"question": "x?", "answer": NaN}',
    "boolanswer": '{"question": "x?", "answer": true}',
    "dupid": '{"question": "y?", "answer": "3", "uid": "a"}',
    "listid": '{"question": "y?", "answer": "3", "uid": ["b"]}',
}
RECIPES = {
    "notyaml": "alpha: [\n", "alist": "- 1\n- 2\n", "unknown": "alpha: 0.3\nsampels: 4\n",
    "numkey": "alpha: 0.3\n1: 2\n", "idsmap": "ids: {a: 1}\n",
}


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
    (["run", "--engine", "fake", "--recipe", "{badvalue_yaml}", "--out", "{out}"], 2,
     "badvalue.yaml: invalid samples: cannot read 'abc' as int"),
    (["run", "--engine", "fake", "--recipe", "{replaced_yaml}", "--samples", "2", "--alpha",
      "0.3", "--out", "{out}"], 2,
     "invalid alpha: must lie in (0, 1), got 7.0; invalid samples: cannot read 'abc' as int"),
    (["run", "--engine", "fake", "--set", "samples=x", "--samples", "2", "--out", "{out}"], 2,
     "--set: invalid samples: cannot read 'x' as int"),
    # User datasets (issue 32, item 1): one line naming the file, the line and the field, for
    # `atts run` and `atts calibrate` alike.
    *[([*command, "--dataset" if command[0] == "run" else "--pool",
        f"jsonl:{{{name}_jsonl}}{query}", "--out", "{out}"], 2, words)
      for command in (["run", "--engine", "fake"], ["calibrate", "--engine", "fake"])
      for name, query, words in (
          ("notjson", "", "notjson.jsonl, line 2: not valid JSON"),
          ("alist", "", "alist.jsonl, line 2: expected a JSON object, got list"),
          ("null", "", "null.jsonl, line 2: expected a JSON object, got NoneType"),
          ("noquestion", "", "noquestion.jsonl, line 2: missing field 'question'"),
          ("noanswer", "", "noanswer.jsonl, line 2: missing field 'answer'"),
          ("numquestion", "", "line 2: field 'question' must be a non-empty string, got int"),
          ("nullanswer", "", "nullanswer.jsonl, line 2: field 'answer' is null"),
          ("listanswer", "", "line 2: field 'answer' must be a non-empty string or a number, "
                             "got [1, 2]"),
          ("objanswer", "", "line 2: field 'answer' must be a non-empty string or a number"),
          ("emptyanswer", "", "line 2: field 'answer' must be a non-empty string or a number"),
          ("nananswer", "", "field 'answer' must be a non-empty string or a number, got NaN"),
          ("boolanswer", "", "field 'answer' must be a non-empty string or a number, got true"),
          ("listanswer", "?format=boxed", "line 2: field 'answer' must be a string, got [1"),
          ("dupid", "?id=uid", "dupid.jsonl, line 2: id 'a' already used on line 1"),
          ("listid", "?id=uid", "line 2: field 'uid' (the id) must be a non-empty string or an "
                                "integer, got [\"b\"]"),
          ("binary", "", "binary.jsonl:1: not UTF-8 text"),
      )],
    (["calibrate", "--engine", "fake", "--pool", "jsonl:{empty_jsonl}", "--out", "{out}"], 2,
     "gives no problems to calibrate on"),
    # Recipes: the file and the line, in one line (YAML's own message spans several).
    (["run", "--engine", "fake", "--recipe", "{notyaml_yaml}", "--out", "{out}"], 2,
     "notyaml.yaml:2 is not valid YAML (expected the node content"),
    (["run", "--engine", "fake", "--recipe", "{alist_yaml}", "--out", "{out}"], 2,
     "alist.yaml must be a mapping of key: value, got list"),
    (["run", "--engine", "fake", "--recipe", "{unknown_yaml}", "--out", "{out}"], 2,
     "unknown.yaml:2: unknown configuration key(s): sampels (sampels -> did you mean samples?)"),
    (["serve", "--engine", "fake", "--recipe", "{unknown_yaml}"], 2,
     "unknown.yaml:2: unknown configuration key(s): sampels"),
    (["run", "--engine", "fake", "--recipe", "{numkey_yaml}", "--out", "{out}"], 2,
     "numkey.yaml:2: 1 is not a configuration key"),
    (["run", "--engine", "fake", "--recipe", "{idsmap_yaml}", "--out", "{out}"], 2,
     "invalid ids: cannot read {'a': 1} as tuple"),
    (["run", "--engine", "fake", "--set", "alpha=[", "--out", "{out}"], 2,
     "--set 'alpha=[': the value is not valid YAML"),
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


# Run folders read back (issue 32, item 1): every command that reads a folder checks its files
# the same way (atts.schema), so each malformed case below gets the same one line, naming the
# file, the line and the field, from a resume, `--resume`, `atts report`, `atts replay` and
# `atts replay --escalate-to`.  A torn last line (a kill mid-write) is the one thing left out.
READERS = {
    "run": ["run", "--engine", "fake", "--limit", "2", "--samples", "2", "--out", "{run}",
            "--no-progress", "--no-report"],
    "resume": ["run", "--resume", "{run}", "--no-progress", "--no-report"],
    "report": ["report", "{run}", "--no-plots"],
    "replay": ["replay", "{run}"],
    "escalate": ["replay", "{run}", "--escalate-to", "{target}"],
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small fake runs to break: ATTS (2 questions x 2 samples), a target-only run of the same
    questions (the --escalate-to target), a cascade (questions.jsonl) and a bank."""
    root = tmp_path_factory.mktemp("recorded")
    common = ["--engine", "fake", "--samples", "2", "--no-progress", "--no-report"]
    for name, extra in (("atts", ["--limit", "2"]),
                        ("target", ["--limit", "2", "--strategy", "target_only"]),
                        ("cascade", ["--limit", "4", "--strategy", "cascade"])):
        assert main(["run", *common, *extra, "--out", str(root / name)]) == 0
    assert main(["calibrate", "--engine", "fake", "--pool-limit", "4", "--no-progress",
                 "--out", str(root / "bank.json")]) == 0
    return {name: root / name for name in ("atts", "target", "cascade", "bank.json")}


def _lines(path: Path, edit) -> None:
    lines = path.read_text().split("\n")[:-1]
    edit(lines)
    path.write_text("".join(line + "\n" for line in lines))


def line(number: int, text: str):
    return lambda lines: lines.__setitem__(number - 1, text)


def field(number: int, key: str, value, *, step: int | None = None):
    """Line ``number``'s ``key`` (of its step ``step``) set to ``value`` (or dropped: ...)."""
    def edit(lines: list[str]) -> None:
        row = json.loads(lines[number - 1])
        target = row if step is None else row["steps"][step]
        if value is ...:
            del target[key]
        else:
            target[key] = value
        lines[number - 1] = json.dumps(row)  # NaN and Infinity as Python writes them
    return edit


def one_line(err: str, words: str) -> None:
    assert "Traceback" not in err
    assert len([text for text in err.splitlines() if "error" in text]) == 1, err
    assert words in err, err


# (edit of samples.jsonl, words after "samples.jsonl:", whether `atts replay` may read it: a
# replay needs only a row's key, start and steps, checking the other fields where present)
ROW_CASES = [
    (line(2, '{"question_id": "gsm8k/0", '), "2: not valid JSON", False),
    (line(2, "[1, 2]"), "2: a row must be a JSON object, got [1, 2]", False),
    (line(2, "null"), "2: a row must be a JSON object, got null", False),
    (field(2, "question_id", ...), "2: the row lacks question_id", False),
    (field(2, "sample_index", ...), "2: the row lacks sample_index", False),
    (field(2, "status", ...), "2: the row lacks status", True),
    (field(2, "steps", ...), "2: the row lacks steps", False),
    (field(2, "answer", ...), "2: the row lacks answer", True),
    (field(2, "sample_index", "1"), '2: sample_index must be an integer, got "1"', False),
    (field(2, "sample_index", -1), "2: sample_index must be an integer >= 0, got -1", False),
    (field(2, "question_id", 7), "2: question_id must be a string, got 7", False),
    (field(2, "status", "fine"), "2: status must be one of 'ok', 'error', got \"fine\"", False),
    (field(2, "steps", {}), "2: steps must be a list, got an object", False),
    (field(2, "steps", [5]), "2: step 0 must be a JSON object, got 5", False),
    (field(2, "author", ..., step=0), "2: step 0 lacks author", False),
    (field(2, "score", "abc", step=0), '2: step 0: score must be a finite number, got "abc"',
     False),
    (field(2, "score", float("nan"), step=0), "2: step 0: score must be a finite number, got NaN",
     False),
    (field(2, "finished_at", float("inf")), "2: finished_at must be a finite number, got "
                                            "Infinity", False),
    (field(2, "started_at", None), "2: started_at must be a finite number, got null", False),
    (field(2, "tokens", [1, 2]), "2: tokens must be a JSON object, got [1, 2]", False),
    (field(2, "answer", [1, 2]), "2: answer must be a string, got [1, 2]", False),
    (field(2, "gold", None), "2: gold must be a string, got null", False),
]


@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize(("edit", "words", "replayable"), ROW_CASES,
                         ids=[f"row{i}" for i in range(len(ROW_CASES))])
def test_a_malformed_row_is_one_line_for_every_command_that_reads_it(
        recorded, tmp_path, capsys, command, edit, words, replayable):
    run = shutil.copytree(recorded["atts"], tmp_path / "run")
    _lines(run / "samples.jsonl", edit)
    args = [part.format(run=run, target=recorded["target"]) for part in READERS[command]]
    code = main(args)
    err = capsys.readouterr().err
    if command == "replay" and replayable:
        assert code == 0, err
        return
    assert code == 2, err
    one_line(err, f"samples.jsonl:{words}")


# (edit of manifest.json as a dict, or its bytes; words after "manifest.json")
MANIFEST_CASES = [
    (b"{oops", ": not valid JSON (Expecting property name"),
    (b"", ": not valid JSON (Expecting value at line 1 column 1)"),
    (b"\xff\xfe", ":1: not UTF-8 text"),
    (b"[]", ": a manifest must be a JSON object, got []"),
    (lambda m: m.pop("config"), ": the manifest lacks config"),
    (lambda m: m.update(config=[1]), ": config must be a JSON object, got [1]"),
    (lambda m: m["config"].update(samples="abc"), ': config.samples must be an integer, got "abc"'),
    (lambda m: m["config"].update(alpha=float("nan")), ": config.alpha must be a finite number, "
                                                       "got NaN"),
    (lambda m: m["config"].update(limit="x"), ': config.limit must be an integer, got "x"'),
    (lambda m: m.update(questions=[1]), ": questions must be a JSON object, got [1]"),
    (lambda m: m.update(sessions="x"), ': sessions must be a list, got "x"'),
    (lambda m: m.update(last_session=[1]), ": last_session must be a JSON object, got [1]"),
    (lambda m: m["last_session"].update(wall_seconds="x"),
     ': last_session.wall_seconds must be a finite number, got "x"'),
]


@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize(("edit", "words"), MANIFEST_CASES,
                         ids=[f"manifest{i}" for i in range(len(MANIFEST_CASES))])
def test_a_malformed_manifest_is_one_line_for_every_command_that_reads_it(
        recorded, tmp_path, capsys, command, edit, words):
    run = shutil.copytree(recorded["atts"], tmp_path / "run")
    if isinstance(edit, bytes):
        (run / "manifest.json").write_bytes(edit)
    else:
        manifest = json.loads((run / "manifest.json").read_text())
        edit(manifest)
        (run / "manifest.json").write_text(json.dumps(manifest))
    args = [part.format(run=run, target=recorded["target"]) for part in READERS[command]]
    assert main(args) == 2
    one_line(capsys.readouterr().err, f"manifest.json{words}")


@pytest.mark.parametrize(("key", "value", "words"), [
    ("bogus", 1, "config holds bogus, which this atts does not know"),
    ("strategy", "fastest", "invalid strategy: choose one of"),
    ("samples", 0, "invalid samples: must be >= 1, got 0"),
])
def test_a_resume_names_the_manifest_of_a_recorded_setting_it_refuses(
        recorded, tmp_path, capsys, key, value, words):
    """`atts run --resume` builds its configuration from the manifest: a recorded value it
    refuses names the manifest (a flag replaces it); a plain --out resume offers a new folder."""
    run = shutil.copytree(recorded["atts"], tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"][key] = value
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(run), "--no-progress", "--no-report"]) == 2
    one_line(capsys.readouterr().err, f"{run / 'manifest.json'}: {words}")
    args = [part.format(run=run) for part in READERS["run"]]
    assert main(args) == 2
    one_line(capsys.readouterr().err, "holds a run with a different configuration")


# (edit of questions.jsonl of a cascade run, words after "questions.jsonl:")
QUESTION_CASES = [
    (line(2, "{nope"), "2: not valid JSON"),
    (line(2, "[1]"), "2: a row must be a JSON object, got [1]"),
    (field(2, "question_id", ...), "2: the row lacks question_id"),
    (field(2, "score", ...), "2: the row lacks score"),
    (field(2, "votes", [1]), "2: votes must be a JSON object, got [1]"),
    (field(2, "score", "x"), '2: score must be a finite number, got "x"'),
    (field(2, "escalated", "yes"), '2: escalated must be true or false, got "yes"'),
    (field(2, "samples", None), "2: samples must be an integer, got null"),
]


@pytest.mark.parametrize("command", ["run", "report"])
@pytest.mark.parametrize(("edit", "words"), QUESTION_CASES,
                         ids=[f"question{i}" for i in range(len(QUESTION_CASES))])
def test_a_malformed_question_decision_is_one_line(recorded, tmp_path, capsys, command, edit,
                                                   words):
    run = shutil.copytree(recorded["cascade"], tmp_path / "run")
    _lines(run / "questions.jsonl", edit)
    args = {"run": ["run", "--engine", "fake", "--limit", "4", "--samples", "2", "--strategy",
                    "cascade", "--out", str(run), "--no-progress", "--no-report"],
            "report": ["report", str(run), "--no-plots"]}[command]
    assert main(args) == 2
    one_line(capsys.readouterr().err, f"questions.jsonl:{words}")


# (edit of a bank as a dict, or its bytes; words of the one line)
BANK_CASES = [
    (b"{oops", "is not a readable calibration bank (invalid JSON"),
    (b"\x00\xff", "bank.json:1: not UTF-8 text"),
    (lambda b: b.pop("scores"), "it has no 'scores' field"),
    (lambda b: b.update(scores=[str(s) for s in b["scores"]]),
     '(scores[0] must be a finite number, got "'),
    (lambda b: b["scores"].__setitem__(1, None), "(scores[1] must be a finite number, got null)"),
    (lambda b: b["scores"].__setitem__(0, True), "(scores[0] must be a finite number, got true)"),
    (lambda b: b.update(scores=[[s] for s in b["scores"]]), "(scores[0] must be a finite number"),
    (lambda b: b.update(count=4.5), "(count must be an integer, got 4.5)"),
    (lambda b: b["fingerprint"].update(draft=5), "(fingerprint.draft must be a string, got 5)"),
    (lambda b: b.update(digest=5), "(digest must be a string, got 5)"),
]


@pytest.mark.parametrize("command", ["run", "serve"])
@pytest.mark.parametrize(("edit", "words"), BANK_CASES,
                         ids=[f"bank{i}" for i in range(len(BANK_CASES))])
def test_a_malformed_bank_is_one_line(recorded, tmp_path, capsys, monkeypatch, command, edit,
                                      words):
    import atts.serve.server

    monkeypatch.setattr(atts.serve.server, "serve_forever", lambda *a, **k: None)  # start-up
    bank = tmp_path / "bank.json"
    if isinstance(edit, bytes):
        bank.write_bytes(edit)
    else:
        doc = json.loads(recorded["bank.json"].read_text())
        edit(doc)
        bank.write_text(json.dumps(doc))
    args = {"run": ["run", "--engine", "fake", "--calibration", "file", "--calibration-file",
                    str(bank), "--out", str(tmp_path / "out"), "--no-progress"],
            "serve": ["serve", "--engine", "fake", "--bank", str(bank)]}[command]
    assert main(args) == 2
    one_line(capsys.readouterr().err, words)
    assert not (tmp_path / "out").exists()


def test_a_torn_last_line_is_left_out_but_other_trailing_bytes_are_named(recorded, tmp_path,
                                                                          capsys):
    """A kill mid-write leaves the start of a row without its newline: every reader leaves it
    out and a resume cuts it (by design).  Bytes that cannot be such a start (a binary file
    copied over the rows) are named instead of cut."""
    run = shutil.copytree(recorded["atts"], tmp_path / "run")
    whole = (run / "samples.jsonl").read_bytes()
    (run / "samples.jsonl").write_bytes(whole + b'{"question_id": "gsm8k/0", "samp')
    assert main(["replay", str(run)]) == 0
    assert main(["report", str(run), "--no-plots"]) == 0
    assert main([*READERS["run"][:8], str(run), "--no-progress", "--no-report"]) == 0
    assert (run / "samples.jsonl").read_bytes() == whole  # cut, and nothing was run again
    capsys.readouterr()
    (run / "samples.jsonl").write_bytes(whole + b"\x89PNG\x00\xff")
    for command in READERS:
        args = [part.format(run=run, target=recorded["target"]) for part in READERS[command]]
        assert main(args) == 2
        one_line(capsys.readouterr().err, "samples.jsonl:5: not UTF-8 text")
    assert (run / "samples.jsonl").read_bytes().endswith(b"\x89PNG\x00\xff")  # not cut


def test_a_line_separator_inside_a_row_does_not_split_it(recorded, tmp_path, capsys):
    """Rows are written with ensure_ascii=False: a model's U+2028 or U+0085 stays raw in the
    line, and str.splitlines used to cut the row there (the folder then could not be read)."""
    run = shutil.copytree(recorded["atts"], tmp_path / "run")
    _lines(run / "samples.jsonl", lambda lines: lines.__setitem__(
        1, json.dumps({**json.loads(lines[1]), "text": "a\u2028b\x85c"}, ensure_ascii=False)))
    assert "\u2028" in (run / "samples.jsonl").read_text()
    for command in READERS:
        args = [part.format(run=run, target=recorded["target"]) for part in READERS[command]]
        assert main(args) == 0, capsys.readouterr().err


def test_a_line_separator_inside_a_dataset_question_does_not_split_it(tmp_path):
    from atts.data import load_dataset

    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"question": "a\u2028b?", "answer": "1"}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    (problem,) = load_dataset(f"jsonl:{path}")
    assert problem.question == "a\u2028b?"
