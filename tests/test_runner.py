"""The asynchronous runner on scripted engines with controllable delays: concurrency limits,
no barriers under atts (and the barrier under sync), calibration pre-passes, failures, resume.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atts.perf.virtual_clock import run_virtual
from atts.runner.run_folder import RunFolder, RunFolderError
from atts.runner.runner import execute, sample_specs
from atts.seeds import derive_seed
from pipeline_helpers import config, engines, problems, round_of, run

SRC = str(Path(__file__).resolve().parents[1] / "src")


def finished_row(question_id: str, index: int, **fields: object) -> dict[str, object]:
    """A samples.jsonl row with the fields a run folder checks its rows for (SAMPLE_ROW)."""
    return {"question_id": question_id, "dataset": "gsm8k", "sample_index": index,
            "status": "ok", "answer": "1", "gold": "1", "steps": [], "started_at": 0.0,
            "finished_at": 1.0, **fields}


def test_concurrency_limits_are_never_exceeded(tmp_path):
    cfg = config(samples=4, rounds=3, draft_concurrency=2, target_concurrency=3,
                 max_active_samples=6, alpha=0.5)
    draft, target = engines(
        lambda call: f"s ppl={10 + round_of(call) * 40}\n\n",
        draft_delay=lambda call: 0.01, target_delay=lambda call: 0.01,
    )
    outcome, rows = run(cfg, draft, target, tmp_path, questions=3)
    assert len(rows) == 12
    assert 1 <= draft.peak_in_flight <= 2
    assert target.peak_in_flight == 3  # reached, never exceeded
    assert outcome.draft_peak_in_flight <= 2 and outcome.target_peak_in_flight <= 3


def _slow_sample_run(strategy: str, tmp_path: Path) -> dict[int, float]:
    """Sample 0 of the question drafts slowly; returns each sample's finish time."""
    cfg = config(strategy=strategy, samples=4, rounds=4, sync_budget=1, alpha=0.1,
                 draft_concurrency=4, target_concurrency=4)
    spec_seed = next(sample_specs(cfg, problems(1))).seed
    slow = {derive_seed(spec_seed, r, "draft") for r in range(cfg.rounds)}
    draft, target = engines(
        lambda call: "s ppl=10\n\n",
        draft_delay=lambda call: 0.25 if call.params.seed in slow else 0.01,
    )
    _, rows = run(cfg, draft, target, tmp_path, questions=1)
    first = min(r["started_at"] for r in rows)
    return {r["sample_index"]: r["finished_at"] - first for r in rows}


def test_atts_samples_do_not_wait_for_a_slow_sibling_but_sync_samples_do(tmp_path):
    atts = _slow_sample_run("atts", tmp_path / "atts")
    sync = _slow_sample_run("sync", tmp_path / "sync")
    # atts: the fast siblings finish all 4 rounds in ~4 x 0.01 s, long before the slow one
    # (~4 x 0.25 s).  sync: every round waits for the slow sample, so they finish with it.
    assert max(atts[i] for i in (1, 2, 3)) < 0.5 * atts[0]
    assert min(sync[i] for i in (1, 2, 3)) > 0.9 * sync[0] - 0.1
    assert sync[0] > 0.9  # four slow rounds


def test_sync_sends_the_worst_scored_steps_to_the_target(tmp_path):
    cfg = config(strategy="sync", samples=4, rounds=2, sync_budget=1)
    draft, target = engines(lambda call: f"s ppl={(call.params.seed % 97) + 1}\n\n")
    _, rows = run(cfg, draft, target, tmp_path, questions=1)
    for round_index in range(2):
        judged = [
            (s["score"], s["decision"]) for r in rows for s in r["steps"]
            if s["author"] == "draft" and s["round"] == round_index
        ]
        worst = max(judged)[0]
        assert [d for sc, d in judged if d == "continue"] == ["continue"]
        assert dict((d, sc) for sc, d in judged)["continue"] == worst


