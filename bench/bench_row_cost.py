"""Where the per-row cost goes (issue 30, item 3): what one decode row and one scored row cost
on llama.cpp against context length and sequences per call, beside what the runs paid.

``measure``: for each model, a grid of cached context C (default 256, 1024, 4096 tokens) x
sequences per ``llama_decode`` call B (1, 2, 4, 8, 16), with llama-cpp-python's low-level API
and the context settings of ``LlamaCppEngine`` (``_llama_loop.py``: one KV buffer per sequence,
``kv_unified = false``; flash attention off; KV cache in llama.cpp's default type, f16;
n_batch = n_ubatch = 512):

- ``decode``: B sequences, each holding the same C cached tokens, decode one token each per
  call (one row per sequence, seq_ids 0..B-1 in order, as the decode loop sorts them), a
  warm-up call and then ``--repeats`` timed calls; ms per row = call time / B.
- ``score``: B sequences each evaluate a 32-token step after their C cached tokens, in one
  call with every row's logits, then the log-softmax of the step's tokens with the engine's
  helper (float64 sums, ``token_logprobs``); ms per row = time / (B x 32).
  ``call_ms_per_row`` is the ``llama_decode`` alone, what the runs' ``prefill_seconds`` count.
- ``prefill``: the context itself, read once into sequence 0 in chunks of 512 (last-token
  logits only), timed as it grows (256, then 256..1024, then 1024..4096): what a run's context
  reads cost.
The context is prefilled once into sequence 0 and copied to the other sequences with
``llama_memory_seq_cp`` (a whole-buffer copy between the per-sequence buffers), so 16 x 4096
cached tokens cost one prefill of 4096; every sequence still attends to its own KV copy.
Two extra decode cells at C = 1024 (the middle context when 1024 is not asked for), B = 8:
``gapped``, the same batch on seq_ids 0, 2, 4, ... (llama.cpp computes a non-unified batch as
one graph per run of consecutive seq_ids, and the decode loop's sequences are whichever slots
its samples hold), and ``flash_attn``, the engine's batch with flash attention on.

``report``: the grid per model and kind in markdown, with each context's decode call cost
fitted as a + b x B (a: what a call costs whatever its batch, b: what each row adds), and
beside it each run manifest's ``last_session.engine_calls`` (per role: mean decode batch, ms
per decode row, ms per prefill row, threads per call, waiting) with the grid's cost at the
nearest grid B and the fit's at the run's mean batch, over every C, and the ratios; under
them each run's host steal, whether it ran on the grid's boot, and the CPU its process got
against what its calls' threads asked for.  The output says what the comparison can and
cannot attribute.  Manifests without ``engine_calls`` (runs before it was recorded) are
listed as skipped.

Duration on the team's 2-core Xeon at 2 threads, quiet machine, estimated from the prefill
rates of bench/results/anchor.md (1.5B 26 ms and 0.5B 13.4 ms per token on one thread, about
14 and 7.5 at two): per model one prefill of 4096 (+1024 for the flash-attention context), 3
repeats x 3 contexts x 32 x (1+2+4+8+16) = 8,928 scored rows at 1.2-1.3x a prefill row, and
3 x 4 decode calls of each B; 1.5B about 65 + 15 + 185 + 20 s = 4.8 min, 0.5B about 2.5 min:
**about 7-8 minutes for both**, 15 at a load of 2 (other jobs on the cores: record the load, and
prefer a quiet machine).  ``--models``, ``--contexts``, ``--batches``, ``--repeats`` and
``--no-extras`` shrink it.  Memory: 16 x 4352 KV cells x 28 KB (1.5B) = 2.0 GB, plus a
311 MB logits buffer (512 rows x 151,936).

Waiting threads: libggml-cpu is built with OpenMP here, whose threads spin at barriers by
default; with other work on the cores a 2-thread call then stalls whenever one of its threads
is descheduled (the tiny model under a load of 4 on 2 cores: 2.8 s per decode row against 22 ms
with ``OMP_WAIT_POLICY=passive``, and 4 s for the whole smoke grid on one thread against 45-137
s on two).  The JSON records ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT``; a second measurement
under ``OMP_WAIT_POLICY=passive`` (``--out`` another file) prices that setting.

Run (models installed with ``atts models pull all``), on a quiet machine:
    .venv/bin/python bench/bench_row_cost.py measure --out bench/results/row_cost.json
    .venv/bin/python bench/bench_row_cost.py report --grid bench/results/row_cost.json \\
        --runs 'runs/bench/equal/**/manifest.json' --markdown bench/results/row_cost.md
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from atts.engines._sampling import token_logprobs
from atts.engines.compute import machine_cores
from atts.models.registry import lookup
from atts.models.store import resolve_model
from atts.runner.machine import boot_id, boots, cpu_model, cpu_share, cpu_ticks, host_steal

CONTEXTS = (256, 1024, 4096)
BATCHES = (1, 2, 4, 8, 16)
MODELS = ("draft", "target")
STEP = 32  # scored tokens per sequence
N_BATCH = 512  # the engine's n_batch = n_ubatch
OPENMP_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
EXTRA_C, EXTRA_B = 1024, 8  # where the gapped and flash-attention decode cells are taken
TEXT = (
    "We prove the claim by induction on n. For the base case n = 1 both sides equal one. "
    "Assume the identity holds for some n and consider n + 1: the left side gains the term "
    "(n + 1)^3, while the right side becomes ((n + 1)(n + 2) / 2)^2. Expanding the square and "
    "subtracting (n (n + 1) / 2)^2 leaves exactly (n + 1)^3, which completes the step. "
)


# -- measuring ------------------------------------------------------------------------------


class Bench:
    """One llama.cpp context of one model, set up as ``DecodeLoop`` sets up the engine's."""

    def __init__(self, lib: Any, internals: Any, model: Any, *, n_seq: int, per_seq: int,
                 threads: int, flash_attn: bool, max_rows: int) -> None:
        self.lib, self.n_vocab, self.n_seq = lib, model.n_vocab(), n_seq
        params = internals.LlamaContext.default_params()
        params.n_ctx = per_seq * n_seq  # split evenly: each sequence holds per_seq tokens
        params.n_seq_max = n_seq
        params.kv_unified = False
        self.n_batch = max(N_BATCH, n_seq, max_rows)
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_outputs_max = max(128, n_seq, max_rows)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self.settings = {"flash_attn": flash_attn, "kv_unified": False,
                         "type_k": _ggml_type(lib, params.type_k),
                         "type_v": _ggml_type(lib, params.type_v),
                         "n_batch": self.n_batch, "n_ubatch": self.n_batch,
                         "n_ctx_per_seq": per_seq, "n_seq_max": n_seq, "threads": threads}
        self.ctx = internals.LlamaContext(model=model, params=params, verbose=False)
        self.batch = internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1,
                                          verbose=False)
        self.cached = 0  # tokens of sequence 0 (the others are copies of it)
        # A first call pays one-time costs (buffers, graph): not the context's prefill's.
        self.decode([(0, 0, 0, False)])
        self.trim(range(1))

    def close(self) -> None:
        self.ctx.close()
        self.batch.close()

    def decode(self, items: Sequence[tuple[int, int, int, bool]]) -> float:
        """One ``llama_decode`` of (token, position, seq_id, wants_logits) rows; its seconds."""
        b = self.batch.batch
        b.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        t0 = time.perf_counter()
        code = self.lib.llama_decode(self.ctx.ctx, b)
        seconds = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        return seconds

    def rows(self, n: int) -> np.ndarray:
        """The logits of the last call's n output rows, in batch order (a view)."""
        ptr = self.lib.llama_get_logits(self.ctx.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab))

    def extend(self, ids: Sequence[int], end: int) -> tuple[int, float]:
        """Sequence 0's cache grown to ``ids[:end]`` in chunks of n_batch: (rows, seconds)."""
        rows, seconds, start = 0, 0.0, self.cached
        for lo in range(start, end, self.n_batch):
            chunk = ids[lo:min(end, lo + self.n_batch)]
            last = lo + len(chunk) == end
            seconds += self.decode([(t, lo + i, 0, last and i == len(chunk) - 1)
                                    for i, t in enumerate(chunk)])
            rows += len(chunk)
        self.cached = end
        return rows, seconds

    def copy_all(self) -> None:
        """Every other sequence made a copy of sequence 0.  Between per-sequence buffers
        llama.cpp copies whole buffers, at the next decode: one throwaway row makes it."""
        mem = self.lib.llama_get_memory(self.ctx.ctx)
        for s in range(1, self.n_seq):
            self.lib.llama_memory_seq_rm(mem, s, -1, -1)
            self.lib.llama_memory_seq_cp(mem, 0, s, -1, -1)
        self.decode([(0, self.cached, 0, False)])
        self.trim(range(1))

    def trim(self, seqs: Iterator[int] | Sequence[int] | range) -> None:
        """The given sequences back to the cached context (what a cell appended removed)."""
        mem = self.lib.llama_get_memory(self.ctx.ctx)
        for s in seqs:
            self.lib.llama_memory_seq_rm(mem, s, self.cached, -1)


