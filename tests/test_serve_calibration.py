"""The server's shared bank and its calibrator: the warm-up policy, the conformal p-value
against the shared bank, which requests grow it, and persistence across a restart."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from atts.conformal import (
    BankMismatchError,
    Decision,
    DecisionKey,
    Thresholds,
    load_bank,
    min_bank_size,
)
from atts.serve.calibration import SERVE_PROMPT, RequestCalibrator, ServeBank, bank_fingerprint
from atts.serve.settings import ServeSettings
from test_serve_helpers import USER, config, engines, running, service

FINGERPRINT = {"draft": "d", "target": "t"}


def decide(calibrator: RequestCalibrator, score: float):
    """A step's (p, decision) as the atts strategy takes it: wait until ready, then decide."""
    asyncio.run(calibrator.ready("q"))
    verdict = calibrator.decider.decide(DecisionKey("q"), score)
    return verdict.p_value, verdict.decision


def test_warm_up_sends_steps_to_the_target_without_a_p_value_until_alpha_can_reject():
    bank = ServeBank(FINGERPRINT)
    calibrator = RequestCalibrator(bank, Thresholds(0.25), grows=True)
    assert min_bank_size(0.25) == 3
    for expected_n in range(3):
        assert len(bank) == expected_n
        assert decide(calibrator, 1.0 + expected_n) == (None, Decision.CONTINUE)
    assert len(bank) == 3  # each warm-up score joined the bank after its decision
    assert calibrator.warmup_steps == 3
    # n = 3 = min_bank_size: p = (1 + #{s_i >= s}) / 4; only a score above all three rejects.
    assert decide(calibrator, 10.0) == (0.25, Decision.CONTINUE)
    assert decide(calibrator, 2.5) == (0.6, Decision.ACCEPT)  # n = 4 now: 10.0 joined
    assert calibrator.warmup_steps == 3


def test_the_p_value_is_the_conformal_one_and_alpha_discard_regenerates():
    bank = ServeBank(FINGERPRINT, scores=range(1, 100))
    calibrator = RequestCalibrator(bank, Thresholds(0.1, 0.03), grows=False)  # a fixed bank
    for score, p, decision in [(50, 0.51, Decision.ACCEPT), (95, 0.06, Decision.CONTINUE),
                               (99, 0.02, Decision.REGENERATE)]:
        got_p, got = decide(calibrator, score)
        assert got_p == pytest.approx(p) and got is decision


def test_a_request_off_the_fingerprinted_step_settings_does_not_grow_the_bank():
    bank = ServeBank(FINGERPRINT, scores=[1.0, 2.0, 3.0])
    decide(RequestCalibrator(bank, Thresholds(0.25), grows=False), 5.0)
    assert len(bank) == 3
    decide(RequestCalibrator(bank, Thresholds(0.25), grows=True), 5.0)
    assert len(bank) == 4


def test_requests_grow_the_bank_only_under_the_server_step_settings():
    svc = service(bank=[float(x) for x in range(1, 100)])
    with running(svc) as server:
        url = server.url + "/v1/chat/completions"
        httpx.post(url, json={"model": "atts", "messages": USER})
        assert len(svc.bank) == 101  # two judged draft steps
        for extra in ({"atts": {"draft_tokens": 32}}, {"temperature": 0.1}):
            body = httpx.post(url, json={"model": "atts", "messages": USER, **extra}).json()
            assert body["atts"]["bank"]["grows"] is False
        assert len(svc.bank) == 101
        body = httpx.post(url, json={"model": "atts", "messages": USER,
                                     "atts": {"alpha": 0.3, "rounds": 2}}).json()
        assert body["atts"]["bank"]["grows"] is True  # alpha and rounds do not change scores
    assert len(svc.bank) == 103