def test_question_calibration_reuses_the_calibration_drafts_as_first_steps(tmp_path):
    cfg = config(calibration="question", calibration_file=None, calibration_m=4, samples=4,
                 rounds=1, alpha=0.25)
    draft, target = engines(lambda call: f"s ppl={(call.params.seed % 50) + 1}\n\n")
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=2)
    drafts = sum(c.kind == "generate" for c in draft.calls)
    assert drafts == 8  # 2 questions x 4 samples x 1 round: no extra drafting
    first_steps = [r["steps"][0] for r in rows]
    assert all(s["calibration"] for s in first_steps)
    # Leave-one-out: each first step is judged against the other m - 1 = 3 scores.
    for question in ("t/0", "t/1"):
        scores = [r["steps"][0]["score"] for r in rows if r["question_id"] == question]
        for row in (r for r in rows if r["question_id"] == question):
            own = row["steps"][0]
            others = list(scores)
            others.remove(own["score"])
            expected = (1 + sum(o >= own["score"] for o in others)) / 4
            assert own["p_value"] == pytest.approx(expected)


def test_question_calibration_with_more_calibration_steps_than_samples(tmp_path):
    cfg = config(calibration="question", calibration_file=None, calibration_m=6, samples=2,
                 rounds=2, alpha=0.25)
    draft, target = engines(lambda call: f"s ppl={(call.params.seed % 50) + 1}\n\n")
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=1)
    assert len(rows) == 2
    assert sum(c.kind == "generate" for c in draft.calls if "ppl" not in c.prompt) == 6


def test_marginal_calibration_warms_up_then_decides(tmp_path):
    cfg = config(calibration="marginal", calibration_file=None, warmup=5, samples=3,
                 rounds=2, alpha=0.25, grow_bank=True)
    draft, target = engines(lambda call: f"s ppl={(call.params.seed % 50) + 1}\n\n")
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=3)
    assert len(rows) == 9
    calibration = [s for r in rows for s in r["steps"] if s["calibration"]]
    assert len(calibration) == 5
    assert all(s["p_value"] is not None for r in rows for s in r["steps"]
               if s["author"] == "draft")


def test_a_transient_engine_failure_is_retried(tmp_path):
    cfg = config(max_retries=3, retry_backoff=0.001, samples=1, rounds=1)
    draft, target = engines(lambda call: "s ppl=10\n\n")
    draft.failures_left = 2
    outcome, rows = run(cfg, draft, target, tmp_path, questions=1)
    assert outcome.retries == 2 and outcome.errors == 0
    assert rows[0]["status"] == "ok"


def test_a_dead_engine_is_recorded_per_sample_and_the_run_goes_on(tmp_path):
    cfg = config(max_retries=1, retry_backoff=0.001, samples=2, rounds=1)

    def step(call):
        if "Question 0" in call.prompt:
            raise ConnectionError("engine died")
        return "s ppl=10\n\n"

    draft, target = engines(step)
    outcome, rows = run(cfg, draft, target, tmp_path, questions=2)
    assert outcome.errors == 2
    by_question = {(r["question_id"], r["status"]) for r in rows}
    assert by_question == {("t/0", "error"), ("t/1", "ok")}
    assert all("engine died" in r["error"] for r in rows if r["status"] == "error")
    # --retry-failed runs the failed samples again; the new rows supersede the error rows.
    draft2, target2 = engines(lambda call: "s ppl=10\n\n")
    outcome2, rows2 = run(cfg, draft2, target2, tmp_path, questions=2, retry_failed=True)
    assert outcome2.written == 2 and {r["status"] for r in rows2} == {"ok"}
    assert len(rows2) == 4


