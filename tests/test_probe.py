"""`atts probe` on scripted engines with known costs, on a virtual clock: the measured costs
per token and the bounds are the ones the scripted delays imply, computed here by hand."""

from __future__ import annotations

import json

import pytest

from atts.engines.fake import FakeEngine
from atts.perf.probe import cascade_bound, probe
from atts.perf.roofline import TokenCosts
from atts.perf.virtual_clock import run_virtual

BATCH, DECODE, STEP = 4, 16, 32


def engines() -> tuple[FakeEngine, FakeEngine]:
    """Every call of a round starts at once, so a round lasts one call's delay: a draft call
    (16 tokens) 0.4 s, a target call 1.6 s, a target scoring (32 tokens) 0.8 s."""
    def text(call) -> str:
        return "x" * 100  # cut at max_tokens: every call decodes exactly what it is asked

    draft = FakeEngine("draft", step=text, delay=lambda call: 0.4)
    target = FakeEngine("target", step=text,
                        delay=lambda call: 0.8 if call.kind == "score" else 1.6)
    return draft, target


def measured():
    draft, target = engines()
    return run_virtual(lambda loop: probe(draft, target, batch=BATCH, context=40,
                                          decode_tokens=DECODE, step_tokens=STEP, repeats=3))


def test_the_costs_are_the_scripted_ones_per_token():
    result = measured()
    assert result.costs.draft_decode == pytest.approx(0.4 / (BATCH * DECODE))
    assert result.costs.target_decode == pytest.approx(1.6 / (BATCH * DECODE))
    assert result.costs.target_score == pytest.approx(0.8 / (BATCH * STEP))
    assert all(len(v) == 3 for v in result.rounds.values())


def test_the_bounds_follow_from_the_costs():
    result = measured()
    dd, td, ts = 0.4 / 64, 1.6 / 64, 0.8 / 128
    # regenerate: 1 - r + r kept tokens per drafted one; serial cost dd + ts + r td.
    (alpha, bound), = result.atts_bounds([0.25], mode="regenerate", overlap=False)
    assert alpha == 0.25
    assert bound == pytest.approx(td * 1.0 / (dd + ts + 0.25 * td))
    (_, overlapped), = result.atts_bounds([0.25], mode="regenerate", overlap=True)
    assert overlapped == pytest.approx(td / max(dd, ts + 0.25 * td))
    (_, cascade), = result.cascade_bounds([0.5])
    assert cascade == pytest.approx(1 / (dd / td + 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cascade_bound(TokenCosts(dd, td, ts), 1.5)
    data = result.to_json([0.25], [0.5], mode="regenerate", overlap=False)
    assert json.loads(json.dumps(data))["cascade_bound"]["0.5"] == pytest.approx(cascade)


def test_the_probe_command_refuses_a_context_that_does_not_fit(capsys):
    from atts.cli.main import main

    assert main(["probe", "--engine", "fake", "--context", "5000", "--n-ctx", "4096"]) == 2
    assert "does not fit n_ctx 4096" in capsys.readouterr().err


def test_the_probe_runs_on_the_tiny_model_and_prints_numbers(tiny_model, capsys):
    from atts.cli.main import main

    assert main(["probe", "--draft", str(tiny_model), "--target", str(tiny_model),
                 "--n-ctx", "512", "--max-active-samples", "2", "--repeats", "1",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    costs = data["seconds_per_token"]
    assert all(isinstance(v, float) and v > 0 for v in costs.values())
    assert set(data["atts_bound"]) == {"0.05", "0.1", "0.25", "0.5"}
    assert all(b > 0 for b in data["atts_bound"].values())
