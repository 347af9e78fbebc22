"""Banks: sorted growth, immutable snapshots, and what concurrent readers (deciders) see."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading

import numpy as np
import pytest

from atts.conformal import (
    BankSnapshot,
    CalibrationBank,
    Decider,
    DecisionKey,
    DecisionPolicy,
    Thresholds,
    classify,
    p_value,
)


class OneBank:
    """A CalibrationBank as a Decider's bank store: judged against, then added to."""

    def __init__(self, bank: CalibrationBank) -> None:
        self.bank = bank

    def judging(self, key: DecisionKey, *, own_in_bank: bool = False) -> BankSnapshot:
        return self.bank.snapshot()

    def after(self, key: DecisionKey, score: float) -> None:
        self.bank.add(score)

    def where(self, key: DecisionKey) -> str:
        return "the test bank"


def test_add_keeps_the_bank_sorted_and_counts_every_score() -> None:
    rng = np.random.default_rng(0)
    bank = CalibrationBank()
    added: list[float] = []
    for _ in range(50):
        batch = rng.integers(0, 10, size=int(rng.integers(0, 5))).astype(float).tolist()
        bank.add(batch)
        added += batch
        one = float(rng.normal())
        assert bank.add(one) == len(added) + 1
        added.append(one)
    bank.add(np.array([[1.0, 2.0]]))  # any array shape is flattened
    bank.add(x for x in (3.0, 4.0))  # any iterable
    added += [1.0, 2.0, 3.0, 4.0]
    assert len(bank) == len(added)
    np.testing.assert_array_equal(bank.snapshot().scores, np.sort(added))


