"""What ``atts simulate`` computes: validation on real runs, the paper's setups, the sync sweep.

- ``validate``: each run folder's own plans on the ``cpu-2core`` engines; predicted against
  measured wall time.  Two predictions: with the preset rates (bench/results/engines.md), and
  "self-calibrated" (the preset's rates scaled per kind, draft generation, target scoring,
  target generation, so the simulated engine seconds equal those the run recorded); the second
  isolates the schedule model from how fast the cores happened to be during the run.
- ``paper``: the paper's setting (draft Qwen2.5-7B on one A100, target QwQ-32B on two, N = 16,
  500-token steps, T = 15, one question at a time as in the authors' code) under token-count
  profiles that say how far each factor of docs/METHOD.md section 6 goes.
- ``sync_sweep``: how the synchronous barrier's waiting grows with N and rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atts.perf.devices import EngineSpec, MeasuredRates, engine
from atts.perf.plan_run import SimResult, simulate
from atts.perf.stats import RunStats, find_runs, load_run_stats, mean_load
from atts.perf.workload import SIMULATED_STRATEGIES, ParametricSpec, parametric

PAPER_SPEEDUPS = "5.7x-14.5x (one table, Qwen2.5-7B / QwQ-32B), up to 56.7x (best case)"


@dataclass(frozen=True)
class Validation:
    label: str
    strategy: str
    engine: str
    samples: int
    measured: float
    preset: float
    calibrated: float
    scales: dict[str, float]  # measured / simulated engine seconds, per kind
    load: float | None = None  # mean load average while it ran
    load_adjusted: float | None = None  # preset rates x max(1, load / cores)
    # Context tokens evaluated rather than read from a cache: (recorded, simulated); None for
    # runs whose steps do not record prefill_tokens.
    prefill: tuple[int, int] | None = None

    @property
    def preset_error(self) -> float:
        return self.preset / self.measured - 1.0

    @property
    def calibrated_error(self) -> float:
        return self.calibrated / self.measured - 1.0


def cpu_engines(stats: RunStats) -> tuple[EngineSpec, EngineSpec]:
    draft = str(stats.config.get("draft") or "qwen2.5-coder-0.5b")
    target = str(stats.config.get("target") or "qwen2.5-coder-1.5b")
    known = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    draft = draft if draft in known else "qwen2.5-coder-0.5b"
    target = target if target in known else "qwen2.5-coder-1.5b"
    return engine(draft, "cpu-2core"), engine(target, "cpu-2core")


def _scaled(spec: EngineSpec, generate: float, score: float) -> EngineSpec:
    assert spec.rates is not None
    r = spec.rates
    rates = MeasuredRates(r.decode * generate, r.prefill * generate, r.score * score,
                          "self-calibrated")
    return spec.with_(rates=rates)


def validate_run(path: str | Path, *, loads: str | Path | None = None,
                 cores: int = 2) -> Validation:
    """Predict one run.  ``loads``: a load-average log (see ``stats.mean_load``); with it a
    third prediction slows the preset rates by the run's mean load over ``cores`` (each of
    L runnable threads gets cores / L of a core)."""
    stats = load_run_stats(path)
    draft, target = cpu_engines(stats)
    first = simulate(stats.workload, draft, target)
    simulated = {
        "draft": first.engines["draft"]["seconds_by_kind"].get("generate", 0.0),
        "score": first.engines["target"]["seconds_by_kind"].get("score", 0.0),
        "target": first.engines["target"]["seconds_by_kind"].get("generate", 0.0),
    }
    scales = {k: (stats.engine_seconds[k] / v if v > 0 and stats.engine_seconds[k] > 0 else 1.0)
              for k, v in simulated.items()}
    second = simulate(stats.workload, _scaled(draft, scales["draft"], 1.0),
                      _scaled(target, scales["target"], scales["score"]))
    load = mean_load(loads, *stats.span) if loads is not None else None
    adjusted = None
    if load is not None:
        factor = max(1.0, load / cores)
        adjusted = simulate(stats.workload, _scaled(draft, factor, factor),
                            _scaled(target, factor, factor)).wall_seconds
    return Validation(stats.label, stats.strategy, str(stats.config.get("engine", "?")),
                      len(stats.workload.plans), stats.wall_seconds, first.wall_seconds,
                      second.wall_seconds, scales, load, adjusted,
                      None if stats.prefill_tokens is None
                      else (stats.prefill_tokens, first.context_prefill))


def run_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Every run folder in ``paths`` (a folder holding run folders counts for all)."""
    folders: list[Path] = []
    for path in paths:
        p = Path(path)
        folders += [p] if (p / "manifest.json").is_file() else find_runs(p)
    if not folders:
        raise ValueError(f"no run folder under {', '.join(map(str, paths))}; pass the --out "
                         "folder of an `atts run`")
    return folders


