"""bench/bench_row_cost.py: its grid on the tiny model has every cell and the machine it ran on,
the copies of the context hold that context, and its report prices a hand-written run's engine
calls as computed by hand.  No timing is asserted (the cores are shared)."""

from __future__ import annotations

import json
import math

import pytest

CONTEXTS, BATCHES = (16, 32), (1, 2)


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("bench_row_cost")


@pytest.fixture(scope="module")
def grid_path(bench, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("row_cost") / "grid.json"
    code = bench.main(["measure", "--models", str(tiny_model), "--contexts", *map(str, CONTEXTS),
                       "--batches", *map(str, BATCHES), "--repeats", "2", "--threads", "1",
                       "--out", str(out)])
    assert code == 0
    return out


def test_the_grid_has_every_cell_finite_and_the_machine(grid_path):
    grid = json.loads(grid_path.read_text())
    for field in ("date", "cpu", "cores", "threads", "load_before", "load_after", "cpu_share",
                  "boot_id", "llama_cpp_python", "seconds", "env"):
        assert field in grid, field
    assert grid["threads"] == 1 and len(grid["load_before"]) == 3
    assert set(grid["cpu_share"]) == {"busy", "idle", "steal"}
    (model,) = grid["models"]
    assert model["name"] == "smollm2-135m"
    engine = model["settings"]["engine"]
    assert (engine["flash_attn"], engine["kv_unified"], engine["type_k"]) == (False, False, "f16")
    assert model["settings"]["flash_attn"]["flash_attn"] is True
    cells = {(c["kind"], c["variant"], c["C"], c["B"]): c for c in model["cells"]}
    expected = {(kind, "engine", c, b) for kind in ("decode", "score") for c in CONTEXTS
                for b in BATCHES}
    expected |= {("prefill", "engine", c, 1) for c in CONTEXTS}
    # The extra cells sit at the middle context asked for and the largest batch.
    expected |= {("decode", "gapped", 32, 2), ("decode", "flash_attn", 32, 2),
                 ("prefill", "flash_attn", 32, 1)}
    assert set(cells) == expected
    for key, cell in cells.items():
        values = [cell["ms_per_row"], *cell["repeats_ms_per_row"],
                  *cell.get("repeats_call_ms_per_row", [])]
        assert all(math.isfinite(v) and v > 0 for v in values), key
        assert "cpu_share" in cell and cell["seconds"] >= 0
        if key[0] != "prefill":
            assert len(cell["repeats_ms_per_row"]) == 2, key
        if key[0] == "score":
            assert 0 < cell["call_ms_per_row"] <= cell["ms_per_row"], key
        if key[0] == "decode" and key[3] > 1:
            # Every copy of sequence 0 holds its context: each row of the first call (the
            # same token after the same context) equals sequence 0's.
            assert cell["copy_check"] < 1e-3, key


def _calls(**kw):
    counts = ("decode_calls", "decode_rows", "prefill_calls", "prefill_rows", "first_rows",
              "evicted_rows")
    base: dict[str, float] = dict.fromkeys(counts, 0)
    base.update(dict.fromkeys(("decode_seconds", "prefill_seconds", "wait_seconds",
                               "thread_seconds"), 0.0))
    return {**base, **kw}


def test_the_report_sets_a_runs_calls_beside_the_grid(bench, grid_path, tmp_path):
    run = tmp_path / "runs" / "atts-x" / "rep0"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({
        "config": {"draft": "smollm2-135m", "target": "tiny"},
        "sessions": [{"boot_id": "b", "written": 30, "wall_seconds": 10.0,
                      "cpu_share": {"busy": 0.9, "idle": 0.05, "steal": 0.05}}],
        "last_session": {"wall_seconds": 10.0, "cores_used": 1.5, "cpu_seconds": 15.0,
                         "engine_calls": {
            # 30 rows in 10 calls: 3.00 a call, 600 ms / 30 = 20.00 ms a row; 64 prefill
            # rows in 4 calls at 5.00 ms, 16 of them the first read of a context (25%);
            # 1.84 thread-seconds over 0.92 s busy: 2.00 threads; 0.5 s waiting of 10: 5%.
            "draft": _calls(decode_calls=10, decode_rows=30, decode_seconds=0.6,
                            prefill_calls=4, prefill_rows=64, prefill_seconds=0.32,
                            first_rows=16, wait_seconds=0.5, thread_seconds=1.84),
            # 40 rows in 5 calls: 8.00 a call, 2000 ms / 40 = 50.00 ms a row.
            "target": _calls(decode_calls=5, decode_rows=40, decode_seconds=2.0,
                             thread_seconds=2.0)}}}))
    old = tmp_path / "runs" / "old" / "rep0"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"config": {}, "last_session": {}}))
    out = tmp_path / "row_cost.md"
    assert bench.main(["report", "--grid", str(grid_path), "--runs",
                       str(tmp_path / "runs" / "**" / "manifest.json"),
                       "--markdown", str(out)]) == 0
    text = out.read_text()
    grid = json.loads(grid_path.read_text())

    def grid_range(kind, key, b):
        costs = [c[key] for c in grid["models"][0]["cells"]
                 if (c["kind"], c["variant"], c["B"]) == (kind, "engine", b)]
        return min(costs), max(costs)

    lo, hi = grid_range("decode", "ms_per_row", 2)  # mean batches 3 and 8: nearest grid B 2
    draft = (f"| atts-x/rep0 | draft (smollm2-135m) | decode | 10 | 3.00 | 20.00 | 2.00 | 5% | 2 | "
             f"{lo:.2f}-{hi:.2f} | {20 / hi:.2f}-{20 / lo:.2f}x | ")
    target = (f"| atts-x/rep0 | target (smollm2-135m) | decode | 5 | 8.00 | 50.00 | 1.00 | 0% | "
              f"2 | {lo:.2f}-{hi:.2f} | {50 / hi:.2f}-{50 / lo:.2f}x | ")
    assert draft in text and target in text
    # The call fit through B = 1 and 2 at each C (m1 ms a row alone, m2 a row in two):
    # b = 2 m2 - m1, a = 2 m1 - 2 m2; the run's mean batch priced a / mean + b.
    for row, mean, ms in ((draft, 3, 20), (target, 8, 50)):
        preds = []
        for c in CONTEXTS:
            m1, m2 = (next(x["ms_per_row"] for x in grid["models"][0]["cells"]
                           if (x["kind"], x["variant"], x["C"], x["B"]) == ("decode", "engine",
                                                                            c, b))
                      for b in (1, 2))
            preds.append((2 * m1 - 2 * m2) / mean + 2 * m2 - m1)
        preds = [x for x in preds if x > 0]
        line = next(li for li in text.splitlines() if li.startswith(row))
        fit_text, fit_ratio = line.removeprefix(row).strip(" |").split(" | ")
        if preds:
            lo_f, hi_f = min(preds), max(preds)
            assert fit_text == f"{lo_f:.2f}-{hi_f:.2f}"
            assert fit_ratio == f"{ms / hi_f:.2f}-{ms / lo_f:.2f}x"
        else:  # noisy timings on shared cores can make the fitted a negative
            assert (fit_text, fit_ratio) == ("-", "-")
    lo, hi = grid_range("score", "call_ms_per_row", 1)  # scoring: one sequence a call
    assert (f"| atts-x/rep0 | draft (smollm2-135m) | prefill (25% context reads) | 4 | 16.00 | "
            f"5.00 | 2.00 | 5% | 1 | {lo:.2f}-{hi:.2f} | {5 / hi:.2f}-{5 / lo:.2f}x | - | - |"
            ) in text
    assert "target (smollm2-135m) | prefill" not in text  # no prefill calls, no row
    assert "host steal 5.0%" in text and "another boot than the grid's" in text
    # 15 s of process CPU against the 1.84 + 2.0 thread-seconds the calls asked for
    assert f"thread-seconds {15 / 3.84:.2f}" in text
    assert "Skipped (1, no `last_session.engine_calls`)" in text and "old" in text
    assert "can and cannot attribute" in text
    assert "| C \\ B | 1 | 2 |" in text
    assert "seq_ids 0, 2, 4, ..." in text and "flash attention on" in text


def test_a_role_whose_model_has_no_grid_says_so(bench, grid_path):
    grid = json.loads(grid_path.read_text())
    manifest = {"config": {"draft": "qwen2.5-coder-0.5b", "target": "qwen2.5-coder-1.5b"},
                "last_session": {"wall_seconds": 1.0, "engine_calls": {
                    "target": _calls(decode_calls=1, decode_rows=4, decode_seconds=0.1)}}}
    text = bench.report(grid, [("r/rep0/manifest.json", manifest)], [])
    assert "no grid for qwen2.5-coder-1.5b" in text


def test_the_call_fit_recovers_a_linear_call_cost(bench):
    """Calls costing 40 ms + 30 ms a row: the fit gives (40, 30), whatever the batches."""
    cells = [{"B": b, "ms_per_row": (40 + 30 * b) / b} for b in (1, 2, 4, 8, 16)]
    a, b = bench.call_fit(cells)
    assert (a, b) == (pytest.approx(40), pytest.approx(30))
    assert bench.call_fit(cells[:1]) is None