def test_cancelled_run_resumes_without_duplicates(tmp_path):
    cfg = config(samples=3, rounds=2, max_active_samples=2)
    draft, target = engines(lambda call: "s ppl=10\n\n", draft_delay=lambda call: 0.02)
    folder = RunFolder(tmp_path)
    folder.prepare({"config": cfg.to_dict()})
    written: list[str] = []

    async def interrupted(loop) -> None:
        task = asyncio.ensure_future(
            execute(cfg, problems(4), draft, target, folder, bank_scores=range(1, 100),
                    show_progress=False, clock=loop.time,
                    on_sample=lambda t: written.append(t.question_id))
        )
        while len(written) < 4:  # virtual time: polls without waiting for real
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(interrupted)
    partial = folder.rows()
    assert len(partial) == len(written) and 4 <= len(partial) < 12
    outcome, rows = run(cfg, *engines(lambda call: "s ppl=10\n\n"), tmp_path, questions=4)
    assert outcome.skipped == len(partial) and outcome.written == 12 - len(partial)
    keys = [(r["question_id"], r["sample_index"]) for r in rows]
    raw = [json.loads(line) for line in folder.samples_path.read_text().splitlines()]
    assert len(raw) == 12 and len(set(keys)) == 12


KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from pipeline_helpers import config, engines, problems
    from atts.runner.run_folder import RunFolder
    from atts.runner.runner import execute

    cfg = config(samples=4, rounds=3, max_active_samples=3)
    folder = RunFolder(sys.argv[1])
    folder.prepare({{"config": cfg.to_dict()}})
    # The first session stalls once 5 rows are written (the killer waits for them), so the
    # kill always lands midway, however fast or slow the machine; the resume does not stall.
    stall = sys.argv[2] == "stall"
    def delay(call):
        return 3600.0 if stall and len(folder.rows()) >= 5 else 0.001
    draft, target = engines(lambda call: "s ppl=10\\n\\n", draft_delay=delay)
    asyncio.run(execute(cfg, problems(6), draft, target, folder,
                        bank_scores=range(1, 100), show_progress=False))
    """
)


def test_kill_9_midway_loses_only_samples_in_flight_and_resume_completes(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC}
    process = subprocess.Popen([sys.executable, str(script), str(out), "stall"], env=env)
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if samples.exists() and samples.read_text().count("\n") >= 5:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = RunFolder(out).rows()
    assert 5 <= len(before) < 24, "the kill should land midway"
    subprocess.run([sys.executable, str(script), str(out), "go"], env=env, check=True,
                   timeout=120)
    after = RunFolder(out).rows()
    keys = [(r["question_id"], r["sample_index"]) for r in after]
    assert len(keys) == 24 and len(set(keys)) == 24
    assert {(r["question_id"], r["sample_index"]) for r in before} <= set(keys)
    assert len(samples.read_text().splitlines()) == 24  # none written twice


def test_a_different_configuration_on_an_existing_run_folder_is_refused(tmp_path):
    cfg = config()
    folder = RunFolder(tmp_path)
    folder.prepare({"config": cfg.to_dict()})
    folder.append(finished_row("q", 0))
    changed = cfg.replace(alpha=0.2)
    with pytest.raises(RunFolderError, match=r"alpha: 0.1 -> 0.2.*--overwrite"):
        folder.prepare({"config": changed.to_dict()})
    # Operational keys may change between sessions; --overwrite starts afresh.
    folder.prepare({"config": cfg.replace(max_active_samples=3).to_dict()})
    folder.prepare({"config": changed.to_dict()}, overwrite=True)
    assert folder.read_manifest()["config"]["alpha"] == 0.2


def test_a_folder_holding_only_a_manifest_takes_a_corrected_configuration(tmp_path):
    """A session refused before its first row (the tokenizer check, a model that would not
    load) leaves only its manifest; the corrected command is not refused by it (issue 32)."""
    folder = RunFolder(tmp_path)
    folder.prepare({"config": config(draft="wrong.gguf").to_dict()})
    folder.prepare({"config": config(draft="right.gguf").to_dict()})
    assert folder.read_manifest()["config"]["draft"] == "right.gguf"
    folder.append(finished_row("q", 0))
    with pytest.raises(RunFolderError, match="draft"):
        folder.prepare({"config": config(draft="other.gguf").to_dict()})


def test_force_answer_auto_resumes_a_folder_written_with_the_author_it_means(tmp_path):
    """Folders written before ``auto`` became the default (force_answer: target) resume under
    it where auto means the target, and are refused where it does not (draft_only)."""
    for strategy, same in (("atts", True), ("target_only", True), ("draft_only", False)):
        folder = RunFolder(tmp_path / strategy)
        folder.prepare({"config": config(strategy=strategy, force_answer="target").to_dict()})
        folder.append(finished_row("q", 0))
        resumed = {"config": config(strategy=strategy, force_answer="auto").to_dict()}
        if same:
            folder.prepare(resumed)
        else:
            with pytest.raises(RunFolderError, match="force_answer: 'target' -> 'draft'"):
                folder.prepare(resumed)


def test_a_torn_last_line_is_cut_when_the_folder_is_reopened(tmp_path):
    cfg = config()
    folder = RunFolder(tmp_path)
    folder.prepare({"config": cfg.to_dict()})
    folder.append(finished_row("q", 0))
    with folder.samples_path.open("a") as file:
        file.write('{"question_id": "q", "sample_')
    assert len(folder.rows()) == 1
    folder.prepare({"config": cfg.to_dict()})
    folder.append(finished_row("q", 1))
    assert [r["sample_index"] for r in folder.rows()] == [0, 1]


def test_sync_admits_whole_questions_without_deadlock(tmp_path):
    """More questions than slots: each question's group takes all its slots at once."""
    cfg = config(strategy="sync", samples=2, rounds=2, max_active_samples=2)
    draft, target = engines(lambda call: "s ppl=10\n\n", draft_delay=lambda call: 0.005)

    async def bounded():
        folder = RunFolder(tmp_path)
        folder.prepare({"config": cfg.to_dict()})
        await asyncio.wait_for(
            execute(cfg, problems(4), draft, target, folder, bank_scores=range(1, 100),
                    show_progress=False),
            timeout=30,
        )
        return folder.rows()

    rows = asyncio.run(bounded())
    assert len(rows) == 8