def _ggml_type(lib: Any, value: int) -> str:
    for name in dir(lib):
        if name.startswith("GGML_TYPE_") and getattr(lib, name) == value:
            return name.removeprefix("GGML_TYPE_").lower()
    return str(value)


@contextmanager
def _machine_share(cell: dict[str, Any]) -> Iterator[None]:
    """Add to ``cell`` how the machine's CPU time was spent while it was measured."""
    start = cpu_ticks()
    t0 = time.perf_counter()
    yield
    cell["seconds"] = round(time.perf_counter() - t0, 3)
    end = cpu_ticks()
    cell["cpu_share"] = cpu_share(start, end) if start and end else None


def decode_cell(bench: Bench, seqs: Sequence[int], first: int, repeats: int) -> dict[str, Any]:
    """len(seqs) sequences decode together: a warm-up call, then ``repeats`` timed ones."""
    b = len(seqs)
    tokens, pos = [first] * b, bench.cached
    times: list[float] = []
    diff = 0.0
    for step in range(repeats + 1):
        seconds = bench.decode([(tokens[i], pos, s, True) for i, s in enumerate(seqs)])
        rows = bench.rows(b)
        if step == 0 and b > 1:  # the copies hold the same context: the same rows
            diff = float(np.abs(rows[-1] - rows[0]).max())
        tokens = [int(r.argmax()) for r in rows]
        pos += 1
        if step:
            times.append(seconds)
    bench.trim(seqs)
    per_row = [1e3 * t / b for t in times]
    return {"ms_per_row": statistics.median(per_row), "repeats_ms_per_row": per_row,
            "copy_check": diff}


