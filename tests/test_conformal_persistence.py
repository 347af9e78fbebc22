"""Saved banks: exact round trip, fingerprint mismatch, force, atomic writes, corrupt files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from atts.conformal import (
    BankMismatchError,
    CalibrationBank,
    fingerprint_digest,
    load_bank,
    make_fingerprint,
    save_bank,
)

FP = make_fingerprint(
    draft_sha256="d" * 64,
    target_sha256="t" * 64,
    prompt_sha256="p" * 64,
    step={"max_tokens": 500, "boundary": "\n\n"},
)


def test_make_fingerprint_is_canonical_strings() -> None:
    assert list(FP) == sorted(FP)
    assert all(isinstance(v, str) for v in FP.values())
    assert FP["step"] == '{"boundary":"\\n\\n","max_tokens":500}'
    same = make_fingerprint(
        step={"boundary": "\n\n", "max_tokens": 500},
        prompt_sha256="p" * 64,
        target_sha256="t" * 64,
        draft_sha256="d" * 64,
    )
    assert same == FP and fingerprint_digest(same) == fingerprint_digest(FP)
    assert len(fingerprint_digest(FP)) == 12
    assert fingerprint_digest(make_fingerprint(a="1")) != fingerprint_digest(
        make_fingerprint(a=1.0)
    )
    with pytest.raises(ValueError, match="at least one part"):
        make_fingerprint()


def test_round_trip_is_exact_and_sorted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scores = rng.lognormal(sigma=2.0, size=1000)
    scores[:10] = 1.0  # ties survive
    path = save_bank(tmp_path / "sub" / "bank.json", scores, FP)
    loaded = load_bank(path, FP)
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, np.sort(scores))  # bit-exact floats
    doc = json.loads(path.read_text())
    assert doc["format"] == "atts-calibration-bank" and doc["version"] == 1
    assert doc["count"] == 1000 and doc["fingerprint"] == FP
    assert doc["digest"] == fingerprint_digest(FP)
    assert abs(doc["created"] - time.time()) < 60
    np.testing.assert_array_equal(load_bank(path), loaded)  # no fingerprint: no check
    assert len(CalibrationBank(loaded)) == 1000


def test_mismatch_names_the_differing_keys_and_what_to_do(tmp_path: Path) -> None:
    path = save_bank(tmp_path / "bank.json", [1.0, 2.0], FP)
    other = dict(FP, target_sha256="x" * 64, extra="1")
    with pytest.raises(BankMismatchError) as info:
        load_bank(path, other)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.differing == ("extra", "target_sha256")
    msg = str(err)
    assert "extra" in msg and "target_sha256" in msg and "draft_sha256" not in msg
    assert "atts calibrate" in msg and "--force-bank" in msg


def test_force_loads_a_mismatched_bank_with_a_warning(tmp_path: Path) -> None:
    path = save_bank(tmp_path / "bank.json", [3.0, 1.0], FP)
    with pytest.warns(UserWarning, match=r"mismatched bank.*target_sha256"):
        loaded = load_bank(path, dict(FP, target_sha256="x"), force=True)
    assert list(loaded) == [1.0, 3.0]


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "bank.json"
    save_bank(path, [1.0], FP)
    save_bank(path, [1.0, 2.0], FP)  # replaces
    assert list(load_bank(path, FP)) == [1.0, 2.0]
    with pytest.raises(ValueError, match="finite"):
        save_bank(path, [1.0, float("nan")], FP)
    assert list(load_bank(path, FP)) == [1.0, 2.0]  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["bank.json"]


def test_failure_during_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bank.json"
    save_bank(path, [5.0], FP)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_bank(path, [1.0, 2.0], FP)
    monkeypatch.undo()
    assert list(load_bank(path, FP)) == [5.0]
    assert sorted(os.listdir(tmp_path)) == ["bank.json"]


def test_save_validates_fingerprint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be str.*make_fingerprint"):
        save_bank(tmp_path / "b.json", [1.0], {"draft": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="mapping"):
        save_bank(tmp_path / "b.json", [1.0], ["x"])  # type: ignore[arg-type]


def test_missing_and_corrupt_files_say_to_recalibrate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="atts calibrate"):
        load_bank(tmp_path / "nope.json")
    path = tmp_path / "bank.json"
    good = json.loads(save_bank(path, [1.0, 2.0], FP).read_text())
    cases = {
        "not json {": "invalid JSON",
        json.dumps({"hello": 1}): "format marker",
        json.dumps(dict(good, version=99)): "version 99",
        json.dumps(dict(good, count=3)): "count says 3",
        json.dumps({k: v for k, v in good.items() if k != "scores"}): "scores",
        json.dumps(dict(good, scores=[1.0, "x"])): "readable",
        json.dumps({k: v for k, v in good.items() if k != "fingerprint"}):
            "no 'fingerprint' field",
        json.dumps(dict(good, digest="0" * 12)): "digest '000000000000' does not match",
        json.dumps(dict(good, fingerprint={**good["fingerprint"], "draft_sha256": "e" * 64})):
            "does not match its fingerprint",
    }
    for text, match in cases.items():
        path.write_text(text)
        with pytest.raises(ValueError, match=f"{match}.*atts calibrate|not a readable.*{match}"):
            load_bank(path)
    path.write_text(json.dumps(dict(good)).replace("2.0]", "Infinity]"))
    with pytest.raises(ValueError, match="finite"):
        load_bank(path)
