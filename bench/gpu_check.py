"""Ready for a lent GPU (issue 31): one prepared check, under 8 minutes on one H100 or H200, of
what BENCHMARKS.md section 5 only predicts.  It needs torch and transformers, nothing else, and
fetches nothing: every model is built from its shape with random weights.

Two parts, each writing into one JSON file as it goes (a killed run keeps what finished):

1. ``per_token``: the per-token costs ATTS trades (draft decode, target decode, target scoring
   of a step) on bare decoders of the real shapes, with ``bench/bench_gpu_roofline.py``'s
   decoder and timer (CUDA graphs and eager): torch's fused attention (``sdpa``, not yet timed
   on a GPU) first, then the two-matmul attention of the earlier H200 run for comparison.
   Decode at batches 1, 8, 32 and contexts 1024, 4096; scoring of 128- and 512-token steps.
2. ``runner``: ATTS (default alpha and calibration) against target-only through the project's
   real runner (``atts.runner.session.run_job``) on the same GPU.  Both models are transformers
   Qwen2 models of the real shapes, random bf16 weights, served by ``TransformersEngine``
   (``sdpa`` attention, KV cache, prefix cache; one request at a time per engine, the two
   engines on their own threads sharing the GPU and one Python interpreter lock, where a
   served pair would run two processes); the tokenizer is built offline: one token
   per byte, the ChatML specials, and filler tokens up to the models' vocabulary.  A few GSM8K
   questions x samples with short fixed steps; the number of questions is cut to what a probe
   of both engines says fits the time left.  Recorded per strategy: wall seconds, tokens by
   kind, steps, the rejection (acceptance) rate, and each engine's calls and busy share.

Accuracy means nothing here: random weights write random text and every answer is wrong.  What
the runner part measures is the real scheduler's wall time on real shapes, with every step at
its token limit (a random model almost never writes the blank line that ends a step early, and
end-of-turn tokens are switched off so both strategies write equal steps).  Two settings keep
random models from being slower than trained ones where it does not matter: the output head's
weights are scaled so logits spread like a trained model's (standard deviation ``LOGIT_STD``;
with the default init of 0.02 every next-token distribution is nearly flat and the shared
top-p sampler widens its nucleus to the whole 152k vocabulary, 23 ms a token on the CPU
against 1.5 ms for a peaked one), and the smaller model's vocabulary is padded to the
larger's (151936 -> 152064 rows, +0.2M parameters) so that the two share one tokenizer.

The pair is the paper's R1-Distill-Qwen-1.5B draft with the QwQ-32B target (docs/REMOTE.md),
chosen to fit one H100 with room to spare.  Memory arithmetic (bf16, 2 bytes a parameter):
weights 1.78e9 x 2 = 3.3 GiB plus 32.76e9 x 2 = 61.0 GiB = 64.3 GiB of the H100's ~78 GiB;
KV cache 28 KiB a token (1.5B: 28 layers x 2 x 2 heads x 128 x 2 bytes) and 256 KiB a token
(32B: 64 x 2 x 8 x 128 x 2), so the runner's at most 16 cached sequences of < 1k tokens take
< 4.5 GiB.  The bare decoders of part 1 are built one at a time (61 GiB for the 32B): a case
whose KV cache does not fit the memory left is skipped and recorded (the 32B at batch 32 and
4k context needs 32 GiB: it runs on an H200, not on an H100).  The section-5 pair (7B draft,
32B target: 75.2 GiB of weights) leaves under 3 GiB on an H100; ``--draft qwen2.5-7b`` runs
it on an H200.

Run on a GPU machine (from the repository root; about 4-6 minutes, ``--budget-s`` caps it):
    PYTHONPATH=src python3 bench/gpu_check.py --out bench/results/gpu_check.json \\
        --runs runs/gpu_check
Then anywhere, the tables for BENCHMARKS.md section 5:
    PYTHONPATH=src python3 bench/gpu_check.py report bench/results/gpu_check.json \\
        --markdown bench/results/gpu_check.md
Without CUDA the same code runs tiny random Qwen2 shapes in float32 on the CPU in seconds
(``--smoke`` asks for them on a GPU too): it checks the code and times nothing useful.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import inspect
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ holds scripts, not a package
import bench_gpu_roofline as roofline

from atts.engines.base import (
    ChatMessage,
    EngineInfo,
    Generation,
    SamplingParams,
    StepScore,
    TokenSink,
)
from atts.perf.devices import GIB, ModelSpec

DRAFT, TARGET = "r1-distill-qwen-1.5b", "qwq-32b"
QWEN_SHAPES = ("r1-distill-qwen-1.5b", "qwen2.5-7b", "qwq-32b")  # transformers' Qwen2 builds them
# Smoke shapes (CPU): a 2-layer draft and a 4-layer target, vocabulary 512.
SMOKE = (roofline.Shape(ModelSpec("smoke-draft", 0, 2, 64, 512, 2, 16), 4, 128, True),
         roofline.Shape(ModelSpec("smoke-target", 0, 4, 128, 512, 2, 16), 8, 256, True))
BATCHES, CONTEXTS = (1, 8, 32), (1024, 4096)
SCORES = ((128, 1024), (512, 1024), (512, 4096))  # (step tokens, cached context)
SMOKE_BATCHES, SMOKE_CONTEXTS, SMOKE_SCORES = (1, 4), (32,), ((8, 32),)
# Where the report prices ATTS from the measured costs: batch, context, step tokens (the 32B's
# KV cache at batch 32 and 4k context does not fit an H100 beside its weights; batch 8 does).
POINT, SMOKE_POINT = (8, 4096, 512), (4, 32, 8)
RATES = (0.0, 0.25, 0.5)  # rejection rates of the report's bounds
ATTENTIONS = ("sdpa", "matmul")  # sdpa first: the variant not yet timed on a GPU
BUDGET_S = 420.0  # 7 minutes; start-up, imports and CUDA set-up fit in the eighth
PER_TOKEN_SHARE = 0.35  # of the budget; the runner part gets what is left
CASE_RESERVE = 3 * GIB  # activations, 512 float32 logit rows, CUDA graph pools of one case
RUNNER_RESERVE = 6 * GIB  # KV caches of the runner's sequences, activations, workspaces
ESTIMATE_MARGIN = 1.3  # the runner's probe-based estimate, and what it leaves out
LOGIT_STD = 8.0  # of the random output head's logits: peaked like a trained model's
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
NOTE = ("Random weights: the models write random text, so accuracy is meaningless and not "
        "reported; the runner part measures the real scheduler's wall time on the real shapes "
        "(every step at its token limit).")


@dataclass(frozen=True)
class Budget:
    """A deadline on the monotonic clock."""

    deadline: float

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class Workload:
    """What each strategy runs through the runner."""

    questions: int
    samples: int
    rounds: int
    step_tokens: int  # draft_tokens = target_tokens


@dataclass(frozen=True)
class Probe:
    """Seconds a token (generation, after a cached prompt) and of one step's scoring."""

    draft_token_s: float
    target_token_s: float
    score_s: float

    def question_seconds(self, work: Workload) -> float:
        """Both strategies on one question, ATTS at its worst (every draft step rejected and
        rewritten by the target), engines taking turns on the GPU."""
        from atts.pipeline.prompt import FORCED_ANSWER_TOKENS

        k, forced = work.step_tokens, FORCED_ANSWER_TOKENS * self.target_token_s
        target_only = work.rounds * k * self.target_token_s + forced
        atts = work.rounds * (k * (self.draft_token_s + self.target_token_s) + self.score_s)
        return work.samples * (target_only + atts + forced)