def score_cell(bench: Bench, b: int, ids: Sequence[int], repeats: int) -> dict[str, Any]:
    """b sequences score a STEP-token step after the cached context in one call, as ATTS
    scores: every row's logits, the log-probability of each next step token."""
    c = bench.cached
    step, targets = list(ids[c:c + STEP]), list(ids[c + 1:c + STEP + 1])
    items = [(t, c + i, s, True) for s in range(b) for i, t in enumerate(step)]
    full: list[float] = []
    call: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seconds = bench.decode(items)
        token_logprobs(bench.rows(b * STEP), targets * b)
        full.append(1e3 * (time.perf_counter() - t0) / (b * STEP))
        call.append(1e3 * seconds / (b * STEP))
        bench.trim(range(b))
    return {"ms_per_row": statistics.median(full), "repeats_ms_per_row": full,
            "call_ms_per_row": statistics.median(call), "repeats_call_ms_per_row": call}


def model_name(model: str) -> str:
    """The registry's name of a model given by name or path (a stored file is <name>.gguf)."""
    spec = lookup(model)
    return spec.name if spec is not None else Path(model).name.removesuffix(".gguf")


def measure_model(model: str, *, contexts: Sequence[int], batches: Sequence[int], repeats: int,
                  threads: int, extras: bool) -> dict[str, Any]:
    """Every cell of one model's grid (and the extra decode cells)."""
    import llama_cpp
    from llama_cpp import _internals, _logger

    _logger.set_verbose(False)
    llama_cpp.llama_backend_init()
    path = str(resolve_model(model))
    t_load = time.perf_counter()
    lm = _internals.LlamaModel(path_model=path, params=_internals.LlamaModel.default_params(),
                               verbose=False)
    load_seconds = time.perf_counter() - t_load
    contexts, batches = sorted(set(contexts)), sorted(set(batches))
    extra_c = EXTRA_C if EXTRA_C in contexts else contexts[len(contexts) // 2]
    extra_b = EXTRA_B if EXTRA_B in batches else batches[-1]
    n_seq = max(batches[-1], 2 * extra_b - 1 if extras else 1)
    tail = max(STEP + 1, repeats + 2)
    per_seq = 256 * math.ceil((contexts[-1] + tail) / 256)
    if per_seq > lm.n_ctx_train():
        raise ValueError(f"context {contexts[-1]} + {tail} exceeds {model}'s training context "
                         f"{lm.n_ctx_train()}")
    chunk = list(lm.tokenize(TEXT.encode(), False, False))
    ids = list(lm.tokenize(TEXT.encode(), True, False))
    while len(ids) < contexts[-1] + tail + 1:
        ids += chunk
    cells: list[dict[str, Any]] = []
    base = {"model": model, "name": model_name(model), "threads": threads}

    def run(variant: str, flash_attn: bool, cs: Sequence[int], grid: bool) -> dict[str, Any]:
        bench = Bench(llama_cpp, _internals, lm, n_seq=n_seq, per_seq=per_seq, threads=threads,
                      flash_attn=flash_attn, max_rows=batches[-1] * STEP)
        try:
            for c in cs:
                cell: dict[str, Any] = {**base, "kind": "prefill", "variant": variant, "C": c,
                                        "B": 1, "from": bench.cached}
                with _machine_share(cell):
                    rows, seconds = bench.extend(ids, c)
                cells.append({**cell, "rows": rows, "ms_per_row": 1e3 * seconds / rows,
                              "repeats_ms_per_row": [1e3 * seconds / rows]})
                bench.copy_all()
                for b in batches if grid else ():
                    for kind in ("decode", "score"):
                        cell = {**base, "kind": kind, "variant": variant, "C": c, "B": b}
                        with _machine_share(cell):
                            cell.update(decode_cell(bench, range(b), ids[c], repeats)
                                        if kind == "decode" else
                                        score_cell(bench, b, ids, repeats))
                        cells.append(cell)
                if c == extra_c and extras:
                    # The engine's context: the same batch on every other seq_id; the
                    # flash-attention context: the engine's batch.
                    gapped = variant == "engine"
                    cell = {**base, "kind": "decode", "variant": "gapped" if gapped else variant,
                            "C": c, "B": extra_b}
                    seqs = range(0, 2 * extra_b, 2) if gapped else range(extra_b)
                    with _machine_share(cell):
                        cell.update(decode_cell(bench, seqs, ids[c], repeats))
                    cells.append(cell)
            return bench.settings
        finally:
            bench.close()

    t0 = time.perf_counter()
    try:
        settings = {"engine": run("engine", False, contexts, True)}
        if extras:
            settings["flash_attn"] = run("flash_attn", True, [extra_c], False)
    finally:
        lm.close()
    return {"model": model, "name": base["name"], "path": path,
            "load_seconds": round(load_seconds, 2),
            "seconds": round(time.perf_counter() - t0, 1), "settings": settings, "cells": cells}


def measure(models: Sequence[str], *, contexts: Sequence[int] = CONTEXTS,
            batches: Sequence[int] = BATCHES, repeats: int = 3, threads: int = 2,
            extras: bool = True) -> dict[str, Any]:
    """The grids of ``models`` with the machine they ran on (load, host steal, date)."""
    if repeats < 1 or threads < 1 or min(batches) < 1 or min(contexts) < 1:
        raise ValueError("repeats, threads, batches and contexts must all be >= 1")
    import llama_cpp

    ticks, load = cpu_ticks(), os.getloadavg()
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.perf_counter()
    results = [measure_model(m, contexts=contexts, batches=batches, repeats=repeats,
                             threads=threads, extras=extras) for m in models]
    end_ticks = cpu_ticks()
    return {
        "date": started.isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(), "boot_id": boot_id(),
        "platform": platform.platform(), "python": platform.python_version(),
        "llama_cpp_python": getattr(llama_cpp, "__version__", "?"),
        "threads": threads, "repeats": repeats, "step": STEP,
        # libggml-cpu is built with OpenMP here: how its threads wait at barriers (spinning
        # by default) decides what a call costs when other work shares the cores.
        "env": {k: os.environ.get(k) for k in OPENMP_ENV},
        "contexts": sorted(set(contexts)), "batches": sorted(set(batches)),
        "load_before": list(load), "load_after": list(os.getloadavg()),
        "cpu_share": cpu_share(ticks, end_ticks) if ticks and end_ticks else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "models": results,
    }


# -- reporting ------------------------------------------------------------------------------

ROLES = ("draft", "target", "shared")

CAVEATS = """\
What this comparison can and cannot attribute:

- The grid is each model alone on {threads} thread(s), every sequence of a call at the same
  context, seq_ids in one consecutive run, nothing else of ours running; load and host steal
  while it ran are in its header.  A run's `engine_calls` count only the `llama_decode` calls
  (their seconds exclude `wait_seconds`, the time a call waited for a free core of the run's
  pool), so the ratio is of compute against compute.
- Context: CallStats record no context lengths, so each in-run figure is set against the
  grid's range over C at the grid batch nearest the run's mean batch; a ratio above the
  range's top (the grid's longest context) is not explained by context length up to that C.
  Within a run's call the sequences' contexts differ, and without flash attention every row
  of the call attends over as many cells as the longest sequence holds.
- Batch: only the mean batch is known.  If a call's cost is a + b x B (weights read once, each
  row's own work: the grid's "call fit"), the cost per row over the run is exactly
  a / mean batch + b, so the mean is the right statistic: the "fit" columns price the run's
  own mean batch, the "grid" columns the nearest grid B (not the mean).
- Prefill rows in a run mix scored steps (every row's logits, one sequence per call: the grid's
  score at B = 1, `llama_decode` only) and context reads (last-token logits only, cheaper: the
  grid's prefill rows); `first_rows` and `evicted_rows` say how many were context reads.
- Threads: "threads per call" is `thread_seconds` over busy seconds; below {threads} the run's
  calls computed on fewer cores than the grid's (one engine's call starting while the other's
  held a core), which the ratio does not separate from the rest.
- CPU obtained: "process CPU / engines' thread-seconds" (under each table) compares the CPU
  time the run's process got with what its calls' threads asked for (threads x call seconds).
  Below 1, the calls' threads waited for a CPU that others had (other processes on the
  machine; steal is counted apart), and the in-run cost per row is inflated by about its
  inverse.  Near or above 1 it says nothing either way: our own Python work adds CPU time, and
  llama.cpp's threads spin at barriers (CPU time that computes nothing).
- Drift: the grid prices this machine as it was when the grid ran.  A run on another boot or
  day ran on hardware that may have been slower or faster (the same target-only command took
  1077 s on 2026-12-01 and 2189 s on 2026-12-03); only runs on the grid's boot, close in time,
  are a like-for-like comparison.
- Not recorded by a run, so not attributable here: the other engine and our own Python work
  (sampling over the vocabulary, the log-softmax of scores, the event loop) computing on the
  same cores during a call (llama.cpp's threads spin at barriers, so one thread preempted
  stalls the call), the seq_id layout of each decode batch (a batch on non-consecutive
  seq_ids runs as one graph per consecutive run, each paying the call's a again; see the
  `gapped` cell), and host steal of runs made before sessions recorded it (shown where
  recorded, as is the grid's own).
"""


def _cells(grid: dict[str, Any], name: str, kind: str, variant: str = "engine"
           ) -> list[dict[str, Any]]:
    return [c for m in grid["models"] if m["name"] == name for c in m["cells"]
            if c["kind"] == kind and c["variant"] == variant]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def grid_tables(grid: dict[str, Any]) -> list[str]:
    lines = []
    for model in grid["models"]:
        name, batches = model["name"], grid["batches"]
        s = model["settings"]["engine"]
        lines += ["", f"### {name} ({model['model']}): ms per row, median of {grid['repeats']}",
                  "", f"flash attention {'on' if s['flash_attn'] else 'off'}, KV {s['type_k']}/"
                  f"{s['type_v']}, one buffer per sequence, n_ubatch {s['n_ubatch']}, "
                  f"{s['threads']} thread(s); model measured in {model['seconds']} s."]
        for kind, label in (("decode", "decode (one row per sequence, one call)"),
                            ("score", f"score ({STEP}-token step per sequence, every row's "
                                      "logits + log-softmax; in brackets llama_decode alone)")):
            cells = {(c["C"], c["B"]): c for c in _cells(grid, name, kind)}
            fits = _fits(grid, name) if kind == "decode" else {}
            fit_head = " | call fit a + b x B (ms)" if fits else ""
            lines += ["", f"{label}:", "", "| C \\ B | " + " | ".join(map(str, batches))
                      + fit_head + " |", "|---" * (len(batches) + 1 + bool(fits)) + "|"]
            for c in grid["contexts"]:
                row = []
                for b in batches:
                    cell = cells.get((c, b))
                    text = "-" if cell is None else _fmt(cell["ms_per_row"], 2)
                    if cell is not None and kind == "score":
                        text += f" ({_fmt(cell['call_ms_per_row'], 2)})"
                    row.append(text)
                if fits:
                    fit = fits.get(c)
                    row.append("-" if fit is None else f"{fit[0]:.2f} + {fit[1]:.2f} B")
                lines.append(f"| {c} | " + " | ".join(row) + " |")
        prefill = _cells(grid, name, "prefill")
        if prefill:
            lines += ["", "prefill of the context (sequence 0, chunks of "
                      f"{s['n_ubatch']}, last-token logits): "
                      + "; ".join(f"{p['from']}..{p['C']}: {_fmt(p['ms_per_row'], 2)} ms/row"
                                  for p in prefill)]
        extras = [c for c in model["cells"] if c["variant"] != "engine" and
                  c["kind"] == "decode"]
        if extras:
            lines += ["", "| extra decode cell | C | B | ms per row | beside the grid's |",
                      "|---|---|---|---|---|"]
            for e in extras:
                ref = next((c for c in _cells(grid, name, "decode")
                            if (c["C"], c["B"]) == (e["C"], e["B"])), None)
                what = {"gapped": "seq_ids 0, 2, 4, ... (not one consecutive run)",
                        "flash_attn": "flash attention on (its own context)"}[e["variant"]]
                ratio = (f"{e['ms_per_row'] / ref['ms_per_row']:.2f}x"
                         if ref and ref["ms_per_row"] > 0 else "-")
                lines.append(f"| {what} | {e['C']} | {e['B']} | {_fmt(e['ms_per_row'], 2)} | "
                             f"{ratio} |")
    return lines


def _nearest(batches: Sequence[int], mean: float) -> int:
    return min(batches, key=lambda b: (abs(math.log(b) - math.log(mean)), b))


def _role_model(manifest: dict[str, Any], role: str) -> str | None:
    config = manifest.get("config") or {}
    model = config.get("draft" if role in ("draft", "shared") else "target")
    return None if model is None else model_name(str(model))


def load_runs(patterns: Sequence[str]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The manifests the patterns name (``**`` recursive), and those without engine_calls."""
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)})
    found, skipped = [], []
    for path in paths:
        try:
            manifest = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable manifest ({err})") from err
        session = manifest.get("last_session") if isinstance(manifest, dict) else None
        if not isinstance(session, dict) or not isinstance(session.get("engine_calls"), dict):
            skipped.append(path)
            continue
        found.append((path, manifest))
    return found, skipped


def _label(path: str, paths: Sequence[str]) -> str:
    dirs = [str(Path(p).parent) for p in paths]
    root = os.path.commonpath(dirs) if len(dirs) > 1 else str(Path(dirs[0]).parent.parent)
    return os.path.relpath(str(Path(path).parent), root)


def call_fit(cells: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """Least squares of a decode call's ms against its batch: (a, b) of a + b x B, where a is
    what a call costs whatever its batch (the weights read once, the graph) and b what each
    row adds.  None with fewer than two batch sizes."""
    if len({c["B"] for c in cells}) < 2:
        return None
    xs = np.array([c["B"] for c in cells], dtype=float)
    ys = np.array([c["ms_per_row"] * c["B"] for c in cells], dtype=float)
    b, a = np.polyfit(xs, ys, 1)
    return float(a), float(b)


def _fits(grid: dict[str, Any], name: str) -> dict[int, tuple[float, float]]:
    """The decode call fit of each context C of a model."""
    cells = _cells(grid, name, "decode")
    fits = {c: call_fit([x for x in cells if x["C"] == c]) for c in grid["contexts"]}
    return {c: f for c, f in fits.items() if f is not None}


def _boot_note(manifest: dict[str, Any], grid: dict[str, Any]) -> str:
    found = boots(manifest)
    if found is None or not grid.get("boot_id"):
        return "boot not recorded"
    return "the grid's boot" if found == {grid["boot_id"]} else "another boot than the grid's"


def run_rows(grid: dict[str, Any], runs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """One row per (run, role, kind): the in-run cost per row beside the grid's."""
    names = {m["name"] for m in grid["models"]}
    over = ", ".join(map(str, grid["contexts"]))
    lines = ["| run | role (model) | kind | calls | mean rows per call | ms per row in run | "
             f"threads per call | wait / wall | grid B | grid ms per row over C ({over}) | "
             "in run / grid | fit a / mean + b over C | in run / fit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    paths = [p for p, _ in runs]
    for path, manifest in runs:
        session = manifest["last_session"]
        wall = float(session.get("wall_seconds") or 0)
        label = _label(path, paths)
        steal = host_steal(manifest)
        thread_seconds = sum(float(c.get("thread_seconds", 0))
                             for c in session["engine_calls"].values())
        cpu = session.get("cpu_seconds")
        obtained = (f"{float(cpu) / thread_seconds:.2f}" if cpu is not None and thread_seconds
                    else "-")
        notes.append(f"- {label}: wall {wall:.0f} s, cores used "
                     f"{_fmt(session.get('cores_used'), 2)}, process CPU / engines' "
                     f"thread-seconds {obtained}, host steal "
                     f"{'not recorded' if steal is None else f'{steal:.1%}'}, "
                     f"{_boot_note(manifest, grid)}")
        for role, calls in session["engine_calls"].items():
            name = _role_model(manifest, role) or role
            busy = float(calls.get("decode_seconds", 0)) + float(calls.get("prefill_seconds", 0))
            threads = float(calls.get("thread_seconds", 0)) / busy if busy > 0 else None
            wait = float(calls.get("wait_seconds", 0)) / wall if wall > 0 else None
            for kind, grid_kind, key in (("decode", "decode", "ms_per_row"),
                                         ("prefill", "score", "call_ms_per_row")):
                n_calls = int(calls.get(f"{kind}_calls", 0))
                rows = int(calls.get(f"{kind}_rows", 0))
                if not n_calls or not rows:
                    continue
                mean = rows / n_calls
                ms = 1e3 * float(calls[f"{kind}_seconds"]) / rows
                what = kind
                if kind == "prefill":
                    reads = int(calls.get("first_rows", 0)) + int(calls.get("evicted_rows", 0))
                    what += (f" ({reads / rows:.0%} context reads)" if "first_rows" in calls
                             else " (context reads not recorded)")
                cells = _cells(grid, name, grid_kind) if name in names else []
                if kind == "decode":
                    b = _nearest(sorted({c["B"] for c in cells}), mean) if cells else None
                else:  # a run scores one sequence per call
                    b = 1 if any(c["B"] == 1 for c in cells) else None
                grid_text, ratio = _range(ms, [c[key] for c in cells if c["B"] == b])
                if not cells:
                    grid_text = f"no grid for {name}"
                fit_text, fit_ratio = "-", "-"
                if kind == "decode" and cells:
                    fit_text, fit_ratio = _range(ms, [a / mean + slope for a, slope in
                                                      _fits(grid, name).values()])
                lines.append(f"| {label} | {role} ({name}) | {what} | {n_calls} | {mean:.2f} | "
                             f"{ms:.2f} | {_fmt(threads, 2)} | "
                             f"{'-' if wait is None else f'{wait:.0%}'} | "
                             f"{'-' if b is None else b} | {grid_text} | {ratio} | {fit_text} | "
                             f"{fit_ratio} |")
    return [*lines, "", *notes]


def _range(ms: float, costs: Sequence[float]) -> tuple[str, str]:
    """The grid's costs as lo-hi, and the run's cost over them (a range: dearest first)."""
    costs = [c for c in costs if c > 0 and math.isfinite(c)]
    if not costs:
        return "-", "-"
    lo, hi = min(costs), max(costs)
    return f"{_fmt(lo, 2)}-{_fmt(hi, 2)}", f"{ms / hi:.2f}-{ms / lo:.2f}x"


def report(grid: dict[str, Any], runs: Sequence[tuple[str, dict[str, Any]]],
           skipped: Sequence[str]) -> str:
    share = grid.get("cpu_share") or {}
    steal = "not recorded" if not share else f"{share['steal']:.1%}"
    lines = ["# Where the per-row cost goes: llama.cpp grid against the runs' engine calls", "",
             f"Grid: {grid['cpu']}, {grid['cores']} cores, {grid['threads']} thread(s), "
             f"llama-cpp-python {grid['llama_cpp_python']}, {grid['date']}, "
             f"{grid['seconds']} s; load {grid['load_before'][0]:.2f} before, "
             f"{grid['load_after'][0]:.2f} after; host steal "
             f"{steal} "
             f"(busy {_fmt(100 * share['busy'] if share else None, 0)}%); boot "
             f"{grid.get('boot_id') or 'unknown'}; "
             + (", ".join(f"{k}={v}" for k, v in (grid.get("env") or {}).items()
                          if v is not None) or "OpenMP waiting at its default (spinning)")
             + ".", ""]
    lines += grid_tables(grid)
    lines += ["", "## The runs' engine calls beside the grid", ""]
    if runs:
        lines += ["Per row of each engine's `llama_decode` calls in a run "
                  "(`last_session.engine_calls`): seconds x 1000 / rows; decode rows are "
                  "sequences, prefill rows tokens.  The grid's figure is its decode at the batch "
                  "nearest the run's mean (\"grid B\"), or its score at B = 1 `llama_decode` "
                  "alone for prefill, over every context C; the ratio's range runs from the "
                  "grid's dearest C to its cheapest.", ""]
        lines += run_rows(grid, runs)
    else:
        lines.append("No run manifest with `engine_calls` was given.")
    if skipped:
        lines += ["", f"Skipped ({len(skipped)}, no `last_session.engine_calls`): "
                  + ", ".join(skipped)]
    lines += ["", CAVEATS.format(threads=grid["threads"])]
    return "\n".join(lines).rstrip() + "\n"


# -- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="time the grid and write it as JSON")
    m.add_argument("--models", nargs="+", default=list(MODELS), help="names or GGUF paths")
    m.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS))
    m.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--threads", type=int, default=machine_cores(),
                   help="threads of every call (default: all the cores this process may use)")
    m.add_argument("--no-extras", action="store_true",
                   help="skip the gapped and flash-attention decode cells")
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("report", help="the grid beside the runs' engine calls, as markdown")
    r.add_argument("--grid", type=Path, required=True, help="the JSON of measure")
    r.add_argument("--runs", nargs="*", default=[], help="manifest paths or globs (** allowed)")
    r.add_argument("--markdown", type=Path, help="write here (default: print)")
    args = parser.parse_args(argv)
    if args.command == "measure":
        grid = measure(args.models, contexts=args.contexts, batches=args.batches,
                       repeats=args.repeats, threads=args.threads, extras=not args.no_extras)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(grid, indent=1) + "\n")
        print(report(grid, [], []), end="")
        print(f"wrote {args.out} ({grid['seconds']} s)", file=sys.stderr)
        return 0
    runs, skipped = load_runs(args.runs)
    text = report(json.loads(args.grid.read_text()), runs, skipped)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
