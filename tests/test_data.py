"""Datasets: counts, ids, gold normalisation, selection and clear errors (atts.data)."""

from __future__ import annotations

import hashlib
import json
import random
from importlib.resources import files
from pathlib import Path

import pytest

from atts.data import DatasetError, Problem, list_datasets, load_dataset

SHIPPED = {  # sha256 from PROVENANCE.md: the package copies are byte for byte the sources
    "math500.jsonl": "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
    "aime24.jsonl": "af2b8bd2aa911b6333ad0df32f3ca05c7ae8ed10f1731f4372c8ae26990bf7ac",
    "aime25.jsonl": "5ee6e9fb9b8c0408c8e3591709b6927063abf73ed238c029167a7eff7376cca0",
    "amc23.jsonl": "43707e1ca784602d8479de24ee8ce36609dbebc46dd152b0b12a46611aa898a4",
    "gsm8k.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "gsm8k_train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "math_test5000.jsonl": "3371949f33dd702d04b43fddd7d53a028de0aaca0e76abb1b875a050297b3aa4",
}


@pytest.mark.parametrize("filename", sorted(SHIPPED))
def test_shipped_files_match_provenance_hashes(filename: str) -> None:
    data = (files("atts.data") / filename).read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHIPPED[filename]


@pytest.mark.parametrize(
    ("name", "count", "first_id", "first_gold"),
    [
        ("gsm8k", 1319, "gsm8k/0", "18"),
        ("math500", 500, "math500/test/precalculus/807.json", r"\left( 3, \frac{\pi}{2} \right)"),
        ("math100", 100, "math100/test/intermediate_algebra/117.json", "15"),
        ("aime24", 30, "aime24/0", "204"),
        ("aime25", 30, "aime25/0", "70"),
        ("amc23", 40, "amc23/0", "27"),
        ("gsm8k_train", 7473, "gsm8k_train/0", "72"),
        ("math_train", 4500, "math_train/0", "2"),
    ],
)
def test_counts_first_ids_and_unique_ids(name: str, count: int, first_id: str,
                                         first_gold: str) -> None:
    problems = load_dataset(name)
    assert len(problems) == count
    assert (problems[0].id, problems[0].gold) == (first_id, first_gold)
    assert len({p.id for p in problems}) == count
    assert all(p.dataset == name and p.question and p.gold for p in problems)


def test_list_datasets_names_every_builtin_with_a_description() -> None:
    infos = list_datasets()
    assert [i.name for i in infos] == ["gsm8k", "math500", "math100", "aime24", "aime25",
                                       "amc23", "gsm8k_train", "math_train"]
    assert all(i.description and "\n" not in i.description for i in infos)


def test_math100_is_the_papers_seeded_sample_in_sampled_order() -> None:
    math500 = load_dataset("math500")
    random.seed(42)  # the paper's exact recipe, global RNG included
    indices = random.sample(range(500), 100)
    math100 = load_dataset("math100")
    assert [p.question for p in math100] == [math500[i].question for i in indices]
    assert [p.id.split("/", 1)[1] for p in math100] == [
        math500[i].id.split("/", 1)[1] for i in indices]
    assert math100[1].id == "math100/test/intermediate_algebra/1168.json"


def test_math_train_is_disjoint_from_math500_with_boxed_golds() -> None:
    held_out = {p.question for p in load_dataset("math500")}
    train = load_dataset("math_train")
    assert not held_out & {p.question for p in train}
    assert train[1].gold == "10"  # "... $\boxed{10}$" in the source solution


def test_gold_normalisation() -> None:
    gsm8k = load_dataset("gsm8k")
    with_commas = [p for p in gsm8k if "#### 2,125" in _raw_answer("gsm8k.jsonl", p.id)]
    assert [p.gold for p in with_commas] == ["2125"]
    assert all("," not in p.gold for p in gsm8k)
    assert [p.gold for p in load_dataset("amc23", limit=4)] == ["27", "36", "45", "3159"]
    assert load_dataset("amc23")[15].gold == "-1"
    aime24 = load_dataset("aime24")
    assert all(p.gold.isdigit() for p in aime24)
    assert load_dataset("aime24", ids=["aime24/7"])[0].gold == "025"  # stored as in the source


def _raw_answer(filename: str, problem_id: str) -> str:
    line = int(problem_id.rsplit("/", 1)[1])
    text = (files("atts.data") / filename).read_text(encoding="utf-8").splitlines()[line]
    return str(json.loads(text)["answer"])


