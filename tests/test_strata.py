"""Round strata (Mondrian conformal) against drifting step perplexities.

Scripted drafts whose perplexity drifts with depth: round 0 ~ logN(1.0, 0.3), round 1 higher
(logN(1.6, 0.3)), later rounds lower (logN(0.6, 0.3)).  A bank of first steps then rejects
almost every round-1 step and no later one; one online bank per round brings every round back
near alpha.  With 200 steps per round the binomial sd is about 0.03; the bounds below also
allow for the first `warmup` decisions of a round, judged against round 0 while its stratum
fills (round 1: up to 10/200 extra rejections).
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from atts.config import ConfigError, RunConfig
from pipeline_helpers import config, engines, run

MEANS = {0: 1.0, 1: 1.6}


def drifting(call):
    round_index = call.prompt.count("ppl=")
    mean = MEANS.get(round_index, 0.6)
    ppl = random.Random(call.params.seed).lognormvariate(mean, 0.3)
    return f"s ppl={ppl:.6f}\n\n"


def rates(rows) -> dict[int, float]:
    judged: dict[int, list[bool]] = defaultdict(list)
    for row in rows:
        for step in row["steps"]:
            if step["author"] == "draft" and step["decision"] is not None:
                judged[step["round"]].append(step["decision"] != "accept")
    return {r: sum(v) / len(v) for r, v in sorted(judged.items())}


def drift_run(tmp_path, strata: str) -> dict[int, float]:
    cfg = config(calibration="marginal", calibration_file=None, warmup=10, alpha=0.2,
                 samples=4, rounds=4, strata=strata, max_active_samples=8)
    draft, target = engines(drifting)
    _, rows = run(cfg, draft, target, tmp_path / strata, bank=(), questions=50)
    assert len(rows) == 200
    return rates(rows)


def test_a_first_step_bank_misjudges_later_rounds(tmp_path):
    observed = drift_run(tmp_path, "none")
    assert observed[1] > 0.7
    assert observed[2] < 0.05 and observed[3] < 0.05


def test_round_strata_bring_every_round_near_alpha(tmp_path):
    observed = drift_run(tmp_path, "round")
    for round_index in (1, 2, 3):
        assert 0.1 <= observed[round_index] <= 0.32, observed


def test_round_strata_need_the_marginal_online_bank():
    with pytest.raises(ConfigError, match="calibration=marginal"):
        RunConfig(strata="round", calibration="question")
    with pytest.raises(ConfigError, match="grow_bank"):
        RunConfig(strata="round", calibration="marginal", grow_bank=True)


def test_auto_strata_mean_round_strata_under_adaptive_calibration_only():
    from atts.config import RunConfig

    assert RunConfig(calibration="adaptive").bank_strata == "round"
    assert RunConfig(calibration="adaptive", strata="none").bank_strata == "none"
    assert RunConfig(calibration="marginal").bank_strata == "none"
    assert RunConfig(calibration="question").bank_strata == "none"
    assert RunConfig(calibration="marginal", strata="round").bank_strata == "round"
