"""Hardware and model presets of the performance model: devices, model shapes, engines.

- ``Device``: one accelerator (or one CPU core): peak dense FLOP/s, memory bandwidth, memory.
  Figures are the vendors' datasheet numbers (dense bf16 tensor-core FLOP/s, HBM bandwidth);
  what an engine achieves of them is the ``EngineSpec``'s ``mfu`` / ``mbu``.
- ``ModelSpec``: what a forward pass costs: parameters (body and vocabulary head), layers,
  hidden size, KV-cache bytes per token, bytes per parameter.
- ``EngineSpec``: one model served on ``devices`` devices (tensor parallel), with the achieved
  fractions of peak, a fixed overhead per iteration, the batch limits and the KV memory left.
  ``rates`` replaces the roofline by measured per-token seconds (the embedded CPU engine,
  which runs one request at a time and is poorly described by one roofline, see
  ``cpu_2core_rates``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GIB = 2**30


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float  # dense FLOP/s
    bandwidth: float  # memory bytes/s
    memory_bytes: float
    note: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: float  # all parameters, embeddings included
    layers: int
    hidden: int
    vocab: int
    kv_heads: int
    head_dim: int
    tied: bool = False  # input embedding shared with the output head
    bytes_per_param: float = 2.0  # bf16; quantised GGUF files: file bytes / params
    kv_bytes_per_value: float = 2.0  # fp16 KV cache

    @property
    def head_params(self) -> float:
        return float(self.vocab * self.hidden)

    @property
    def body_params(self) -> float:
        """Parameters a token passes through before the head (the input embedding is a lookup,
        not a matmul)."""
        return self.params - self.head_params * (1 if self.tied else 2)

    @property
    def weight_bytes(self) -> float:
        """Bytes read from memory by one forward pass (body and head; not the embedding)."""
        return (self.body_params + self.head_params) * self.bytes_per_param

    @property
    def memory_bytes(self) -> float:
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_value

    @property
    def body_flops(self) -> float:
        """FLOPs of one token through the body (2 per multiply-add)."""
        return 2 * self.body_params

    @property
    def head_flops(self) -> float:
        """FLOPs of one row of vocabulary logits (decode, or a scored position)."""
        return 2 * self.head_params

    @property
    def attention_flops(self) -> float:
        """FLOPs per token per earlier position: q.k and p.v over all heads, every layer."""
        return 4 * self.layers * self.hidden


@dataclass(frozen=True)
class MeasuredRates:
    """Measured seconds per token of one model on one engine that runs a request at a time."""

    decode: float
    prefill: float  # a prompt token (only the last row's logits)
    score: float  # a scored step token (every row's logits and log-softmax)
    source: str = ""


@dataclass(frozen=True)
class EngineSpec:
    model: ModelSpec
    device: Device
    devices: int = 1  # tensor-parallel degree (CPU: cores)
    mfu: float = 0.55  # achieved fraction of peak FLOP/s (prefill, scoring)
    mbu: float = 0.75  # achieved fraction of memory bandwidth (decode)
    overhead: float = 0.003  # seconds per iteration: scheduling, sampling, launches
    allreduce_latency: float = 10e-6  # seconds per all-reduce (2 per layer) when devices > 1
    max_batch: int = 256  # sequences in flight per iteration
    chunk_tokens: int = 8192  # prefill tokens per iteration (chunked prefill)
    memory_fraction: float = 0.88  # of device memory the server takes for weights + KV
    rates: MeasuredRates | None = None

    def __post_init__(self) -> None:
        if self.devices < 1 or self.max_batch < 1 or self.chunk_tokens < 1:
            raise ValueError("devices, max_batch and chunk_tokens must be >= 1")
        if not (0 < self.mfu <= 1 and 0 < self.mbu <= 1):
            raise ValueError(f"mfu and mbu must lie in (0, 1], got {self.mfu}, {self.mbu}")
        if self.rates is None and self.kv_capacity_bytes <= 0:
            raise ValueError(
                f"{self.model.name} ({self.model.memory_bytes / GIB:.0f} GiB of weights) does "
                f"not fit on {self.devices} x {self.device.name}; raise devices"
            )

    @property
    def flops(self) -> float:
        return self.device.peak_flops * self.devices * self.mfu

    @property
    def bandwidth(self) -> float:
        return self.device.bandwidth * self.devices * self.mbu

    @property
    def iteration_overhead(self) -> float:
        sync = 2 * self.model.layers * self.allreduce_latency if self.devices > 1 else 0.0
        return self.overhead + sync

    @property
    def kv_capacity_bytes(self) -> float:
        total = self.device.memory_bytes * self.devices * self.memory_fraction
        return total - self.model.memory_bytes

    @property
    def kv_capacity_tokens(self) -> int:
        if self.rates is not None or self.model.kv_bytes_per_token == 0:
            return 1 << 60  # the CPU engine's contexts are preallocated: no KV limit here
        return int(self.kv_capacity_bytes // self.model.kv_bytes_per_token)

    def with_(self, **changes: object) -> EngineSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


DEVICES: dict[str, Device] = {
    "a100-80gb": Device("a100-80gb", 312e12, 2.039e12, 80 * GIB, "A100 SXM 80GB, bf16 dense"),
    "h100": Device("h100", 989e12, 3.35e12, 80 * GIB, "H100 SXM 80GB, bf16 dense"),
    "h200": Device("h200", 989e12, 4.8e12, 141e9, "H200 SXM 141GB, bf16 dense"),
    # One core of the team's machine (AMD EPYC Zen 4 under KVM, 2.6 GHz, llama.cpp built for
    # AVX2: 2 FMA pipes x 8 fp32 x 2 FLOP x 2.6 GHz); the bandwidth is a nominal share of one
    # memory channel.  The cpu-2core engines run on measured rates instead (cpu_2core_rates).
    "cpu-2core": Device("cpu-2core", 83e9, 20e9, 24 * GIB, "1 of 2 EPYC cores, nominal"),
}

MODELS: dict[str, ModelSpec] = {
    # The embedded pair (GGUF Q4_K_M): bytes per parameter from the files' sizes.
    "qwen2.5-coder-0.5b": ModelSpec("qwen2.5-coder-0.5b", 494e6, 24, 896, 151936, 2, 64,
                                    tied=True, bytes_per_param=491_400_064 / 494e6),
    "qwen2.5-coder-1.5b": ModelSpec("qwen2.5-coder-1.5b", 1.54e9, 28, 1536, 151936, 2, 128,
                                    tied=True, bytes_per_param=1_117_320_768 / 1.54e9),
    # The paper's pairs (bf16).
    "qwen2.5-7b": ModelSpec("qwen2.5-7b", 7.62e9, 28, 3584, 152064, 4, 128),
    "qwq-32b": ModelSpec("qwq-32b", 32.76e9, 64, 5120, 152064, 8, 128),
    "r1-distill-qwen-1.5b": ModelSpec("r1-distill-qwen-1.5b", 1.78e9, 28, 1536, 151936, 2, 128),
    "llama-3.1-8b": ModelSpec("llama-3.1-8b", 8.03e9, 32, 4096, 128256, 8, 128),
    "llama-3.3-70b": ModelSpec("llama-3.3-70b", 70.6e9, 80, 8192, 128256, 8, 128),
}


def cpu_2core_rates(model: str) -> MeasuredRates:
    """Per-token seconds of the embedded llama.cpp engine, 1 thread, quiet machine
    (bench/results/engines.md, "Re-measured", medians of 3; noisy to about +-25%).  Score =
    ``score@1024`` / 64 tokens; prefill = (``cold@1024`` - ``score@1024``) / 1023 prompt tokens;
    decode = 1 / decode tok/s.

    A single roofline does not fit these: the 1.5B reaches a higher effective FLOP/s in prefill
    than the 0.5B, and scoring runs below prefill (full-vocabulary logits and a float64
    log-softmax per row), so the preset keeps the measured rates per model and kind.
    """
    table = {
        "qwen2.5-coder-0.5b": MeasuredRates(1 / 27.3, (15.002 - 1.242) / 1023, 1.242 / 64,
                                            "bench/results/engines.md"),
        "qwen2.5-coder-1.5b": MeasuredRates(1 / 18.6, (32.068 - 2.616) / 1023, 2.616 / 64,
                                            "bench/results/engines.md"),
    }
    if model not in table:
        raise ValueError(f"no measured CPU rates for {model!r}; measured: {', '.join(table)} "
                         "(run bench/bench_engines.py for another model)")
    return table[model]


def engine(model: str | ModelSpec, device: str | Device, devices: int = 1,
           **changes: object) -> EngineSpec:
    """An ``EngineSpec`` from preset names.  ``cpu-2core`` gives the embedded engine: one core,
    one request at a time, on measured rates."""
    spec = MODELS[model] if isinstance(model, str) else model
    dev = DEVICES[device] if isinstance(device, str) else device
    if dev.name == "cpu-2core" and "rates" not in changes:
        changes = {"rates": cpu_2core_rates(spec.name), "max_batch": 1, "chunk_tokens": 512,
                   "overhead": 0.0, **changes}
    return EngineSpec(spec, dev, devices, **changes)  # type: ignore[arg-type]


def lookup_device(name: str) -> Device:
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return DEVICES[name]
