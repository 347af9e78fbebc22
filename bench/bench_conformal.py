"""Micro-benchmark of the conformal core: per-decision latency against banks of 10^3..10^6 scores.

Not a test. Prints a markdown table of medians (over --repeats timings) of:
- batch p-values, amortised per query over a batch of --batch random queries
  (`BankSnapshot.p_value(array)`, `p_value(..., randomized=True)`);
- single query: `BankSnapshot.p_value(float)` and a run's decision, `Decider.decide` against a
  fixed pooled bank (what every step of a run, replay or request pays), timed over loops of
  --loop calls;
- `CalibrationBank.add(float)`: the copy-on-write insert of one score (O(n)).

Usage: .venv/bin/python bench/bench_conformal.py [--sizes 1000 100000 1000000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from atts.conformal import (
    CalibrationBank,
    Decider,
    DecisionKey,
    DecisionPolicy,
    StrataBanks,
    Thresholds,
)


def median_ns(fn: Callable[[], object], per: int, repeats: int) -> float:
    """Median over `repeats` timings of `fn()`, divided by the `per` operations it performs."""
    fn()  # warm caches and lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / per)
    return statistics.median(times)


def bench_size(n: int, batch: int, loop: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    bank = CalibrationBank(rng.lognormal(sigma=1.0, size=n))
    snap = bank.snapshot()
    th = Thresholds(0.25, 0.05)
    queries = rng.lognormal(sigma=1.0, size=batch)
    singles = [float(x) for x in queries[:loop]]
    urng = np.random.default_rng(0)

    def single_p() -> None:
        for s in singles:
            snap.p_value(s)

    decider = Decider(DecisionPolicy(th), StrataBanks(initial=snap.scores))
    key = DecisionKey("q")

    def single_decide() -> None:
        for s in singles:
            decider.decide(key, s)

    add_bank = CalibrationBank(snap.scores)
    adds = [float(x) for x in rng.lognormal(sigma=1.0, size=max(loop // 10, 10))]

    def add_one() -> None:
        for s in adds:
            add_bank.add(s)

    return {
        "batch p_value": median_ns(lambda: snap.p_value(queries), batch, repeats),
        "batch randomized": median_ns(
            lambda: snap.p_value(queries, randomized=True, rng=urng), batch, repeats
        ),
        "single p_value": median_ns(single_p, len(singles), repeats),
        "single decide": median_ns(single_decide, len(singles), repeats),
        "add one score": median_ns(add_one, len(adds), max(repeats // 5, 3)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--loop", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()} {platform.processor() or platform.system()}; "
        f"batch={args.batch}, loop={args.loop}, repeats={args.repeats}"
    )
    rows = {n: bench_size(n, args.batch, args.loop, args.repeats) for n in args.sizes}
    columns = list(next(iter(rows.values())))
    print()
    print("| bank n | " + " | ".join(f"{c} (us)" for c in columns) + " |")
    print("|---:|" + "---:|" * len(columns))
    for n, row in rows.items():
        print(f"| {n:,} | " + " | ".join(f"{row[c] / 1000:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