def test_limit_offset_and_ids() -> None:
    assert [p.id for p in load_dataset("gsm8k", limit=3)] == ["gsm8k/0", "gsm8k/1", "gsm8k/2"]
    assert [p.id for p in load_dataset("gsm8k", offset=5, limit=2)] == ["gsm8k/5", "gsm8k/6"]
    # Past the end is an error naming the size (it used to be an empty run, issue 17).
    with pytest.raises(DatasetError, match=r"offset 30 is past the end of dataset 'aime25' "
                                           r"\(30 problems\)"):
        load_dataset("aime25", offset=30)
    assert [p.id for p in load_dataset("aime25", offset=29)] == ["aime25/29"]
    picked = load_dataset("gsm8k", ids=["gsm8k/17", "3"])  # full id or the key after the name
    assert [p.id for p in picked] == ["gsm8k/17", "gsm8k/3"]
    assert [p.id for p in load_dataset("gsm8k", ids=["9", "8", "7"], offset=1, limit=1)] == [
        "gsm8k/8"]


def test_unknown_ids_and_names_are_clear_errors() -> None:
    with pytest.raises(DatasetError, match=r"unknown id.*'gsm8k/99999'.*gsm8k/0, gsm8k/1"):
        load_dataset("gsm8k", ids=["gsm8k/99999"])
    with pytest.raises(DatasetError, match=r"unknown dataset 'gsm9k'.*gsm8k, math500"):
        load_dataset("gsm9k")
    with pytest.raises(DatasetError, match="offset"):
        load_dataset("gsm8k", offset=-1)
    with pytest.raises(DatasetError, match="fields apply"):
        load_dataset("gsm8k", fields={"question": "q"})


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_user_jsonl_with_field_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "bench.jsonl", [
        json.dumps({"idx": "a", "prompt": "1+1?", "target": 2.0}),
        "",
        json.dumps({"idx": "b", "prompt": "2+2?", "target": "4"}),
    ])
    problems = load_dataset(f"jsonl:{path}?question=prompt&answer=target&id=idx")
    assert problems == [Problem("bench/a", "bench", "1+1?", "2"),
                        Problem("bench/b", "bench", "2+2?", "4")]
    same = load_dataset(f"jsonl:{path}", fields={"question": "prompt", "answer": "target",
                                                 "id": "idx", "name": "mine"})
    assert [p.id for p in same] == ["mine/a", "mine/b"]
    assert [p.id for p in load_dataset(f"jsonl:{path}?question=prompt&answer=target",
                                       ids=["1"])] == ["bench/1"]


def test_user_jsonl_defaults_and_answer_formats(tmp_path: Path) -> None:
    gsm = _write(tmp_path / "g.jsonl", [json.dumps({"question": "q0", "answer": "w\n#### 1,234"})])
    assert [p.gold for p in load_dataset(f"jsonl:{gsm}", fields={"format": "gsm8k"})] == ["1234"]
    boxed = _write(tmp_path / "b.jsonl", [
        json.dumps({"problem": "q1", "answer": "so $\\boxed{\\frac{1}{2}}$"})])
    problem = load_dataset(f"jsonl:{boxed}?format=boxed")[0]
    assert (problem.id, problem.question, problem.gold) == ("b/0", "q1", "\\frac{1}{2}")


@pytest.mark.parametrize(
    ("lines", "query", "message"),
    [
        (['{"question": "q", "answer": "1"}', '{"question": "q", "answer": '], "",
         r"bad\.jsonl, line 2: not valid JSON"),
        (['{"question": "q", "answer": "1"}', "[1, 2]"], "", r"line 2: expected a JSON object"),
        (['{"question": "q"}'], "", r"line 1: missing field 'answer' \(fields present: question"),
        (['{"question": "q", "answer": "1", "k": 1}'] * 2, "?id=k", r"line 2: id '1' already"),
        (['{"question": "q", "answer": "no marker"}'], "?format=gsm8k", r"line 1: no '####"),
        (['{"question": "q", "answer": "1"}'], "?colour=red", r"unknown field key"),
        (['{"question": "q", "answer": "1"}'], "?format=xml", r"format='xml'"),
        # An object or a list as the question used to reach the model as its Python repr.
        (['{"question": {"text": "q"}, "answer": "1"}'], "",
         r"line 1: field 'question' must be a non-empty string, got dict"),
        (['{"question": "  ", "answer": "1"}'], "", r"line 1: field 'question' must be"),
    ],
)
def test_malformed_user_files_name_file_and_line(tmp_path: Path, lines: list[str], query: str,
                                                 message: str) -> None:
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"jsonl:{path}{query}")


def test_missing_user_file_and_conflicting_fields(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read dataset file"):
        load_dataset(f"jsonl:{tmp_path / 'absent.jsonl'}")
    path = _write(tmp_path / "x.jsonl", ['{"q": "a", "answer": "1"}'])
    with pytest.raises(DatasetError, match="give it once"):
        load_dataset(f"jsonl:{path}?question=q", fields={"question": "p"})
