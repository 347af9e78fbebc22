"""Check the simulator's GPU cost model on a real GPU: time the engine iterations that
``atts.perf.roofline.iteration_seconds`` prices, for the paper's model shapes.

The simulator (``atts simulate``) prices an iteration as ``overhead + max(bytes / (mbu x
bandwidth), flops / (mfu x peak))`` with assumed fractions (``EngineSpec``: mfu 0.55, mbu 0.75,
3 ms overhead).  This script measures what a GPU gives for the three kinds of work ATTS mixes:

- decode: B sequences with C cached tokens each decode one token (memory-bound);
- score: one S-token step after C cached tokens, every row's logits and a float32 log-softmax
  (the target's verification pass: compute-bound for long steps);
- prefill: a P-token prompt, one logits row.

Each model is a bare decoder of the real shape (``atts.perf.devices.MODELS``: layers, hidden,
KV heads, head size, vocabulary; attention heads and MLP width from the models' config.json)
with random bf16 weights (timing does not depend on the values): RMSNorm, fused q/k/v (with
Qwen's bias), rotary embedding, grouped-query attention over a preallocated KV cache, SwiGLU MLP,
vocabulary head.  Attention (``--attention``) is two batched matmuls by default (each K/V row
read once; no flash kernel), or torch's ``scaled_dot_product_attention`` (``sdpa``: fused
kernels where torch has one for the case; checked equal to ``matmul`` on the CPU, not yet timed
on a GPU).  Every case runs as a CUDA graph (launch overhead removed, as in vLLM's decode
graphs) and eagerly (what an engine without graphs pays); medians of 10 replays after warm-ups.

This is the hardware side of the model only: no scheduler, sampling, paging or batching
policy, so the simulator's per-iteration ``overhead`` is not measured here.

Run on a GPU machine (torch only; writes JSON):
    PYTHONPATH=src python3 bench/bench_gpu_roofline.py measure \
        --models qwen2.5-7b qwq-32b r1-distill-qwen-1.5b --out bench/results/gpu_roofline.json
Then anywhere (numpy only), compare with the roofline and the simulator's preset:
    .venv/bin/python bench/bench_gpu_roofline.py report bench/results/gpu_roofline.json \
        --device h200 --markdown bench/results/gpu_roofline.md --section gpu_roofline
``measure --smoke`` runs a tiny shape on the CPU (checks the code, times nothing useful).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.perf.devices import GIB, MODELS, ModelSpec

# name -> (attention heads, MLP intermediate size, q/k/v bias), from each model's config.json;
# the rest of the shape comes from atts.perf.devices.MODELS (checked against its parameter
# count in ``_shape``).
ATTENTION_AND_MLP = {
    "r1-distill-qwen-1.5b": (12, 8960, True),
    "qwen2.5-7b": (28, 18944, True),
    "qwq-32b": (40, 27648, True),
    "llama-3.1-8b": (32, 14336, False),
}
DEFAULT_MODELS = ("qwen2.5-7b", "qwq-32b")
BATCHES = (1, 8, 32, 128)
CONTEXTS = (1024, 4096)
SCORES = ((128, 1024), (512, 1024), (512, 4096))  # (step tokens, cached context)
PREFILLS = (512, 2048, 4096)
KV_BUDGET = 40 * GIB  # the largest KV cache a case may allocate (the 32B weights take 61 GiB)


@dataclass(frozen=True)
class Shape:
    spec: ModelSpec
    heads: int
    intermediate: int
    bias: bool

    @property
    def params(self) -> int:
        h, d, kv = self.spec.hidden, self.spec.head_dim, self.spec.kv_heads
        attention = h * (self.heads + 2 * kv) * d + self.heads * d * h
        bias = (self.heads + 2 * kv) * d if self.bias else 0
        layer = attention + bias + 3 * h * self.intermediate + 2 * h
        embeddings = self.spec.vocab * h * (1 if self.spec.tied else 2)
        return self.spec.layers * layer + embeddings + h


def _shape(name: str) -> Shape:
    if name not in ATTENTION_AND_MLP:
        raise SystemExit(f"no attention/MLP shape for {name!r}; known: "
                         f"{', '.join(ATTENTION_AND_MLP)}")
    shape = Shape(MODELS[name], *ATTENTION_AND_MLP[name])
    if abs(shape.params / shape.spec.params - 1) > 0.01:
        raise SystemExit(f"{name}: the built shape has {shape.params / 1e9:.2f} B parameters, "
                         f"atts.perf.devices says {shape.spec.params / 1e9:.2f} B")
    return shape


# -- the decoder (torch is imported only by ``measure``) ------------------------------------
class Decoder:
    """Random-weight decoder of one shape; ``forward`` runs ``x`` (B x s new tokens) after
    ``context`` cached positions of the given KV cache and returns the last hidden states."""

    def __init__(self, torch: Any, shape: Shape, device: str, dtype: Any,
                 attention: str = "matmul") -> None:
        self.torch, self.shape, self.attention = torch, shape, attention
        s, h = shape.spec, shape.spec.hidden
        qkv = (shape.heads + 2 * s.kv_heads) * s.head_dim

        def weight(*dims: int) -> Any:
            return torch.empty(*dims, device=device, dtype=dtype).normal_(0, 0.02)

        self.layers = [
            {"ln1": torch.ones(h, device=device, dtype=dtype), "qkv": weight(h, qkv),
             "qkv_b": weight(qkv) if shape.bias else None,
             "o": weight(shape.heads * s.head_dim, h),
             "ln2": torch.ones(h, device=device, dtype=dtype),
             "gate_up": weight(h, 2 * shape.intermediate), "down": weight(shape.intermediate, h)}
            for _ in range(s.layers)]
        self.embed = weight(s.vocab, h)
        self.head = self.embed if s.tied else weight(s.vocab, h)
        self.norm = torch.ones(h, device=device, dtype=dtype)
        self.device, self.dtype = device, dtype

    def kv_cache(self, batch: int, length: int) -> list[tuple[Any, Any]]:
        s = self.shape.spec
        dims = (batch, s.kv_heads, length, s.head_dim)
        return [(self.torch.zeros(dims, device=self.device, dtype=self.dtype),
                 self.torch.zeros(dims, device=self.device, dtype=self.dtype))
                for _ in range(s.layers)]

    def rotary(self, context: int, s: int) -> tuple[Any, Any]:
        torch, d = self.torch, self.shape.spec.head_dim
        inv = 1.0 / (1e6 ** (torch.arange(0, d, 2, device=self.device).float() / d))
        angles = torch.outer(torch.arange(context, context + s, device=self.device).float(), inv)
        angles = torch.cat([angles, angles], -1)
        return angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    def causal_mask(self, context: int, s: int) -> Any | None:
        """Additive mask over the query rows (group x s for ``matmul``, s for ``sdpa``) and
        context + s keys: token t sees keys up to context + t.  None where no mask is needed
        (one token; SDPA's own causal flag with nothing cached)."""
        if s == 1 or (self.attention == "sdpa" and context == 0):
            return None
        torch = self.torch
        t = torch.arange(s, device=self.device)[:, None]
        keys = torch.arange(context + s, device=self.device)[None, :]
        mask = torch.zeros(s, context + s, device=self.device, dtype=self.dtype)
        mask.masked_fill_(keys > context + t, float("-inf"))
        if self.attention == "sdpa":
            return mask
        return mask.repeat(self.shape.heads // self.shape.spec.kv_heads, 1)

    def forward(self, x: Any, cache: list[tuple[Any, Any]], context: int, rope: tuple[Any, Any],
                mask: Any | None) -> Any:
        torch, spec = self.torch, self.shape.spec
        f = torch.nn.functional
        b, s, _ = x.shape
        kv, d, heads = spec.kv_heads, spec.head_dim, self.shape.heads
        group = heads // kv
        cos, sin = rope

        def rms(v: Any, w: Any) -> Any:
            return f.rms_norm(v, (v.shape[-1],), w, 1e-6)

        def rotate(v: Any) -> Any:  # v [.., s, d]
            half = torch.cat([-v[..., d // 2:], v[..., :d // 2]], -1)
            return v * cos + half * sin

        for w, (k_cache, v_cache) in zip(self.layers, cache, strict=True):
            qkv = rms(x, w["ln1"]) @ w["qkv"]
            if w["qkv_b"] is not None:
                qkv = qkv + w["qkv_b"]
            q, k, v = qkv.split([heads * d, kv * d, kv * d], -1)
            q = rotate(q.view(b, s, kv, group, d).permute(0, 2, 3, 1, 4))  # b kv g s d
            k = rotate(k.view(b, s, kv, d).transpose(1, 2))
            k_cache[:, :, context:context + s] = k
            v_cache[:, :, context:context + s] = v.view(b, s, kv, d).transpose(1, 2)
            keys, values = k_cache[:, :, :context + s], v_cache[:, :, :context + s]
            if self.attention == "sdpa":  # PyTorch picks the kernel (flash where it can)
                out = f.scaled_dot_product_attention(
                    q.reshape(b, heads, s, d), keys, values, attn_mask=mask,
                    is_causal=mask is None and s > 1, enable_gqa=True).transpose(1, 2)
            else:  # two batched matmuls; each K/V row is read once for its whole group
                scores = (q.reshape(b, kv, group * s, d) @ keys.transpose(-1, -2)) / math.sqrt(d)
                if mask is not None:
                    scores = scores + mask
                probs = torch.softmax(scores, -1, dtype=torch.float32).to(self.dtype)
                out = (probs @ values).view(b, kv, group, s, d).permute(0, 3, 1, 2, 4)
            x = x + out.reshape(b, s, heads * d) @ w["o"]
            gate, up = (rms(x, w["ln2"]) @ w["gate_up"]).chunk(2, -1)
            x = x + (f.silu(gate) * up) @ w["down"]
        return rms(x, self.norm)


def _timed(torch: Any, run: Callable[[], Any], *, graph: bool, repeats: int) -> float:
    """Median seconds of one call, as a CUDA graph replay or eagerly (CPU: wall clock)."""
    if not torch.cuda.is_available():
        run()
        times = []
        for _ in range(max(1, repeats // 5)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    call: Callable[[], Any] = run
    cuda_graph = None
    if graph:
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            run()
        call = cuda_graph.replay
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del cuda_graph
    return statistics.median(times)


def _case(torch: Any, model: Decoder, kind: str, batch: int, context: int, tokens: int,
          repeats: int) -> dict[str, Any]:
    spec = model.shape.spec
    cache = model.kv_cache(batch, context + tokens)
    rope = model.rotary(context, tokens)
    mask = model.causal_mask(context, tokens)
    ids = torch.randint(0, spec.vocab, (batch, tokens), device=model.device)
    x = model.embed[ids]

    def run() -> Any:
        hidden = model.forward(x, cache, context, rope, mask)
        if kind == "score":  # every row's log-probability of the next (given) token
            logits = hidden[:, :-1] @ model.head.T
            logp = torch.log_softmax(logits, -1, dtype=torch.float32)
            return logp.gather(-1, ids[:, 1:, None]).sum()
        return (hidden[:, -1] @ model.head.T).argmax(-1)  # decode / prefill: the last row

    row = {"model": spec.name, "attention": model.attention, "kind": kind, "batch": batch,
           "context": context, "tokens": tokens, "rows": tokens if kind == "score" else 1}
    with torch.inference_mode():
        row["graph_s"] = _timed(torch, run, graph=True, repeats=repeats)
        row["eager_s"] = _timed(torch, run, graph=False, repeats=repeats)
    return row  # the case's KV cache is freed with this frame


def _kv_bytes(spec: ModelSpec, batch: int, length: int) -> float:
    return spec.kv_bytes_per_token * batch * length


def _ceilings(torch: Any) -> dict[str, float]:
    """What this GPU gives plain PyTorch: a device-to-device copy and a large bf16 matmul."""
    if not torch.cuda.is_available():
        return {}
    src = torch.empty(2 * GIB, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy = _timed(torch, lambda: dst.copy_(src), graph=False, repeats=10)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    matmul = _timed(torch, lambda: a @ a, graph=False, repeats=10)
    return {"copy_bytes_per_s": 2 * 2 * GIB / copy, "bf16_flops": 2 * 8192**3 / matmul}


def measure(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.out)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("no CUDA device: run this on a GPU machine, or pass --smoke")
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "python": sys.version.split()[0],
        "ceilings": _ceilings(torch), "rows": []}
    print(json.dumps({k: result[k] for k in ("gpu", "torch", "ceilings")}), flush=True)
    names = ["smoke"] if args.smoke else args.models
    for name in names:
        batches: tuple[int, ...] = BATCHES
        contexts: tuple[int, ...] = CONTEXTS
        scores: tuple[tuple[int, int], ...] = SCORES
        prefills: tuple[int, ...] = PREFILLS
        if name == "smoke":
            shape = Shape(ModelSpec("smoke", 0, 2, 64, 512, 2, 16), 4, 128, True)
            batches, contexts, scores, prefills = (1, 4), (32,), ((8, 32),), (16,)
        else:
            shape = _shape(name)
        started = time.perf_counter()
        model = Decoder(torch, shape, "cuda" if cuda else "cpu",
                        torch.bfloat16 if cuda else torch.float32, args.attention)
        print(f"{name}: built in {time.perf_counter() - started:.1f} s", flush=True)
        cases = [("decode", b, c, 1) for c in contexts for b in batches]
        cases += [("score", 1, c, s) for s, c in scores]
        cases += [("prefill", 1, 0, p) for p in prefills]
        for kind, batch, context, tokens in cases:
            if _kv_bytes(shape.spec, batch, context + tokens) > KV_BUDGET:
                continue
            try:
                row = _case(torch, model, kind, batch, context, tokens, args.repeats)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:  # skipped, not fatal
                row = {"model": name, "attention": args.attention, "kind": kind,
                       "batch": batch, "context": context, "tokens": tokens,
                       "error": str(err).splitlines()[0][:200]}
                torch.cuda.empty_cache()
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
            out.write_text(json.dumps(result, indent=1))  # a killed run keeps what it measured
        del model
        if cuda:
            torch.cuda.empty_cache()
    out.write_text(json.dumps(result, indent=1))


# -- the comparison with the model (numpy only) ---------------------------------------------
def report(args: argparse.Namespace) -> None:
    from atts.perf.devices import engine
    from atts.perf.roofline import iteration_seconds

    data = json.loads(Path(args.results).read_text())
    ceilings = data.get("ceilings", {})
    lines = [f"GPU: {data['gpu']}, torch {data['torch']}; the simulator's device preset "
             f"`{args.device}`.", ""]
    if ceilings:
        from atts.perf.devices import lookup_device

        dev = lookup_device(args.device)
        lines += [f"Ceilings plain PyTorch reached: device-to-device copy "
                  f"{ceilings['copy_bytes_per_s'] / 1e12:.2f} TB/s "
                  f"({ceilings['copy_bytes_per_s'] / dev.bandwidth:.0%} of the preset's "
                  f"{dev.bandwidth / 1e12:.1f}), 8192^3 bf16 matmul "
                  f"{ceilings['bf16_flops'] / 1e12:.0f} TFLOP/s "
                  f"({ceilings['bf16_flops'] / dev.peak_flops:.0%} of "
                  f"{dev.peak_flops / 1e12:.0f}).", ""]
    lines += ["| model | attention | work | batch | context | tokens | graph ms | eager ms "
              "| roofline ms (100%) | bound by | achieved | preset ms | preset / graph |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    achieved: dict[tuple[str, str, str], list[float]] = {}
    for row in data["rows"]:
        attention = row.get("attention", "matmul")
        if "error" in row:
            lines.append(f"| {row['model']} | {attention} | {row['kind']} | {row['batch']} | "
                         f"{row['context']} | {row['tokens']} | {row['error']} ||||||| ")
            continue
        ideal = iteration_seconds(_at_peak(row["model"], args.device), **_work(row))
        # The memory side alone: the same roofline on a device of unbounded FLOP/s.
        memory = iteration_seconds(_at_peak(row["model"], args.device, memory_only=True),
                                   **_work(row))
        bound = "memory" if memory >= ideal - 1e-12 else "compute"
        share = ideal / row["graph_s"]
        achieved.setdefault((attention, row["kind"], bound), []).append(share)
        predicted = iteration_seconds(engine(row["model"], args.device), **_work(row))
        lines.append(
            f"| {row['model']} | {attention} | {row['kind']} | {row['batch']} | "
            f"{row['context']} | {row['tokens']} | {row['graph_s'] * 1e3:.2f} | "
            f"{row['eager_s'] * 1e3:.2f} | {ideal * 1e3:.2f} | {bound} | {share:.0%} | "
            f"{predicted * 1e3:.2f} | {predicted / row['graph_s']:.2f} |")
    lines += ["", "Achieved share of the roofline (median over cases; the preset assumes "
              "mbu 0.75 for memory-bound and mfu 0.55 for compute-bound work):", ""]
    for (attention, kind, bound), shares in sorted(achieved.items()):
        lines.append(f"- {kind} ({attention} attention), {bound}-bound: median "
                     f"{statistics.median(shares):.0%} (range {min(shares):.0%}-"
                     f"{max(shares):.0%}, {len(shares)} cases)")
    lines += ["", *_operating_point(data["rows"], args)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(f"# GPU check of the cost model\n\n{text}")
    if args.section:
        from atts.perf.report import replace_section

        replace_section(args.benchmarks, args.section, text)


def _work(row: dict[str, Any]) -> dict[str, Any]:
    """A measured case as ``iteration_seconds`` arguments."""
    from atts.perf.roofline import Chunk

    if row["kind"] == "decode":
        return {"decode_contexts": [row["context"]] * row["batch"]}
    return {"decode_contexts": (), "chunks": (Chunk(row["tokens"], row["context"], row["rows"]),)}


def _at_peak(model: str, device: str, *, memory_only: bool = False) -> Any:
    """The preset engine at 100% of peak bandwidth and FLOP/s with no overhead (the roofline
    itself); ``memory_only``: with unbounded FLOP/s, so only bytes / bandwidth remains."""
    from dataclasses import replace

    from atts.perf.devices import engine, lookup_device

    dev = lookup_device(device)
    if memory_only:
        dev = replace(dev, peak_flops=math.inf)
    return engine(model, dev, mfu=1.0, mbu=1.0, overhead=0.0)


def _operating_point(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Per-token costs at one operating point, measured against the preset, and the speedup
    bound (docs/METHOD.md section 6, ``per_token_speedup``, draft and target on separate GPUs) each
    gives: the simulator's speedups rest on these ratios more than on absolute times."""
    from atts.perf.devices import engine
    from atts.perf.roofline import TokenCosts, per_token_costs, per_token_speedup

    draft, target, batch, context, step = args.point
    batch, context, step = int(batch), int(context), int(step)

    def measured(model: str, kind: str, **match: int) -> float | None:
        for row in rows:
            if (row["model"] == model and row["kind"] == kind and "error" not in row
                    and row.get("attention", "matmul") == args.attention
                    and all(row[k] == v for k, v in match.items())):
                return float(row["graph_s"])
        return None

    dd = measured(draft, "decode", batch=batch, context=context)
    td = measured(target, "decode", batch=batch, context=context)
    ts = measured(target, "score", context=context, tokens=step)
    if dd is None or td is None or ts is None:
        return [f"(No operating point: the data lacks {draft}/{target} decode at batch "
                f"{batch}, context {context}, or a {step}-token score.)"]
    got = TokenCosts(dd / batch, td / batch, ts / step)
    preset = per_token_costs(engine(draft, args.device), engine(target, args.device),
                             batch=batch, context=context, step=step)
    lines = [f"Operating point: draft {draft}, target {target}, {batch} sequences decoding at "
             f"{context} tokens of context, {step}-token steps scored ({args.attention} "
             "attention, CUDA graphs):", "",
             "| per-token cost | measured ms | preset ms | preset / measured |",
             "|---|---|---|---|"]
    for name, a, b in (("draft decode", got.draft_decode, preset.draft_decode),
                       ("target decode", got.target_decode, preset.target_decode),
                       ("target score", got.target_score, preset.target_score)):
        lines.append(f"| {name} | {a * 1e3:.3f} | {b * 1e3:.3f} | {b / a:.2f} |")
    lines += ["", "| rejection rate | bound from measured costs | bound from the preset |",
              "|---|---|---|"]
    for r in (0.0, 0.1, 0.2, 0.3, 0.5):
        lines.append(f"| {r:.1f} | {per_token_speedup(got, r, overlap=True):.2f}x | "
                     f"{per_token_speedup(preset, r, overlap=True):.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="time the cases on this machine's GPU; write JSON")
    m.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   choices=sorted(ATTENTION_AND_MLP))
    m.add_argument("--attention", choices=["matmul", "sdpa"], default="matmul",
                   help="matmul: two batched matmuls; sdpa: torch's fused attention kernels")
    m.add_argument("--repeats", type=int, default=10)
    m.add_argument("--out", default="gpu_roofline.json")
    m.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU")
    r = sub.add_parser("report", help="compare measured JSON with the roofline and the preset")
    r.add_argument("results")
    r.add_argument("--device", default="h200")
    r.add_argument("--markdown", default=None)
    r.add_argument("--section", default=None, help="also write this BENCHMARKS.md section")
    r.add_argument("--benchmarks", default="BENCHMARKS.md")
    r.add_argument("--attention", default="matmul", help="which rows the operating point uses")
    r.add_argument("--point", nargs=5, default=["qwen2.5-7b", "qwq-32b", "32", "4096", "512"],
                   metavar=("DRAFT", "TARGET", "BATCH", "CONTEXT", "STEP"),
                   help="the operating point whose per-token costs and bounds are compared")
    args = parser.parse_args()
    measure(args) if args.command == "measure" else report(args)


if __name__ == "__main__":
    main()