def test_a_row_that_cannot_be_written_whole_leaves_no_torn_line(tmp_path, monkeypatch):
    """A full disk mid-row (ENOSPC after half the bytes) used to leave a torn last line."""
    import errno

    from atts.runner.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    folder.prepare({"config": {}})
    folder.append(finished_row("q", 0))
    before = folder.samples_path.read_bytes()
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        folder.append(finished_row("q", 1, text="x" * 99))
    monkeypatch.setattr(os, "write", real_write)
    assert len(calls) == 2  # half went to disk before the failure
    assert folder.samples_path.read_bytes() == before
    folder.append(finished_row("q", 1))
    assert [r["sample_index"] for r in folder.rows()] == [0, 1]


@pytest.mark.parametrize("calibration", ["adaptive", "question"])
def test_an_interrupted_run_stops_its_pre_drafting_quietly(tmp_path, calibration):
    """SIGINT during the warm-up printed three InvalidStateError tracebacks (issue 17): the
    cancelled samples took their pre-drafted futures down, the warm-up kept drafting and then
    set results on them, and its failure went unread.  Now cancelling the run cancels the
    pre-drafting too, and nothing is left to report."""
    cfg = config(samples=2, rounds=2, calibration=calibration, calibration_file=None,
                 alpha=0.25, calibration_m=4, warmup=12, max_active_samples=4)
    draft, target = engines(lambda call: "s ppl=10\n\n", draft_delay=lambda call: 0.05)
    folder = RunFolder(tmp_path)
    folder.prepare({"config": cfg.to_dict()})
    reports: list[dict] = []

    async def interrupted(loop) -> int:
        loop.set_exception_handler(lambda _, ctx: reports.append(ctx))
        task = asyncio.ensure_future(
            execute(cfg, problems(3), draft, target, folder, show_progress=False,
                    clock=loop.time))
        while not draft.calls:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        drafted = len(draft.calls)
        await asyncio.sleep(0.3)  # a pre-draft still running would call the engine again
        assert len(draft.calls) == drafted
        return drafted

    run_virtual(interrupted)
    import gc

    gc.collect()
    assert reports == []
    assert folder.rows() == []
