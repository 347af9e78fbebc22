"""bench/bench_gpu_roofline.py: the decoder it times is a correct causal decoder of the
presets' shapes, and its report compares measurements with the roofline.  Timing itself needs a
GPU (``measure`` there); nothing here times anything."""

from __future__ import annotations

import argparse
import json

import pytest


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("bench_gpu_roofline")


def test_every_built_shape_has_its_presets_parameter_count(bench):
    for name in bench.ATTENTION_AND_MLP:
        shape = bench._shape(name)
        assert shape.params == pytest.approx(shape.spec.params, rel=0.01), name


@pytest.mark.parametrize("attention", ["matmul", "sdpa"])
def test_chunked_prefill_then_decode_equals_one_causal_pass(bench, attention):
    """The cases time work that is right: a prompt prefilled in chunks after cached context,
    then tokens decoded one at a time, give the hidden states of one causal pass."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    shape = bench.Shape(bench.ModelSpec("tiny", 0, 2, 64, 97, 2, 16), 4, 96, True)
    model = bench.Decoder(torch, shape, "cpu", torch.float32, attention)
    x = model.embed[torch.randint(0, 97, (2, 7))]
    whole = model.forward(x, model.kv_cache(2, 7), 0, model.rotary(0, 7), model.causal_mask(0, 7))
    cache, parts, at = model.kv_cache(2, 7), [], 0
    for size in (3, 2, 1, 1):
        parts.append(model.forward(x[:, at:at + size], cache, at, model.rotary(at, size),
                                   model.causal_mask(at, size)))
        at += size
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5)
    # Causal: the first token's state does not depend on the later ones.
    alone = model.forward(x[:, :1], model.kv_cache(2, 1), 0, model.rotary(0, 1), None)
    assert torch.allclose(alone, whole[:, :1], atol=1e-5)


def _report(bench, tmp_path, rows):
    results = tmp_path / "gpu.json"
    results.write_text(json.dumps({"gpu": "test", "torch": "0", "ceilings": {}, "rows": rows}))
    args = argparse.Namespace(results=str(results), device="h200", markdown=None, section="gpu",
                              benchmarks=str(tmp_path / "B.md"), attention="matmul",
                              point=["qwen2.5-7b", "qwq-32b", "32", "4096", "512"])
    bench.report(args)
    return (tmp_path / "B.md").read_text()


def test_report_prices_each_case_and_the_operating_point(bench, tmp_path):
    from atts.perf.devices import engine
    from atts.perf.roofline import iteration_seconds

    def row(model, kind, batch, context, tokens, seconds):
        return {"model": model, "kind": kind, "batch": batch, "context": context,
                "tokens": tokens, "rows": tokens if kind == "score" else 1,
                "graph_s": seconds, "eager_s": seconds}

    # Decode exactly at the roofline (100%), score at half of it.
    ideal = engine("qwq-32b", "h200", mfu=1.0, mbu=1.0, overhead=0.0)
    td = iteration_seconds(ideal, [4096] * 32)
    rows = [row("qwq-32b", "decode", 32, 4096, 1, td),
            row("qwen2.5-7b", "decode", 32, 4096, 1, 0.02),
            row("qwq-32b", "score", 1, 4096, 512, 0.1)]
    text = _report(bench, tmp_path, rows)
    assert "| qwq-32b | matmul | decode | 32 | 4096 | 1 |" in text
    assert "memory | 100% |" in text
    # The bound at r = 0.1, computed here by hand: per drafted token the draft decodes one
    # (0.02 s / 32 rows), the target scores one (0.1 s / 512) and decodes r of a step; the
    # two overlap, and 1 + r tokens are kept (continue); target-only pays td / 32 per token.
    draft, score, decode = 0.02 / 32, 0.1 / 512, td / 32
    expected = decode * (1 + 0.1) / max(draft, score + 0.1 * decode)
    assert f"| 0.1 | {expected:.2f}x |" in text


def test_report_says_when_the_operating_point_was_not_measured(bench, tmp_path):
    text = _report(bench, tmp_path, [{"model": "qwq-32b", "kind": "decode", "batch": 1,
                                      "context": 1024, "tokens": 1, "rows": 1,
                                      "graph_s": 0.03, "eager_s": 0.03}])
    assert "No operating point" in text