@dataclass(frozen=True)
class Tally:
    """One engine's calls over a run, as the engine reported them (its own seconds, without
    the wait in its queue) and as the runner saw them (``latency``, queue included)."""

    generate_calls: int = 0
    generated_tokens: int = 0
    generate_context_tokens: int = 0  # prompt tokens evaluated (not served from the cache)
    generate_seconds: float = 0.0
    generate_latency: float = 0.0
    score_calls: int = 0
    scored_tokens: int = 0
    score_context_tokens: int = 0
    score_seconds: float = 0.0
    score_latency: float = 0.0

    def plus(self, kind: str, tokens: int, context: int, seconds: float,
             latency: float) -> Tally:
        """These totals and one more call of ``kind`` (generate or score)."""
        written = "generated_tokens" if kind == "generate" else "scored_tokens"
        counts = {f"{kind}_calls": 1, f"{kind}_context_tokens": context,
                  f"{kind}_seconds": seconds, f"{kind}_latency": latency, written: tokens}
        return dataclasses.replace(self, **{k: getattr(self, k) + v for k, v in counts.items()})

    def to_dict(self, wall: float) -> dict[str, Any]:
        out: dict[str, Any] = dataclasses.asdict(self)
        out["busy_share"] = (self.generate_seconds + self.score_seconds) / wall if wall else None
        return out


