"""The markdown tables ``atts simulate`` prints, one function per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from atts.perf import roofline, scenarios
from atts.perf.devices import engine
from atts.perf.plan_run import simulate
from atts.perf.report import table
from atts.perf.workload import ParametricSpec, parametric


def _pct(x: float) -> str:
    return f"{x:+.0%}"


def validation_table(paths: Sequence[str | Path], loads: str | Path | None = None,
                     cores: int = 2) -> str:
    validated = scenarios.validate(paths, loads=loads, cores=cores)
    rows, skipped = validated.rows, validated.skipped

    def adjusted(v: scenarios.Validation) -> list[str]:
        if v.load is None or v.load_adjusted is None:
            return ["-", "-", "-"]
        return [f"{v.load:.1f}", f"{v.load_adjusted:.0f}", _pct(v.load_adjusted / v.measured - 1)]

    body = table(
        ["run", "engine", "samples", "measured s", "preset s", "error", "mean load",
         "preset x load/cores s", "error", "self-calibrated s", "error",
         "rate scale draft / score / target", "context tokens evaluated, recorded / simulated"],
        [[v.label, v.engine, v.samples, f"{v.measured:.0f}", f"{v.preset:.0f}",
          _pct(v.preset_error), *adjusted(v), f"{v.calibrated:.0f}", _pct(v.calibrated_error),
          " / ".join(f"{v.scales[k]:.2f}" for k in ("draft", "score", "target")),
          "-" if v.prefill is None else f"{v.prefill[0]:,} / {v.prefill[1]:,}"]
         for v in rows])
    worst = {name: max(abs(e) for e in errors) if errors else None for name, errors in (
        ("preset", [v.preset_error for v in rows]),
        ("load-adjusted", [v.load_adjusted / v.measured - 1 for v in rows
                           if v.load_adjusted is not None]),
        ("self-calibrated", [v.calibrated_error for v in rows]))}
    return (
        "Predicted wall time of each run from its own step trace (rounds, step lengths, "
        "decisions, calibration pre-passes, the engine's pool of contexts) on the `cpu-2core` "
        "engines.  Preset: the per-token rates of bench/results/engines.md (a quiet machine).  "
        f"Load-adjusted: those rates slowed by the run's mean load average over {cores} cores "
        "(each of L runnable threads gets cores / L of a core).  Self-calibrated: the rates "
        "scaled per kind so that the simulated engine seconds equal those the run recorded "
        "(the scale column; 1.00 = the preset was exact), which leaves only the schedule to "
        "predict.  Context tokens evaluated: prompt and history tokens the engines computed "
        "rather than read from their caches (the steps' `prefill_tokens`; `-` for runs "
        "written before steps recorded it), against the simulated pool's.\n\n" + body
        + "\nLargest error: "
        + ", ".join(f"{name} {value:.0%}" for name, value in worst.items() if value is not None)
        + "; target +-25%.\n"
        + (f"Not simulated (judge: its rating calls are not in the traces): "
           f"{', '.join(str(f) for f in skipped)}.\n" if skipped else ""))


def paper_table(device: str = "a100-80gb", samples: int = 16) -> str:
    draft, target = scenarios.paper_engines(device)
    costs = roofline.per_token_costs(draft, target, batch=samples, context=2000, step=500)
    rows = scenarios.paper(device, samples)
    shared = {r.profile.name: r for r in scenarios.paper(device, samples, shared=True)}
    body = table(
        ["profile", "what it models", "target-only s", "sync s", "atts s", "atts speedup",
         "atts speedup, one pair of GPUs", "sync speedup",
         "target-only / atts tokens written", "target batch (peak)"],
        [[r.profile.name, r.profile.explains, f"{r.walls['target_only']:.0f}",
          f"{r.walls['sync']:.0f}", f"{r.walls['atts']:.0f}", f"{r.speedup():.2f}x",
          f"{shared[r.profile.name].speedup():.2f}x", f"{r.speedup('sync'):.2f}x",
          f"{r.tokens['target_only']['target']:,} / "
          f"{r.tokens['atts']['draft'] + r.tokens['atts']['target']:,}",
          r.peak_batch["target_only"]] for r in rows])
    grid = []
    for target_stop in (0.125, 0.0):
        cells = []
        for atts_stop in (0.25, 0.5, 0.75, 0.9):
            profile = scenarios.PaperProfile("grid", "", atts_stop, target_stop)
            row = scenarios.paper_setup(profile, device, samples, ("atts", "target_only"))
            cells.append(f"{row.speedup():.1f}x")
        label = "all 15 rounds" if target_stop == 0 else f"stops w.p. {target_stop} per round"
        grid.append([f"target-only {label}", *cells])
    bound = [roofline.per_token_speedup(costs, 0.25, overlap=o) for o in (False, True)]
    return (
        f"Draft qwen2.5-7b on 1 x {device}, target qwq-32b on 2 x {device} (tensor parallel), "
        f"N = {samples}, 500-token steps, T = 15, r = 0.25 unless stated, steps continued "
        f"by the target; one question at a time (the authors' code) unless stated.  \"One pair "
        f"of GPUs\" is equal hardware: both models on the target's 2 x {device} (the draft's "
        f"server {scenarios.SHARED_DRAFT_MEMORY:.0%} of their memory), taking turns on them; "
        f"target-only has the two alone.  Per-token "
        f"costs at batch {samples}: draft decode {costs.draft_decode * 1e3:.2f} ms, target "
        f"decode {costs.target_decode * 1e3:.2f} ms, target score {costs.target_score * 1e3:.3f}"
        f" ms; per-token bound at r = 0.25: {bound[0]:.2f}x serial, {bound[1]:.2f}x with the "
        f"engines overlapped.  Paper: {scenarios.PAPER_SPEEDUPS}.\n\n" + body
        + "\nATTS speedup over target-only against how early ATTS samples answer (probability "
        "of a boxed answer after each round; 0.5 = 2 rounds on average) and how long the "
        "target alone thinks:\n\n"
        + table(["target-only", "ATTS stops w.p. 0.25", "0.5", "0.75", "0.9"], grid))


def sweep_table(samples: Sequence[int], rounds: Sequence[int], device: str, step_cv: float,
                plot: Path | None) -> str:
    points = scenarios.sync_sweep(samples, rounds, device, step_cv)
    if plot is not None:
        from atts.perf.plots import plot_sync_sweep

        plot_sync_sweep(points, plot)
    body = table(
        ["N", "rounds T", "sync: wait per sample per round", "share of sample time",
         "atts: wait", "question latency sync / atts", "wall sync / atts"],
        [[p.samples, p.rounds, f"{p.wait_per_round:.1f} s", f"{p.wait_share:.0%}", "0",
          f"{p.latency_ratio:.2f}x", f"{p.sync.wall_seconds / p.atts.wall_seconds:.2f}x"]
         for p in points])
    return (f"Draft qwen2.5-7b (1 x {device}) and target qwq-32b (2 x {device}); 4 questions "
            f"in flight at once; 500-token steps on average (coefficient of variation "
            f"{step_cv}); every sample runs all T rounds; r = 0.25, sync budget B = N / 4.\n\n"
            + body + (f"\nFigure: {plot.name}\n" if plot is not None else ""))


def run_table(args: argparse.Namespace) -> str:
    spec = ParametricSpec(
        questions=args.questions, samples=args.samples, rounds=args.rounds,
        draft_step=args.step_tokens, target_step=args.step_tokens,
        step_cap=max(1, int(args.step_tokens * (1 + 3 * args.step_cv))), step_cv=args.step_cv,
        stop=args.stop, target_only_stop=args.target_only_stop, rejection=args.rejection,
        mode=args.mode)
    if args.from_run:
        from atts.perf.stats import load_run_stats

        s = load_run_stats(args.from_run).step_summary()
        spec = ParametricSpec(
            questions=args.questions, samples=args.samples, rounds=args.rounds,
            draft_step=s["draft_step_mean"] or args.step_tokens,
            target_step=s["target_step_mean"] or s["draft_step_mean"] or args.step_tokens,
            step_cap=int(args.step_tokens), step_cv=s["draft_step_cv"],
            stop=min(1.0, 1.0 / max(1.0, s["rounds_mean"])), rejection=s["rejection"],
            mode=args.mode)
    draft = engine(args.draft_model, args.draft_device or args.device, args.draft_devices)
    target = engine(args.target_model, args.device, args.target_devices)
    walls, rows = {}, []
    for strategy in args.strategies:
        result = simulate(parametric(spec, strategy, max_active=args.max_active or args.samples),
                          draft, target)
        walls[strategy] = result.wall_seconds
        rows.append([strategy, f"{result.wall_seconds:.1f}",
                     f"{result.engines['draft']['tokens']['decode']:,}",
                     f"{result.engines['target']['tokens']['decode']:,}",
                     f"{result.barrier_wait:.0f}"])
    base = walls.get("target_only")
    for row in rows:
        row.append(f"{base / walls[row[0]]:.2f}x" if base else "-")
    return (f"{spec}\n\n" + table(["strategy", "wall s", "draft tokens", "target tokens",
                                    "barrier wait (sample-s)", "speedup vs target_only"], rows))


def bound_table(args: argparse.Namespace) -> str:
    if args.device:
        draft, target = scenarios.paper_engines(args.device)
        costs = roofline.per_token_costs(draft, target, batch=args.batch, context=2000,
                                         step=500)
        source = f"qwen2.5-7b / qwq-32b on {args.device}, batch {args.batch}"
    elif None not in (args.draft_decode, args.target_decode, args.target_score):
        costs = roofline.TokenCosts(args.draft_decode, args.target_decode, args.target_score)
        source = "given"
    else:
        from atts.perf.devices import cpu_2core_rates

        d, t = cpu_2core_rates("qwen2.5-coder-0.5b"), cpu_2core_rates("qwen2.5-coder-1.5b")
        costs = roofline.TokenCosts(d.decode, t.decode, t.score)
        source = "cpu-2core (bench/results/engines.md)"
    rows = []
    for r in args.rejection:
        rows.append([f"{r:g}"] + [
            f"{roofline.per_token_speedup(costs, r, mode=m, overlap=o):.2f}x"
            for m in ("continue", "regenerate") for o in (False, True)])
    even = {o: roofline.break_even_rejection(costs, overlap=o) for o in (False, True)}

    def show(value: float | None) -> str:
        if value is None:
            return "none (ATTS wins at every r)"
        return "none (ATTS loses at every r)" if value == 0.0 else f"r = {value:.2f}"

    return (f"Per-token costs ({source}): draft decode {costs.draft_decode * 1e3:.2f} ms, "
            f"target decode {costs.target_decode * 1e3:.2f} ms, target score "
            f"{costs.target_score * 1e3:.2f} ms.\n\n"
            + table(["rejection r", "continue, serial", "continue, overlapped",
                     "regenerate, serial", "regenerate, overlapped"], rows)
            + f"\nBreak-even (continue): {show(even[False])} serial, {show(even[True])} "
            "overlapped.\n")