def test_a_cold_server_warms_up_then_decides_by_p_value():
    # alpha = 0.25 needs 3 scores; one request with n = 2 and two steps each makes 4.
    svc = service(config(alpha=0.25), bank=None)
    with running(svc) as server:
        body = httpx.post(server.url + "/v1/chat/completions", json={
            "model": "atts", "messages": USER, "n": 1, "seed": 3,
            "atts": {"trace": True}}).json()
        first = body["atts"]["samples"][0]["steps"][0]
        assert (first["author"], first["decision"], first["p_value"]) == (
            "draft", "continue", None)
        assert body["atts"]["samples"][0]["steps"][1]["author"] == "target"
        assert body["atts"]["bank"]["warmup_steps"] >= 1
        for _ in range(3):
            httpx.post(server.url + "/v1/chat/completions", json={"model": "atts",
                                                                  "messages": USER})
        assert len(svc.bank) >= 3
        body = httpx.post(server.url + "/v1/chat/completions", json={
            "model": "atts", "messages": USER, "atts": {"trace": True}}).json()
        draft = body["atts"]["samples"][0]["steps"][0]
        assert draft["p_value"] is not None and body["atts"]["bank"]["warmup_steps"] == 0
        metrics = httpx.get(server.url + "/metrics").text
    assert 'atts_decisions_total{decision="warmup"}' in metrics


def test_the_bank_is_saved_every_k_scores_and_at_shutdown(tmp_path):
    path = tmp_path / "bank.json"
    bank = ServeBank(FINGERPRINT, path=path, save_every=3)
    for score in (1.0, 2.0):
        bank.add(score)
    assert not path.exists()
    bank.add(3.0)  # no event loop here: saved at once
    assert load_bank(path, FINGERPRINT).tolist() == [1.0, 2.0, 3.0]
    bank.add(4.0)
    asyncio.run(bank.aclose())
    assert load_bank(path, FINGERPRINT).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert [p.name for p in tmp_path.iterdir()] == ["bank.json"]  # no temporary files left


def test_the_bank_survives_a_restart_of_the_server(tmp_path):
    settings = ServeSettings(bank_path=str(tmp_path / "bank.json"), bank_save_every=1000)
    first = service(config(alpha=0.25), settings, bank=None)
    assert len(first.bank) == 0
    with running(first) as server:
        for _ in range(3):
            r = httpx.post(server.url + "/v1/chat/completions",
                           json={"model": "atts", "messages": USER, "n": 2})
            assert r.status_code == 200
        grown = len(first.bank)
    assert grown >= 6
    saved = json.loads((tmp_path / "bank.json").read_text())
    assert saved["count"] == grown
    assert saved["fingerprint"]["prompt_sha256"] == SERVE_PROMPT
    second = service(config(alpha=0.25), settings, bank=None)
    assert len(second.bank) == grown
    with running(second) as server:
        assert httpx.get(server.url + "/health").json()["bank_size"] == grown
        body = httpx.post(server.url + "/v1/chat/completions", json={
            "model": "atts", "messages": USER, "atts": {"trace": True}}).json()
    assert body["atts"]["bank"]["warmup_steps"] == 0  # warm from the first request on


def test_a_bank_from_other_models_or_step_settings_is_refused_unless_forced(tmp_path):
    settings = ServeSettings(bank_path=str(tmp_path / "bank.json"))
    bank = ServeBank(bank_fingerprint(config(), *(e.info for e in engines())),
                     scores=[1.0, 2.0], path=settings.bank_path)
    bank.save()
    with pytest.raises(BankMismatchError, match="draft_tokens"):
        service(config(draft_tokens=99), settings, bank=None)
    with pytest.raises(BankMismatchError, match="draft"):
        service(settings=settings, pair=engines(draft_name="other"), bank=None)
    forced = ServeSettings(bank_path=settings.bank_path, force_bank=True)
    with pytest.warns(UserWarning, match="mismatched"):
        svc = service(config(draft_tokens=99), forced, bank=None)
    assert len(svc.bank) == 2