@pytest.mark.parametrize("start", [0, 1, 7, 40, 1000])
def test_merge_paths_agree_with_a_full_sort(start: int) -> None:
    rng = np.random.default_rng(start)
    pool = rng.integers(0, 50, size=start).astype(float)  # ties with the new scores
    bank = CalibrationBank(pool)
    for k in (1, 2, 16, 17, 100, 5000):
        batch = np.concatenate([rng.integers(0, 50, size=k // 2), rng.normal(25, 30, k - k // 2)])
        bank.add(batch)
        pool = np.concatenate([pool, batch])
        np.testing.assert_array_equal(bank.snapshot().scores, np.sort(pool))


def test_snapshot_is_immutable_and_unaffected_by_later_adds() -> None:
    bank = CalibrationBank([3.0, 1.0, 2.0])
    snap = bank.snapshot()
    bank.add([0.0, 10.0])
    assert snap.n == 3 and list(snap.scores) == [1.0, 2.0, 3.0]
    assert bank.snapshot().n == 5
    with pytest.raises(ValueError, match="read-only"):
        snap.scores[0] = 99.0
    with pytest.raises(AttributeError):
        snap.scores = np.zeros(3)  # type: ignore[misc]


def test_pickled_and_copied_snapshots_stay_read_only() -> None:
    snap = CalibrationBank([2.0, 1.0]).snapshot()
    for clone in (pickle.loads(pickle.dumps(snap)), copy.copy(snap), copy.deepcopy(snap)):
        assert clone == snap and not clone.scores.flags.writeable


def test_public_snapshot_constructor_copies_checks_and_sorts() -> None:
    src = np.array([2.0, 1.0])
    snap = BankSnapshot(src)
    src[0] = 50.0
    assert list(snap.scores) == [1.0, 2.0] and snap == BankSnapshot([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        BankSnapshot([1.0, float("nan")])


def test_snapshot_p_values_agree_with_the_formula() -> None:
    rng = np.random.default_rng(1)
    cal = rng.lognormal(size=200)
    snap = CalibrationBank(cal).snapshot()
    q = rng.lognormal(size=100)
    np.testing.assert_array_equal(snap.p_value(q), p_value(cal, q))
    assert type(snap.p_value(float(q[0]))) is float
    for s in q[:20]:
        assert snap.p_value_of(float(s)) == p_value(cal, float(s))


def test_add_refuses_non_finite_and_non_numbers_without_changing_the_bank() -> None:
    bank = CalibrationBank([1.0])
    for bad in (float("nan"), [2.0, float("inf")], np.array([-np.inf])):
        with pytest.raises(ValueError, match=r"finite.*scorer"):
            bank.add(bad)
    with pytest.raises(ValueError, match="number or an iterable"):
        bank.add(None)  # type: ignore[arg-type]
    assert len(bank) == 1


def _check_reader(snaps: list[BankSnapshot]) -> None:
    sizes = [s.n for s in snaps]
    assert sizes == sorted(sizes), "a reader saw the bank shrink"
    for s in snaps:
        assert not s.scores.flags.writeable
        assert np.all(np.diff(s.scores) >= 0), "a reader saw an unsorted (half-merged) bank"


def test_threads_adding_while_others_decide_see_consistent_snapshots() -> None:
    """Four writer threads add (single scores and batches) while three readers snapshot and
    decide. Every snapshot is sorted and read-only, each reader's sizes never shrink, every
    snapshot's content is a multiset of added values, and no add is lost."""
    writers, per_writer = 4, 300
    bank = CalibrationBank()
    stop = threading.Event()
    seen: list[list[BankSnapshot]] = [[] for _ in range(3)]
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for i in range(per_writer):
            if i % 3:
                bank.add(float(rng.integers(0, 1000)))
            else:
                bank.add(rng.integers(0, 1000, size=5).astype(float))

    def read(slot: int) -> None:
        th = Thresholds(0.2)
        try:
            while not stop.is_set():
                snap = bank.snapshot()
                if not seen[slot] or snap is not seen[slot][-1]:
                    seen[slot].append(snap)
                if snap.n >= th.min_bank_size:
                    classify(snap.p_value_of(500.0), th.alpha, th.alpha_discard)
        except BaseException as err:  # surfaced in the main thread below
            errors.append(err)

    readers = [threading.Thread(target=read, args=(k,)) for k in range(3)]
    writer_threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in readers + writer_threads:
        t.start()
    for t in writer_threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    per_writer_scores = (per_writer // 3) * 5 + (per_writer - per_writer // 3)
    assert len(bank) == writers * per_writer_scores
    for snaps in seen:
        assert len(snaps) > 1
        _check_reader(snaps)
    final = bank.snapshot().scores
    assert np.all(final == np.floor(final)) and final.min() >= 0 and final.max() < 1000


def test_asyncio_tasks_and_threads_together() -> None:
    """200 asyncio tasks decide-then-add through one Decider on one event loop while two
    threads add batches; the bank ends with every score and each task only ever saw sorted,
    non-shrinking snapshots."""
    bank = CalibrationBank(np.arange(20.0))
    th = Thresholds(0.1, 0.05)
    decider = Decider(DecisionPolicy(th), OneBank(bank))

    def thread_add(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(100):
            bank.add(rng.normal(size=10))

    async def task(seed: int) -> list[BankSnapshot]:
        rng = np.random.default_rng(seed)
        snaps = []
        for _ in range(10):
            snap = bank.snapshot()
            snaps.append(snap)
            score = float(rng.normal())
            verdict = decider.decide(DecisionKey(f"q{seed}"), score)  # decide, then add
            assert verdict.p_value is not None
            assert verdict.decision is classify(verdict.p_value, th.alpha, th.alpha_discard)
            await asyncio.sleep(0)
        return snaps

    async def main() -> list[list[BankSnapshot]]:
        threads = [asyncio.to_thread(thread_add, 1000 + k) for k in range(2)]
        results = await asyncio.gather(*(task(k) for k in range(200)), *threads)
        return [r for r in results if r is not None]

    for snaps in asyncio.run(main()):
        _check_reader(snaps)
    assert len(bank) == 20 + 200 * 10 + 2 * 100 * 10