class Counted:
    """An engine that counts its calls: the transformers engine keeps no call statistics of
    its own (``RunOutcome.engine_calls`` covers llama.cpp only), so the runner gets this."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.tally = engine, Tally()

    @property
    def info(self) -> EngineInfo:
        return self.engine.info

    def tokenize(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return self.engine.detokenize(token_ids)

    def render_chat(self, messages: Sequence[ChatMessage], *,
                    add_generation_prompt: bool = True) -> list[int]:
        return self.engine.render_chat(messages, add_generation_prompt=add_generation_prompt)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        started = time.monotonic()
        out: Generation = await self.engine.generate(prompt_ids, params, on_tokens)
        self.tally = self.tally.plus("generate", len(out.token_ids),
                                     out.prompt_tokens - out.cached_tokens, out.seconds,
                                     time.monotonic() - started)
        return out

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        started = time.monotonic()
        out: StepScore = await self.engine.score(prefix_ids, step_ids, cache_key=cache_key)
        self.tally = self.tally.plus("score", len(step_ids), len(prefix_ids) - out.cached_tokens,
                                     out.seconds, time.monotonic() - started)
        return out

    def release(self, token_ids: Sequence[int]) -> None:
        self.engine.release(token_ids)

    async def close(self) -> None:
        await self.engine.close()


class Record:
    """The one JSON file, rewritten whole (write, then rename) after every piece of work."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    def part(self, name: str, **values: Any) -> dict[str, Any]:
        part: dict[str, Any] = {"status": "running", "started_at": _now(), **values}
        self.data["parts"][name] = part
        self.save()
        return part

    def save(self) -> None:
        self.data["updated_at"] = _now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _shape(name: str) -> roofline.Shape:
    if name not in QWEN_SHAPES:
        raise SystemExit(f"{name}: choose one of {', '.join(QWEN_SHAPES)} (Qwen2 shapes)")
    return roofline._shape(name)