def unmodelled(folders: Sequence[Path]) -> list[Path]:
    """The run folders whose strategy the simulator does not replay (judge: its rating calls
    are not in the step traces)."""
    from atts.runner.run_folder import RunFolder

    def strategy(folder: Path) -> str:
        config = RunFolder(folder).read_manifest().get("config") or {}
        return str(config.get("strategy") or "")

    return [f for f in folders if strategy(f) not in SIMULATED_STRATEGIES]


@dataclass(frozen=True)
class ValidationSet:
    """``validate``'s answer: a row per replayed run, and the folders it could not replay."""

    rows: list[Validation]
    skipped: list[Path]


def validate(paths: Sequence[str | Path], *, loads: str | Path | None = None,
             cores: int = 2) -> ValidationSet:
    """Validate every run folder in ``paths`` whose strategy the simulator replays."""
    folders = run_folders(paths)
    skipped = unmodelled(folders)
    return ValidationSet([validate_run(f, loads=loads, cores=cores)
                          for f in folders if f not in skipped], skipped)


# -- the paper's setting ------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperProfile:
    name: str
    explains: str
    atts_stop: float  # ATTS (draft-led) answers after each round with this probability
    target_stop: float  # target-only: 0 = the long-thinking target runs all T rounds
    rejection: float = 0.25
    questions: int = 15
    question_admission: bool = True  # the authors' code: one question (16 samples) at a time


PAPER_PROFILES = (
    PaperProfile("same loop, same tokens", "per-token bound only: both stop alike",
                 atts_stop=0.25, target_stop=0.25),
    PaperProfile("MATH-like", "long-thinking target (~4k tokens) vs draft-led ATTS (~2 steps)",
                 atts_stop=0.5, target_stop=0.125),
    PaperProfile("AIME-like", "target thinks all 15 rounds (7.5k tokens); ATTS ~4 steps",
                 atts_stop=0.25, target_stop=0.0),
    PaperProfile("AIME-like, r = 0.1", "as above, fewer rejections",
                 atts_stop=0.25, target_stop=0.0, rejection=0.1),
    PaperProfile("best case, all questions at once",
                 "ATTS answers in ~1 step; target-only 7.5k tokens and KV-memory-bound "
                 "(100 questions x 16 samples submitted together)",
                 atts_stop=0.9, target_stop=0.0, rejection=0.1, questions=100,
                 question_admission=False),
)


@dataclass(frozen=True)
class PaperRow:
    profile: PaperProfile
    walls: dict[str, float]
    tokens: dict[str, dict[str, int]]
    peak_batch: dict[str, int]

    def speedup(self, strategy: str = "atts") -> float:
        return self.walls["target_only"] / self.walls[strategy]


# Both models on the target's two devices (equal hardware): the draft's server takes this
# share of their memory, the target's the rest of what a server takes (EngineSpec's 0.88).
SHARED_DRAFT_MEMORY = 0.22


