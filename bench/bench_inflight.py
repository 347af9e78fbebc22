"""Samples in flight, and generations moved beside each other (issue 30), on `make demo`'s job.

Runs GSM8K questions 0-4 x 4 samples (the demo's job) with the embedded Qwen pair on this
machine's cores, one run after the other on one boot: target-only and the default ATTS at each
``--max-active`` (samples in flight), and both at 8 in flight with generations left where
they start (``-nomove``: the engine before they were moved, ``atts.engines._gaps``).
Then tabulates every run against target-only at 8 and at its own samples in flight: wall time,
tokens a second (every token any engine wrote or scored: runs whose samples took other paths
compare by it), speed-up, pass@1 and its paired difference, and how the engines spent their
calls (sequences a decode call, ms a row, target rows per drafted token, moves, throwaway
rows, busy shares).  ``--limit 20 --only atts-m8 to-m16`` runs part of the plan on questions
0-19, and ``report --reference to-m16`` divides by that target-only run.

    .venv/bin/python bench/bench_inflight.py run --root runs/bench/inflight
    for m in 8 16 32; do .venv/bin/atts probe --json --max-active-samples $m --context 512 \\
        > bench/results/probe-m$m.json; done
    .venv/bin/python bench/bench_inflight.py report --root runs/bench/inflight \\
        --probes 'bench/results/probe-m{m}.json' --markdown bench/results/inflight.md

The bound of a run (``atts report --probe``, ``atts.perf.probe.run_bound``) is the engine
seconds its own tokens need at the probe's full-batch costs, on shared cores.

``run`` is resumable: a finished run is skipped (``atts run`` on a complete folder writes
nothing), a killed one goes on where it stopped.  Keep other work off the cores meanwhile:
each manifest records the load, the host's steal and the CPU share its process got.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from atts.report.summary import figure_text

JOB = ["--dataset", "gsm8k", "--samples", "4", "--no-progress"]
NO_MOVE = ("import sys\n"
           "import atts.engines._llama_loop as loop\n"
           "loop.better_place = lambda *args, **kwargs: None  # the engine before the moves\n"
           "from atts.cli.main import main\n"
           "sys.exit(main(sys.argv[1:], exiting=True))\n")


def plan(max_active: list[int]) -> list[tuple[str, list[str], bool]]:
    """(folder name, `atts run` arguments, generations moved) in the order they run."""
    runs = []
    for m in max_active:
        runs.append((f"to-m{m}", ["--strategy", "target_only", "--max-active-samples", str(m)],
                     True))
        runs.append((f"atts-m{m}", ["--strategy", "atts", "--max-active-samples", str(m)], True))
        if m == 8:
            runs.append(("atts-m8-nomove", ["--strategy", "atts"], False))
            runs.append(("to-m8-nomove", ["--strategy", "target_only"], False))
    return runs


def run(args: argparse.Namespace) -> int:
    names = [name for name, _, _ in plan(args.max_active)]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        print(f"bench_inflight: --only {' '.join(unknown)}: not in the plan; choose from "
              f"{' '.join(names)}", file=sys.stderr)
        return 2
    for name, extra, moved in plan(args.max_active):
        if args.only and name not in args.only:
            continue
        out = args.root / name
        command = ["run", *JOB, "--limit", str(args.limit), *extra, "--out", str(out)]
        print(f"== {time.strftime('%H:%M:%S')} {name} load {os.getloadavg()[0]:.2f}",
              flush=True)
        argv = ([sys.executable, "-m", "atts", *command] if moved
                else [sys.executable, "-c", NO_MOVE, *command])
        code = subprocess.call(argv)
        if code != 0:
            print(f"bench_inflight: {name} exited {code}", file=sys.stderr)
            return code
    return 0


def _summary(folder: Path, baselines: list[Path], probe: Path | None) -> dict[str, Any]:
    """The run's report summary against ``baselines``, with its bound at ``probe``'s costs."""
    from atts.perf.probe import load_probe, run_bound
    from atts.report.build import write_report

    saved = load_probe(probe) if probe is not None and probe.is_file() else None
    return write_report(folder, baselines, plots=False,
                        annotate=None if saved is None else lambda s: run_bound(saved, s)
                        ).summary


# Where a run's wall goes beyond its bound: each part's measured seconds against what the bound
# prices it at (the probe's full-batch cost per token; nothing for the parts it leaves out).
GAP_PARTS = ("draft decode", "target decode", "target scoring", "target prompts",
             "draft prefill", "outside the calls")


def gap_parts(summary: dict[str, Any], calls: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """part -> (measured seconds, seconds at the bound) for an ATTS run with a bound; the
    bound's parts add up to its ``bound_seconds`` and the measured ones to the wall."""
    cost, tokens = summary["bound"]["seconds_per_token"], summary["tokens"]
    draft, target = calls.get("draft", {}), calls.get("target", {})
    prefill = target.get("prefill_seconds", 0.0)
    prompts = (prefill * target.get("first_rows", 0) / target["prefill_rows"]
               if target.get("prefill_rows") else 0.0)
    busy = sum(c.get("decode_seconds", 0.0) + c.get("prefill_seconds", 0.0)
               for c in (draft, target))
    return {
        "draft decode": (draft.get("decode_seconds", 0.0),
                         tokens["draft_decode"] * cost["draft_decode"]),
        "target decode": (target.get("decode_seconds", 0.0),
                          tokens["target_decode"] * cost["target_decode"]),
        "target scoring": (prefill - prompts, tokens["target_score"] * cost["target_score"]),
        "target prompts": (prompts, 0.0),
        "draft prefill": (draft.get("prefill_seconds", 0.0), 0.0),
        "outside the calls": (summary["wall_seconds"] - busy, 0.0),
    }