def _free_bytes(torch: Any) -> float:
    return float(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else math.inf


def _release(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- part 1: per-token costs on bare decoders ------------------------------------------------
def per_token(torch: Any, record: Record, budget: Budget, shapes: Sequence[roofline.Shape],
              smoke: bool, attentions: Sequence[str], repeats: int) -> None:
    part = record.part("per_token", attentions=list(attentions), rows=[])
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    batches, contexts, scores = ((SMOKE_BATCHES, SMOKE_CONTEXTS, SMOKE_SCORES) if smoke
                                 else (BATCHES, CONTEXTS, SCORES))
    cases = [("decode", b, c, 1) for c in contexts for b in batches]
    cases += [("score", 1, c, s) for s, c in scores]
    for role, shape in zip(("draft", "target"), shapes, strict=True):
        started = time.perf_counter()
        model = roofline.Decoder(torch, shape, device, dtype, attentions[0])
        print(f"{shape.spec.name}: decoder built in {time.perf_counter() - started:.1f} s",
              flush=True)
        free = _free_bytes(torch)
        for attention in attentions:
            model.attention = attention  # read per call: one build serves both variants
            for kind, batch, context, tokens in cases:
                row: dict[str, Any] = {"role": role, "model": shape.spec.name,
                                       "attention": attention, "kind": kind, "batch": batch,
                                       "context": context, "tokens": tokens}
                kv = roofline._kv_bytes(shape.spec, batch, context + tokens)
                if budget.left() <= 0:
                    row.update(skipped="time", detail="the part's time budget is spent")
                elif kv + CASE_RESERVE > free:
                    row.update(skipped="memory", detail=f"KV cache {kv / GIB:.1f} GiB + "
                               f"{CASE_RESERVE / GIB:.0f} GiB reserve > {free / GIB:.1f} GiB free")
                else:
                    try:
                        row = {**roofline._case(torch, model, kind, batch, context, tokens,
                                                repeats), **row}
                    except RuntimeError as err:  # out of memory included: recorded, not fatal
                        row["error"] = str(err).splitlines()[0][:200]
                    if "error" in row:  # out here: the traceback held the case's KV cache
                        _release(torch)
                part["rows"].append(row)
                print(json.dumps(row), flush=True)
                record.save()
        del model
        _release(torch)
    # Cases too large for this GPU's memory are skipped by design (recorded); out of time or
    # failed ones make the part partial.
    missed = Counter(r.get("skipped") or "error" for r in part["rows"] if "graph_s" not in r)
    part["missed"] = dict(missed)
    part["status"] = "partial" if missed["time"] or missed["error"] else "done"
    part["finished_at"] = _now()
    record.save()


# -- part 2: ATTS against target-only through the runner --------------------------------------
def _tokenizer(vocab: int) -> Any:
    """A byte-level tokenizer of exactly ``vocab`` ids, built offline: ids 0-255 are the bytes,
    then filler tokens ``<i>`` (text a random model may write; never produced by encoding, as
    there are no merges), the ChatML specials last; ChatML template.  One per engine: a fast
    tokenizer refuses use from two threads at once."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab < 256 + len(SPECIALS):
        raise ValueError(f"a vocabulary of {vocab} cannot hold 256 bytes and the specials")
    stand_in = _byte_to_unicode()
    table = {stand_in[b]: b for b in range(256)}
    table.update({f"<{i}>": i for i in range(256, vocab - len(SPECIALS))})
    table.update({s: vocab - len(SPECIALS) + j for j, s in enumerate(SPECIALS)})
    tok = Tokenizer(models.BPE(vocab=table, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    assert len(fast) == vocab, (len(fast), vocab)
    return fast


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the ByteLevel pre-tokenizer's alphabet)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def _hf_model(torch: Any, shape: roofline.Shape, vocab: int, device: str, dtype: Any,
              seed: int) -> Any:
    """A transformers Qwen2 causal LM of ``shape`` with random weights, built on ``device``."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    s = shape.spec
    if s.hidden != shape.heads * s.head_dim or not shape.bias:
        raise ValueError(f"{s.name}: not a Qwen2 shape (head size hidden / heads, q/k/v bias)")
    specials = vocab - len(SPECIALS)
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=s.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=s.layers, num_attention_heads=shape.heads,
        num_key_value_heads=s.kv_heads, max_position_embeddings=4096,
        tie_word_embeddings=s.tied, use_sliding_window=False,
        pad_token_id=specials, bos_token_id=specials + 1, eos_token_id=specials + 2)
    config.name_or_path = f"random/{s.name}"
    torch.manual_seed(seed)
    # Built directly in ``dtype`` on ``device`` (a float32 32B would not fit): the default
    # dtype, which every transformers version builds in, rather than a keyword renamed in 4.56.
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():  # logits spread like a trained model's (see the module docstring)
        model.get_output_embeddings().weight.normal_(0.0, LOGIT_STD / math.sqrt(s.hidden))
    return model.eval()


async def _probe(draft: Any, target: Any, prompt: list[int], work: Workload,
                 config: Any) -> Probe:
    """Warm both engines up (kernel choice, allocator pools), then time one step of each and
    one scoring pass after a cached prompt, as the runs will see them."""
    params = SamplingParams(max_tokens=work.step_tokens, temperature=config.temperature,
                            top_p=config.top_p, stop=(config.step_stop,), seed=0)
    for engine in (draft, target):
        await engine.generate(prompt, params)
    step = await draft.generate(prompt, dataclasses.replace(params, seed=1))
    await target.score(prompt, step.token_ids)
    written = await target.generate(prompt, dataclasses.replace(params, seed=1))
    scored = await target.score(prompt, step.token_ids)
    return Probe(step.seconds / len(step.token_ids),
                 written.seconds / len(written.token_ids), scored.seconds)


def _run_summary(outcome: Any, rows: list[dict[str, Any]], calls: dict[str, Tally],
                 seconds: float) -> dict[str, Any]:
    from atts.pipeline.trace import rejection_counts, steps_of
    from atts.report.summary import engine_seconds

    steps = [step for row in rows for step in steps_of(row)]
    rejected, judged = rejection_counts(steps)
    kinds = Counter(f"{s.author}_{s.kind}" + ("" if s.kept else "_discarded") for s in steps)
    wall = outcome.wall_seconds
    return {
        "samples": len(rows), "errors": outcome.errors,
        "error_messages": sorted({str(r.get("error"))[:200] for r in rows if r.get("error")}),
        "wall_seconds": wall, "job_seconds": seconds,
        "tokens": {k: sum(int((r.get("tokens") or {}).get(k, 0)) for r in rows)
                   for k in ("draft_decode", "target_decode", "target_score")},
        "engine_seconds": engine_seconds(rows),
        "steps": dict(sorted(kinds.items())), "judged": judged, "rejected": rejected,
        "rejection_rate": rejected / judged if judged else None,
        "acceptance_rate": 1 - rejected / judged if judged else None,
        "rounds_mean": sum(int(r.get("rounds") or 0) for r in rows) / max(1, len(rows)),
        "stops": dict(Counter(str(r.get("stop")) for r in rows)),
        "draft_peak_in_flight": outcome.draft_peak_in_flight,
        "target_peak_in_flight": outcome.target_peak_in_flight, "retries": outcome.retries,
        "cpu_seconds": outcome.cpu_seconds,
        "calls": {role: tally.to_dict(wall) for role, tally in calls.items()},
    }


def runner(torch: Any, record: Record, budget: Budget, shapes: Sequence[roofline.Shape],
           work: Workload, runs: Path) -> None:
    from transformers import Qwen2ForCausalLM

    from atts.config import RunConfig
    from atts.data import load_dataset
    from atts.engines.transformers_engine import TransformersEngine
    from atts.pipeline.prompt import question_messages
    from atts.runner.run_folder import RunFolder
    from atts.runner.session import run_job

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    # One vocabulary for both (the smaller padded to the larger): they share one tokenizer.
    vocab = max(shape.spec.vocab for shape in shapes)
    weights = sum(_params(shape, vocab) * dtype.itemsize for shape in shapes)
    part = record.part("runner", engine="transformers", attention="sdpa", vocab=vocab,
                       weights_gib=weights / GIB, requested=dataclasses.asdict(work), runs={})
    if "cache" not in inspect.signature(Qwen2ForCausalLM.forward).parameters:
        part.update(status="skipped", reason="TransformersEngine passes the KV cache as "
                    "`cache=`, which this transformers does not take (the project pins 5.24.0)")
        record.save()
        return
    if weights + RUNNER_RESERVE > _free_bytes(torch):
        part.update(status="skipped", reason=f"weights {weights / GIB:.1f} GiB + "
                    f"{RUNNER_RESERVE / GIB:.0f} GiB reserve > "
                    f"{_free_bytes(torch) / GIB:.1f} GiB free")
        record.save()
        return
    started = time.perf_counter()
    models = [_hf_model(torch, shape, vocab, device, dtype, seed)
              for seed, shape in enumerate(shapes)]
    part["models"] = {role: {"name": shape.spec.name, "params": _count(model),
                             "dtype": str(model.dtype)}
                      for role, shape, model in zip(("draft", "target"), shapes, models,
                                                    strict=True)}
    part["build_seconds"] = time.perf_counter() - started
    if cuda:
        part["allocated_gib_after_build"] = torch.cuda.memory_allocated() / GIB
    record.save()

    def engines() -> tuple[Counted, Counted]:
        """Fresh engines over the built models: each run starts with empty prefix caches.
        No end-of-turn token: a random model would end steps at random, and unequally
        between the strategies."""
        draft, target = (Counted(TransformersEngine(model, device=device,
                                                    tokenizer=_tokenizer(vocab),
                                                    eos_token_ids=[]))
                         for model in models)
        return draft, target

    problems = load_dataset("gsm8k", limit=work.questions)
    base = RunConfig(dataset="gsm8k", limit=work.questions, samples=work.samples,
                     engine="transformers", draft=f"random/{shapes[0].spec.name}",
                     target=f"random/{shapes[1].spec.name}", draft_tokens=work.step_tokens,
                     target_tokens=work.step_tokens, rounds=work.rounds, seed=0)
    draft, target = engines()
    probe = asyncio.run(_probe(draft, target, target.render_chat(
        question_messages(problems[0].question)), work, base))
    asyncio.run(_close(draft, target))
    part["probe"] = dataclasses.asdict(probe)
    per_question = probe.question_seconds(work) * ESTIMATE_MARGIN
    fit = min(work.questions, int(budget.left() / per_question))
    part["estimate_s_per_question"] = per_question
    if fit < 1:
        part.update(status="skipped", reason=f"one question needs about {per_question:.0f} s, "
                    f"{budget.left():.0f} s left")
        record.save()
        return
    work = dataclasses.replace(work, questions=fit)
    part["workload"] = dataclasses.asdict(work)
    record.save()
    for strategy in ("target_only", "atts"):
        config = base.replace(strategy=strategy, limit=work.questions)
        draft, target = engines()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            outcome = run_job(config, runs / strategy, overwrite=True, show_progress=False,
                              engines=(draft, target), problems=problems[:work.questions])
        finally:
            asyncio.run(_close(draft, target))
        seconds = time.perf_counter() - started
        rows = RunFolder(runs / strategy).rows()
        summary = _run_summary(outcome, rows, {"draft": draft.tally, "target": target.tally},
                               seconds)
        summary["config"] = {k: v for k, v in config.to_dict().items()
                             if k in ("strategy", "alpha", "calibration", "score", "samples",
                                      "rounds", "draft_tokens", "target_tokens",
                                      "max_active_samples", "temperature", "top_p")}
        summary["run_folder"] = str(runs / strategy)
        if cuda:
            summary["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        part["runs"][strategy] = summary
        print(json.dumps({strategy: {k: summary[k] for k in ("wall_seconds", "tokens",
                                                              "rejection_rate")}}), flush=True)
        record.save()
    walls = [part["runs"][s]["wall_seconds"] for s in ("target_only", "atts")]
    part["speedup"] = walls[0] / walls[1]
    part["status"], part["finished_at"] = "done", _now()
    models.clear()  # the weights go before anything that runs after this part
    _release(torch)
    record.save()


async def _close(*engines: Counted) -> None:
    for engine in engines:
        await engine.close()


def _params(shape: roofline.Shape, vocab: int) -> int:
    """Parameters of ``shape`` with its vocabulary padded to ``vocab``."""
    s = shape.spec
    return shape.params + (vocab - s.vocab) * s.hidden * (1 if s.tied else 2)


def _count(model: Any) -> int:
    return sum(int(p.numel()) for p in model.parameters())


# -- measure: both parts under one budget ----------------------------------------------------
def measure(args: argparse.Namespace) -> Path:
    budget = Budget(time.monotonic() + args.budget_s)
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    smoke = args.smoke or not cuda
    if smoke and not args.smoke:
        print("no CUDA device: the smoke path (tiny shapes on the CPU)", flush=True)
    shapes = SMOKE if smoke else (_shape(args.draft), _shape(args.target))
    work = (Workload(min(args.questions, 2), 2, 2, 8) if smoke
            else Workload(args.questions, args.samples, args.rounds, args.step_tokens))
    total = float(torch.cuda.mem_get_info()[1]) if cuda else None
    command = ["bench/gpu_check.py", *getattr(args, "argv", sys.argv[1:])]
    record = Record(Path(args.out), {
        "check": "bench/gpu_check.py", "command": " ".join(command), "smoke": smoke,
        "note": NOTE, "started_at": _now(), "finished_at": None, "budget_s": args.budget_s,
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "memory_gib": total / GIB if total else None,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "pair": {role: _describe(shape) for role, shape in zip(("draft", "target"), shapes,
                                                              strict=True)},
        "parts": {}})
    print(json.dumps({k: record.data[k] for k in ("device", "memory_gib", "torch", "pair")}),
          flush=True)
    part = record.part("ceilings")
    part.update(roofline._ceilings(torch))
    part["status"] = "done" if cuda else "skipped"
    if not cuda:
        part["reason"] = "no GPU"
    _release(torch)  # free memory is read from the device: give back the ceilings' buffers
    record.save()
    if "per_token" in args.parts:
        part_budget = Budget(min(budget.deadline,
                                 time.monotonic() + PER_TOKEN_SHARE * args.budget_s))
        _guarded(torch, record, "per_token", lambda: per_token(
            torch, record, part_budget, shapes, smoke, args.attention, args.repeats))
    if "runner" in args.parts:
        _guarded(torch, record, "runner", lambda: runner(
            torch, record, budget, shapes, work, Path(args.runs)))
    record.data["finished_at"] = _now()
    record.data["elapsed_s"] = args.budget_s - budget.left()
    record.save()
    print(f"wrote {record.path} in {record.data['elapsed_s']:.0f} s", flush=True)
    return record.path


def _guarded(torch: Any, record: Record, name: str, work: Any) -> None:
    """Run one part; a failure is recorded in its place and the next part still runs."""
    try:
        work()
        return
    except Exception as err:
        error = f"{type(err).__name__}: {err}"[:400]
    # Out of the except block: its traceback held the part's frames (models, caches).
    part = record.data["parts"].setdefault(name, {})
    part.update(status="failed", error=error)
    _release(torch)
    record.save()
    print(f"{name} failed: {error}", flush=True)


def _describe(shape: roofline.Shape) -> dict[str, Any]:
    s = shape.spec
    return {"name": s.name, "params": shape.params, "layers": s.layers, "hidden": s.hidden,
            "heads": shape.heads, "kv_heads": s.kv_heads, "head_dim": s.head_dim,
            "intermediate": shape.intermediate, "vocab": s.vocab,
            "weights_gib_bf16": shape.params * 2 / GIB,
            "kv_kib_per_token": s.kv_bytes_per_token / 1024}


# -- report: the JSON as markdown (no torch) ---------------------------------------------------
def report(args: argparse.Namespace) -> str:
    data = json.loads(Path(args.results).read_text())
    pair = data["pair"]
    took = (f"{data['elapsed_s']:.0f} s of a {data['budget_s']:.0f} s budget"
            if data.get("finished_at") else f"did not finish (last written {data['updated_at']})")
    lines = [f"Device: {data['device']}"
             + (f" ({data['memory_gib']:.0f} GiB)" if data.get("memory_gib") else "")
             + f", torch {data['torch']}, transformers {data['transformers']}; started "
             f"{data['started_at']}, {took}.  Command: `{data['command']}`.", "",
             f"Draft {pair['draft']['name']} ({pair['draft']['weights_gib_bf16']:.1f} GiB), "
             f"target {pair['target']['name']} ({pair['target']['weights_gib_bf16']:.1f} GiB): "
             f"{'tiny' if data['smoke'] else 'real'} shapes, random weights.  " + data["note"],
             ""]
    if data["smoke"]:
        lines += [f"**Smoke run: tiny shapes on {data['device']}; it checks the code, not the "
                  "hardware.**", ""]
    parts = data["parts"]
    lines += ["Parts: " + ", ".join(f"{name} {part['status']}"
                                      + (f" ({part['reason']})" if part.get("reason") else "")
                                      + (f" ({part['error']})" if part.get("error") else "")
                                      for name, part in parts.items()), ""]
    if parts.get("ceilings", {}).get("copy_bytes_per_s"):
        c = parts["ceilings"]
        lines += [f"Ceilings: device-to-device copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
                  f"8192^3 bf16 matmul {c['bf16_flops'] / 1e12:.0f} TFLOP/s.", ""]
    rows = parts.get("per_token", {}).get("rows", [])
    lines += _per_token_table(rows)
    lines += _bounds(rows, SMOKE_POINT if data["smoke"] else POINT)
    lines += _runner_table(parts.get("runner", {}))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(f"# GPU check (bench/gpu_check.py)\n\n{text}")
    return text


def _per_token_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    timed = {(r["role"], r["kind"], r["batch"], r["context"], r["tokens"], r["attention"]): r
             for r in rows if "graph_s" in r}
    lines = ["Per-token costs, bare decoders (CUDA graph replays, medians; eager in brackets; "
             "decode: per sequence, score: per step token):", "",
             "| role | model | work | batch | context | step | sdpa ms/token | matmul ms/token "
             "| sdpa / matmul |", "|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in rows:
        key = (r["role"], r["kind"], r["batch"], r["context"], r["tokens"])
        if key in seen:
            continue
        seen.add(key)
        per = r["batch"] if r["kind"] == "decode" else r["tokens"]
        cells = []
        for attention in ATTENTIONS:
            hit = timed.get((*key, attention))
            why = next((x.get("skipped") or "failed" for x in rows
                        if (x["role"], x["kind"], x["batch"], x["context"], x["tokens"],
                            x["attention"]) == (*key, attention)), None)
            cells.append(f"{hit['graph_s'] * 1e3 / per:.3f} ({hit['eager_s'] * 1e3 / per:.3f})"
                         if hit else ("not run" if why is None else f"skipped ({why})"))
        sdpa, matmul = (timed.get((*key, a)) for a in ATTENTIONS)
        ratio = f"{sdpa['graph_s'] / matmul['graph_s']:.2f}" if sdpa and matmul else ""
        lines.append(f"| {r['role']} | {r['model']} | {r['kind']} | {r['batch']} | "
                     f"{r['context']} | {r['tokens'] if r['kind'] == 'score' else ''} | "
                     f"{cells[0]} | {cells[1]} | {ratio} |")
    return [*lines, ""]


def _bounds(rows: list[dict[str, Any]], point: tuple[int, int, int]) -> list[str]:
    """ATTS's per-token bound (docs/METHOD.md section 6) from the measured costs at ``point``,
    rejected steps rewritten by the target (the runs' default): engines taking turns on one GPU,
    and overlapped (each on a GPU of its own)."""
    from atts.perf.roofline import TokenCosts, per_token_speedup

    batch, context, step = point

    def cost(role: str, kind: str, attention: str) -> float | None:
        per, match = (batch, {"batch": batch}) if kind == "decode" else (step, {"tokens": step})
        for r in rows:
            if ((r["role"], r["kind"], r["attention"], r["context"]) == (role, kind, attention,
                                                                         context)
                    and "graph_s" in r and all(r[k] == v for k, v in match.items())):
                return float(r["graph_s"]) / per
        return None

    lines = [f"ATTS's per-token bound from these costs ({batch} sequences decoding at {context} "
             f"tokens of context, {step}-token steps scored, CUDA graphs; rejected steps "
             "rewritten; engines taking turns / overlapped):", "",
             "| attention | draft decode ms | target decode ms | target score ms | "
             + " | ".join(f"r = {r:g}" for r in RATES) + " |",
             "|---|---|---|---|" + "---|" * len(RATES)]
    for attention in ATTENTIONS:
        found = [cost("draft", "decode", attention), cost("target", "decode", attention),
                 cost("target", "score", attention)]
        if any(c is None for c in found):
            continue
        costs = TokenCosts(*(float(c or 0.0) for c in found))
        bounds = [f"{per_token_speedup(costs, r, mode='regenerate'):.2f}x / "
                  f"{per_token_speedup(costs, r, mode='regenerate', overlap=True):.2f}x"
                  for r in RATES]
        lines.append(f"| {attention} | {costs.draft_decode * 1e3:.3f} | "
                     f"{costs.target_decode * 1e3:.3f} | {costs.target_score * 1e3:.3f} | "
                     + " | ".join(bounds) + " |")
    return [*lines, ""] if len(lines) > 4 else []


def _runner_table(part: dict[str, Any]) -> list[str]:
    runs = part.get("runs") or {}
    if not runs:
        return []
    from atts.perf.roofline import TokenCosts, per_token_speedup

    work = part.get("workload", part.get("requested", {}))
    lines = [f"ATTS against target-only through the runner (transformers engine, sdpa, one "
             f"GPU for both models): {work.get('questions')} GSM8K questions x "
             f"{work.get('samples')} samples, {work.get('rounds')} rounds of "
             f"{work.get('step_tokens')}-token steps.", "",
             "| strategy | wall s | draft writes | target writes | target scores | judged steps "
             "| rejected | draft busy | target busy | draft ms/token | target ms/token | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        draft, target = run["calls"]["draft"], run["calls"]["target"]
        rate = run["rejection_rate"]
        lines.append(
            f"| {name} | {run['wall_seconds']:.1f} | {draft['generated_tokens']} | "
            f"{target['generated_tokens']} | {target['scored_tokens']} | {run['judged']} | "
            f"{'' if rate is None else f'{rate:.0%}'} | {_share(draft)} | {_share(target)} | "
            f"{_per_token(draft)} | {_per_token(target)} | {run['errors']} |")
    lines += ["", "Tokens and busy shares are the engines' own counts (calibration-only first "
              "steps included); busy: engine seconds over the run's wall time; ms/token: "
              "generation seconds (prompt reads included) per written token.", ""]
    if "speedup" in part:
        lines.append(f"ATTS speedup over target-only (wall): {part['speedup']:.2f}x.")
        atts, base = runs.get("atts") or {}, runs.get("target_only") or {}
        costs = TokenCosts.from_summaries(atts, base) if atts and base else None
        r = atts.get("rejection_rate")
        if costs is not None and r is not None:
            lines.append(
                f"Bound from the runs' own per-token costs (draft {costs.draft_decode * 1e3:.1f}"
                f" ms, target {costs.target_decode * 1e3:.1f} ms, scoring "
                f"{costs.target_score * 1e3:.2f} ms a token) at their rejection rate {r:.0%}, "
                f"rejected steps rewritten: {per_token_speedup(costs, r, mode='regenerate'):.2f}"
                f"x with the engines taking turns, "
                f"{per_token_speedup(costs, r, mode='regenerate', overlap=True):.2f}x "
                "overlapped.")
    return [*lines, ""]


def _share(tally: dict[str, Any]) -> str:
    share = tally.get("busy_share")
    return "" if share is None else f"{share:.0%}"


def _per_token(tally: dict[str, Any]) -> str:
    tokens = tally["generated_tokens"]
    return f"{tally['generate_seconds'] / tokens * 1e3:.1f}" if tokens else ""


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("measure", "report", "-h", "--help"):
        argv = ["measure", *argv]  # measuring is the default command
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="run both parts on this machine; write one JSON")
    m.add_argument("--out", default="gpu_check.json")
    m.add_argument("--runs", default="runs/gpu_check", help="the runner's run folders")
    m.add_argument("--budget-s", type=float, default=BUDGET_S,
                   help="seconds for everything; parts that would overrun are skipped")
    m.add_argument("--smoke", action="store_true",
                   help="tiny shapes (automatic without CUDA; on the GPU when there is one)")
    m.add_argument("--draft", default=DRAFT, choices=QWEN_SHAPES)
    m.add_argument("--target", default=TARGET, choices=QWEN_SHAPES)
    m.add_argument("--parts", nargs="+", default=["per_token", "runner"],
                   choices=["per_token", "runner"])
    m.add_argument("--attention", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    m.add_argument("--repeats", type=int, default=10)
    m.add_argument("--questions", type=int, default=4)
    m.add_argument("--samples", type=int, default=4)
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--step-tokens", type=int, default=48)
    r = sub.add_parser("report", help="the JSON as markdown tables")
    r.add_argument("results")
    r.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    args.argv = argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched, ever
    measure(args) if args.command == "measure" else report(args)


if __name__ == "__main__":
    main()
