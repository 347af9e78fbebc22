"""bench/bench_strategies.py: the sweep it plans (folders, labels, run settings) and the
accuracy it reports (repeats pooled per question, the paired difference, the pooled rejection
rate).  Nothing here runs a model; the figures are hand-computed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("bench_strategies")


def _args(bench, **over) -> argparse.Namespace:
    values = dict(datasets=["gsm8k:20@20"], strategies=["target_only", "atts"], samples=4,
                  alphas=[0.25], calibrations=["adaptive"], modes=["regenerate"],
                  strata=["round"], scores=["tail_mean"], judge_thresholds=[7], repeats=1,
                  seed=0, cores=None, max_active=[bench.RUN_DEFAULT.max_active_samples])
    values.update(over)
    return argparse.Namespace(**values)


def test_a_slice_names_its_questions(bench):
    part = bench.Slice.parse("gsm8k:20@20")
    assert (part.dataset, part.limit, part.offset) == ("gsm8k", 20, 20)
    assert part.group == "gsm8k-20q-from20"
    assert bench.Slice.parse("gsm8k:20").group == "gsm8k-20q"


def test_the_default_in_flight_count_keeps_the_folder_names_of_earlier_runs(bench):
    labels = [job.label for job in bench.jobs(_args(bench))]
    assert labels == ["target_only", "atts-a0.25-adaptive-round-tail_mean-regenerate"]


def test_max_active_is_swept_for_every_strategy_and_reaches_the_run_settings(bench):
    args = _args(bench, max_active=[8, 16])
    todo = bench.jobs(args)
    assert [job.label for job in todo] == [
        "target_only", "target_only-m16",
        "atts-a0.25-adaptive-round-tail_mean-regenerate",
        "atts-a0.25-adaptive-round-tail_mean-regenerate-m16"]
    configs = [job.config(args) for job in todo]
    assert [c.max_active_samples for c in configs] == [8, 16, 8, 16]
    assert all((c.limit, c.offset) == (20, 20) for c in configs)
    folder = todo[1].folder(Path("runs"), 4)
    assert folder == Path("runs/gsm8k-20q-from20-n4/target_only-m16/rep0")


def _summary(per_question: dict[str, float], rejections: int = 0, steps: int = 0) -> dict:
    return {"n": 4, "alpha": 0.25,
            "per_question": {q: {"pass@1": v, "maj@4": round(v)}
                             for q, v in per_question.items()},
            "rejection": {"overall": {"rejections": rejections, "steps": steps}
                          if steps else None}}


def test_repeats_pool_per_question(bench):
    first = _summary({"a": 0.25, "b": 1.0})
    second = _summary({"a": 0.75, "b": 0.5})
    assert bench.per_question([first, second], "pass@1") == {"a": 0.5, "b": 0.75}
    assert bench.pooled_accuracy([first, second], "pass@1").startswith("0.625 [")


def test_the_difference_pairs_the_pooled_questions(bench):
    runs = [_summary({"a": 0.25, "b": 1.0}), _summary({"a": 0.75, "b": 0.5})]
    base = [_summary({"a": 1.0, "b": 0.5})]
    # Pooled run: a 0.5, b 0.75; differences -0.5 and +0.25, mean -0.125.
    assert bench.accuracy_difference(runs, base, "pass@1").startswith("-0.125 [-0.50, +0.25]")
    other = [_summary({"a": 1.0, "c": 0.5})]
    assert bench.accuracy_difference(runs, other, "pass@1") == "other questions"


def test_the_rejection_rate_sums_the_repeats_counts(bench):
    pooled = bench.pooled_rejection([_summary({"a": 1.0}, 10, 40), _summary({"a": 1.0}, 30, 40)])
    assert pooled.startswith("0.50 (") and pooled.endswith(" vs 0.25")
    assert bench.pooled_rejection([_summary({"a": 1.0})]) == "-"


def _done(bench, label: str, repeat: int, start: float, boots: frozenset[str] | None,
          wall: float) -> object:
    return bench.Done(bench.Slice.parse("gsm8k:20"), label, repeat, Path("x"),
                      {"wall_seconds": wall}, (start, start + wall), "cpu", "budget", True,
                      None, boots, {})


def test_a_speedup_divides_only_wall_times_of_one_boot(bench):
    one, two = frozenset({"boot-1"}), frozenset({"boot-2"})
    old = _done(bench, "target_only", 0, 0.0, None, 1000.0)
    early = _done(bench, "target_only", 1, 10.0, one, 900.0)
    late = _done(bench, "target_only", 2, 5000.0, one, 950.0)
    run = _done(bench, "atts", 0, 4000.0, one, 2000.0)
    # The nearest target-only run of the same boot, whatever its repeat index.
    assert bench.speed_baseline(run, [old, early, late]) == (late, "")
    # A run of another boot gets no ratio, not the legacy run's.
    elsewhere = _done(bench, "atts", 0, 4000.0, two, 2000.0)
    assert bench.speed_baseline(elsewhere, [early, late]) == (None, bench.OTHER_BOOT)
    # Unrecorded boots pair by repeat index, as before boots were recorded, and are marked.
    legacy = _done(bench, "atts", 0, 3000.0, None, 2000.0)
    assert bench.speed_baseline(legacy, [early, old]) == (old, bench.UNRECORDED)
    assert bench.speed_baseline(elsewhere, [old]) == (old, bench.UNRECORDED)
    # An unrecorded run of repeat 1 pairs with the unrecorded baseline, not a later recorded one.
    legacy_second = _done(bench, "atts", 1, 3000.0, None, 2000.0)
    assert bench.speed_baseline(legacy_second, [old, early]) == (old, bench.UNRECORDED)


def test_the_speed_cell_says_why_it_has_no_ratio_or_whose_it_is(bench):
    one = frozenset({"boot-1"})
    run = _done(bench, "atts", 0, 0.0, one, 10.0)
    base = _done(bench, "target_only", 0, 0.0, one, 5.0)
    marks: set[str] = set()
    assert bench.speed_text(0.6, [(run, base, "")], marks) == "0.60x" and not marks
    assert bench.speed_text(0.5, [(run, base, bench.UNRECORDED)], marks) == "0.50x\u2020"
    assert marks == {bench.UNRECORDED}
    # Two repeats, one without a baseline of its boot: the ratio is the other's, and says so.
    marks = set()
    text = bench.speed_text(0.5, [(run, base, ""), (run, None, bench.OTHER_BOOT)], marks)
    assert text == "0.50x (1 of 2)" and marks == {bench.OTHER_BOOT}
    assert bench.speed_text(None, [(run, None, bench.OTHER_BOOT)], set()) == bench.OTHER_BOOT
    assert bench.speed_text(None, [], set()) == "-"


def test_engine_use_shows_busy_shares_and_batches_per_repeat(bench):
    legacy = _done(bench, "atts", 0, 0.0, None, 10.0)
    assert bench.engine_use([legacy]) == "-"
    calls = {"draft": {"busy_share": 0.5, "mean_decode_batch": 5.25},
             "target": {"busy_share": 0.375, "mean_decode_batch": None}}
    recorded = bench.Done(**{**legacy.__dict__, "calls": calls})
    assert bench.engine_use([recorded]) == "0.50 / 0.38; 5.2 / -"
    shared = bench.Done(**{**legacy.__dict__, "calls": {"shared": calls["draft"]}})
    assert bench.engine_use([shared]) == "0.50 (one engine); 5.2 (one engine)"


def test_pass_at_n_pools_and_pairs_like_pass_at_1(bench):
    def with_any(values: dict[str, float]) -> dict:
        summary = _summary({q: 0.5 for q in values})
        for q, v in values.items():
            summary["per_question"][q]["pass@4"] = v
        return summary

    runs = [with_any({"a": 1.0, "b": 0.0}), with_any({"a": 1.0, "b": 1.0})]
    assert bench.per_question(runs, "pass@4") == {"a": 1.0, "b": 0.5}
    base = [with_any({"a": 1.0, "b": 1.0})]
    assert bench.accuracy_difference(runs, base, "pass@4").startswith("-0.250 [")


def test_the_load_column_names_the_host_steal_a_run_recorded(bench, tmp_path):
    (tmp_path / "load_samples.log").write_text("100 2.00 2.00 2.00\n115 1.00 1.00 1.00\n")
    quiet = _done(bench, "atts", 0, 90.0, None, 30.0)
    stolen = bench.Done(**{**quiet.__dict__, "summary": {**quiet.summary, "host_steal": 0.34}})
    unrecorded = bench.Done(**{**quiet.__dict__, "span": (500.0, 600.0)})
    assert bench.loads_of(tmp_path, [quiet, stolen]) == "1.5, 1.5 steal 34%"
    assert bench.loads_of(tmp_path, [unrecorded]) == "-"