def report(args: argparse.Namespace) -> int:
    root: Path = args.root
    folders = {p.name: p for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()}
    reference = args.reference
    if reference not in folders:
        print(f"bench_inflight: no finished {reference} run under {root}", file=sys.stderr)
        return 2
    rows: list[str] = []
    questions = 0  # the reference's, read from its summary in the loop
    gaps: list[str] = []
    for name, folder in folders.items():
        own = folder.with_name("to-" + name.split("-")[1])
        bases = [folders[reference]] + ([own] if own.name in folders
                                        and own.name != reference and name != own.name else [])
        in_flight = name.split("-")[1].lstrip("m")
        probe = (Path(args.probes.format(m=in_flight)) if args.probes else None)
        summary = _summary(folder, bases, probe)
        if name == reference:
            questions = int(summary["questions"])
        bound = summary.get("bound")
        use = summary.get("engine_use") or {"engines": {}}
        engines = use["engines"]
        manifest = json.loads((folder / "manifest.json").read_text())
        calls = manifest["last_session"].get("engine_calls", {})
        session = manifest.get("sessions", [{}])[-1]

        def both(key: str, spec: str, source: dict[str, Any] = engines) -> str:
            return " / ".join(figure_text(source.get(r, {}).get(key), spec)
                              for r in ("draft", "target"))

        speed = [b["speedup"] for b in summary["baselines"]]
        diff = summary["baselines"][0].get("pass@1_difference")
        if bound is not None and not name.startswith("to-"):
            parts = gap_parts(summary, calls)
            gaps.append(f"| {name} | {summary['wall_seconds']:.0f} | "
                        f"{bound['bound_seconds']:.0f} | " + " | ".join(
                            f"{parts[k][0]:.0f} / {parts[k][1]:.0f}" for k in GAP_PARTS) + " |")
        rows.append("| " + " | ".join([
            name, f"{summary['wall_seconds']:.0f}",
            f"{summary['tokens']['total'] / summary['wall_seconds']:.1f}",
            figure_text(speed[0], ".2f") + "x" if speed[0] is not None else "-",
            (figure_text(speed[1], ".2f") + "x") if len(speed) > 1 and speed[1] else "-",
            f"{summary['pass@1']:.3f} [{summary['pass@1_ci95'][0]:.2f}, "
            f"{summary['pass@1_ci95'][1]:.2f}]",
            "-" if name == reference or diff is None else
            f"{diff['estimate']:+.3f} [{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]",
            figure_text(summary.get("rejection_rate"), ".2f"),
            both("mean_decode_batch", ".1f"), both("decode_ms_per_row", ".0f"),
            figure_text(use.get("rows_per_drafted_token"), ".2f"),
            both("moves", "d", calls), both("padded_rows", ",", calls),
            both("busy_share", ".2f"),
            figure_text(manifest["last_session"].get("cores_used"), ".2f"),
            figure_text((session.get("cpu_share") or {}).get("steal"), ".3f"),
            "-" if bound is None else figure_text(bound["measured_over_bound"], ".2f"),
            "-" if bound is None or name.startswith("to-") else
            figure_text(bound["baselines"][0]["speedup_bound"], ".2f") + "x",
        ]) + " |")
    lines = [
        f"GSM8K 0-{questions - 1} x 4, {platform.machine()}, {os.cpu_count()} cores; "
        f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.  Speed-ups divide "
        "target-only's wall by the run's (same boot); pass@1 differences are paired by "
        f"question, with their 95% bootstrap intervals over {questions} questions.", "",
        f"| run | wall s | tokens a second | vs {reference} "
        "| vs target-only at its own in flight "
        f"| pass@1 [95% CI] | minus {reference} | rejected | sequences a decode call "
        "d / t | ms a decode row d / t | target rows per drafted token | moves d / t "
        "| throwaway rows d / t | busy d / t | cores used | steal "
        f"| measured / bound | speed-up bound vs {reference} |",
        "|" + "---|" * 18]
    lines += rows
    lines += ["", "Where the wall goes beyond the bound (ATTS runs with a probe; seconds measured "
              "from the engines' calls / at the bound, the probe's full-batch cost per token; "
              "the bound leaves prompts, the draft's reading of the target's text and the "
              "time outside the calls out):", "",
              "| run | wall s | bound s | " + " | ".join(GAP_PARTS) + " |",
              "|" + "---|" * (3 + len(GAP_PARTS))]
    lines += gaps
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("run", "report"))
    parser.add_argument("--root", type=Path, default=Path("runs/bench/inflight"))
    parser.add_argument("--max-active", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--limit", type=int, default=5, help="run: GSM8K questions 0..N-1")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run: these runs of the plan")
    parser.add_argument("--reference", default="to-m8",
                        help="report: the target-only run every speed-up divides")
    parser.add_argument("--markdown", help="report: write the table here")
    parser.add_argument("--probes", help="report: `atts probe --json` files by samples in "
                        "flight, e.g. bench/results/probe-m{m}.json: each run's bound")
    args = parser.parse_args(argv)
    return run(args) if args.mode == "run" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