def paper_engines(device: str = "a100-80gb", *, shared: bool = False
                  ) -> tuple[EngineSpec, EngineSpec]:
    """Draft Qwen2.5-7B on one device, target QwQ-32B on two (tensor parallel): the paper's
    three devices.  ``shared``: both on the same two devices, their memory split (the equal-
    hardware setting: target-only runs on those two alone); the simulation then lets their
    iterations take turns (``Simulation(shared_device=True)``)."""
    if not shared:
        return engine("qwen2.5-7b", device, 1), engine("qwq-32b", device, 2)
    target_share = engine("qwq-32b", device, 2).memory_fraction - SHARED_DRAFT_MEMORY
    return (engine("qwen2.5-7b", device, 2, memory_fraction=SHARED_DRAFT_MEMORY),
            engine("qwq-32b", device, 2, memory_fraction=target_share))


def paper_setup(profile: PaperProfile, device: str = "a100-80gb", samples: int = 16,
                strategies: Sequence[str] = ("atts", "sync", "target_only"), *,
                shared: bool = False) -> PaperRow:
    """One profile; ``shared``: ATTS and sync with both models on the target's devices, and
    target-only with all of their memory (equal hardware)."""
    draft, target = paper_engines(device, shared=shared)
    alone = paper_engines(device)[1]
    spec = ParametricSpec(questions=profile.questions, samples=samples, rounds=15,
                          draft_step=500, target_step=500, step_cap=500, step_cv=0.0,
                          stop=profile.atts_stop, target_only_stop=profile.target_stop,
                          rejection=profile.rejection, prompt_tokens=150)
    slots = samples if profile.question_admission else samples * profile.questions
    walls, tokens, peaks = {}, {}, {}
    for strategy in strategies:
        workload = parametric(spec, strategy, max_active=slots,
                              question_admission=profile.question_admission)
        if strategy == "target_only":
            result = simulate(workload, draft, alone)
        else:
            result = simulate(workload, draft, target, shared_device=shared)
        walls[strategy] = result.wall_seconds
        tokens[strategy] = {name: e["tokens"]["decode"] for name, e in result.engines.items()}
        peaks[strategy] = result.engines["target"]["peak_batch"]
    return PaperRow(profile, walls, tokens, peaks)


def paper(device: str = "a100-80gb", samples: int = 16, *, shared: bool = False
          ) -> list[PaperRow]:
    return [paper_setup(p, device, samples, shared=shared) for p in PAPER_PROFILES]


# -- the synchronous barrier -------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPoint:
    samples: int
    rounds: int
    questions: int
    atts: SimResult
    sync: SimResult

    @property
    def wait_per_round(self) -> float:
        """Seconds a sample waits at one round's barrier, on average (sync)."""
        return self.sync.barrier_wait / (self.samples * self.questions * self.rounds)

    @property
    def wait_share(self) -> float:
        """Share of the samples' time spent waiting at barriers (sync)."""
        return self.sync.barrier_wait / self.sync.busy_sample_seconds

    @property
    def latency_ratio(self) -> float:
        """Mean question latency, sync over atts."""
        def mean(result: SimResult) -> float:
            values = list(result.question_latency.values())
            return sum(values) / len(values)

        return mean(self.sync) / mean(self.atts)


def sync_sweep(samples: Sequence[int] = (1, 2, 4, 8, 16, 32),
               rounds: Sequence[int] = (1, 5, 10, 15), device: str = "a100-80gb",
               step_cv: float = 0.5, questions: int = 4) -> list[SweepPoint]:
    """atts and sync on the same draws: every sample runs all T rounds (no early stop, so
    the rounds are exactly T), steps of 500 tokens on average with the given spread."""
    draft, target = paper_engines(device)
    points = []
    for t in rounds:
        for n in samples:
            spec = ParametricSpec(questions=questions, samples=n, rounds=t, step_cv=step_cv,
                                  stop=0.0)
            knobs = {"max_active": n * questions}
            results = [simulate(parametric(spec, s, **knobs), draft, target)
                       for s in ("atts", "sync")]
            points.append(SweepPoint(n, t, questions, results[0], results[1]))
    return points


