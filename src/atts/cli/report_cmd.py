"""`atts report`: grade a finished run folder and write report.md, summary.json and plots.

Nothing is generated again: the report reads manifest.json and samples.jsonl.  Each
`--baseline` (e.g. a `--strategy target_only` run on the same questions) adds a row to every
table and plot, and summary.json gets the speedup over it: its wall time / this run's.
`--probe probe.json` (saved from `atts probe --json` on the run's engines) adds the run's bound:
the wall time its own tokens need at the probe's full-batch costs, measured / bound, and for
each baseline the speedup its tokens allow beside the measured one.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="write report.md, summary.json and plots for a run folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN", help="run folder (the --out of `atts run`)")
    parser.add_argument("--baseline", action="append", default=[], metavar="RUN",
                        help="a run to compare with (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="where to write the report (default: RUN)")
    parser.add_argument("--regrade", action="store_true",
                        help="grade every answer again instead of reading grades.json")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--probe", metavar="FILE",
                        help="`atts probe --json` output for the run's engines: print the "
                             "run's bound and measured / bound")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from atts.perf.probe import load_probe, run_bound
    from atts.report.build import write_report
    from atts.report.summary import format_summary

    saved = load_probe(args.probe) if args.probe else None  # before any grading
    files = write_report(args.run, args.baseline, args.out, regrade=args.regrade,
                         plots=not args.no_plots,
                         annotate=None if saved is None else lambda s: run_bound(saved, s))
    print(format_summary(files.summary))
    bound = files.summary.get("bound")
    if bound is not None:
        ratio = bound["measured_over_bound"]
        print(f"{'bound':<12}{bound['bound_seconds']:.4g} s of engine work at the probe's "
              f"costs ({'own devices' if bound['overlap'] else 'shared cores'}, batch "
              f"{bound['batch']}); measured / bound "
              + ("n/a" if ratio is None else f"{ratio:.2f}"))
    for entry in files.summary["baselines"]:
        if not entry.get("comparable", True):
            print(f"{'speedup':<12}none: {entry['label']} answered other questions or drew "
                  "another N (see report.md)")
        elif entry.get("same_boot") is False:
            print(f"{'speedup':<12}none: {entry['label']} ran on another boot of a machine "
                  "(see report.md); run the two in one session")
        elif entry["speedup"] is not None:
            diff = entry.get("pass@1_difference")
            at = ("" if diff is None else f" at pass@1 {diff['estimate']:+.3f} "
                  f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]")
            unchecked = (" (boots not recorded: see report.md)"
                         if entry.get("same_boot") is None else "")
            print(f"{'speedup':<12}{entry['speedup']:.3g}x over {entry['label']}{at}{unchecked}"
                  + _bound_text(bound, entry["label"]))
    written = [files.markdown.name, files.summary_json.name,
               *(path.name for path in files.plots.values())]
    print(f"atts report: wrote {', '.join(written)} to {files.out_dir}", file=sys.stderr)
    return 0


def _bound_text(bound: dict | None, label: str) -> str:
    """``; bound 0.62x (measured 0.55 of it)`` for a baseline, when a probe was given."""
    if bound is None:
        return ""
    entry = next((b for b in bound["baselines"] if b["label"] == label), None)
    if entry is None or entry["speedup_bound"] is None:
        return ""
    share = entry["share_of_bound"]
    return (f"; bound {entry['speedup_bound']:.3g}x"
            + ("" if share is None else f" (measured {share:.2f} of it)"))
