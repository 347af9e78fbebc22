"""`atts calibrate`: a calibration bank from first steps drafted on a pool disjoint from the
test sets, scored by the target, saved with its fingerprint (``atts.conformal.persistence``).

The first steps fan out through the runner's admission (``runner.admission``: at most
``max_active_samples`` in flight, a task per admitted step), the same as a run's samples.  The
output path is checked before any model loads: a bank that cannot be written is refused before
its scores are computed, not after.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from atts.config import RunConfig
from atts.conformal import save_bank
from atts.conformal.persistence import check_bank_path
from atts.data import Problem, load_dataset
from atts.engines.base import Engine
from atts.pipeline.engine_pair import guarded_pair
from atts.pipeline.sample import SampleEnv, SampleSpec, SampleState
from atts.pipeline.strategies import draft_and_score
from atts.runner.admission import Admission
from atts.runner.build import close_engines, open_engines
from atts.runner.manifest import calibration_fingerprint
from atts.seeds import derive_seed

__all__ = ["calibrate"]


def calibrate(
    config: RunConfig, pool: str, out: str | Path, *, limit: int, offset: int = 0,
    samples: int = 1, show_progress: bool = True,
) -> tuple[Path, int]:
    """Draft first steps on a calibration pool disjoint from the test sets, score them with the
    target, and save the bank with its fingerprint."""
    check_bank_path(out)
    problems = load_dataset(pool, limit=limit, offset=offset)
    if not problems:  # before the engines load: nothing to draft
        raise ValueError(f"{pool} gives no problems to calibrate on (an empty file, or "
                         f"--pool-offset {offset} past its end); nothing was written to {out}")

    async def job() -> tuple[list[float], dict[str, str]]:
        draft, target = await open_engines(config)
        try:
            scores = await _calibration_scores(config, problems, draft, target, samples,
                                               show_progress)
            return scores, calibration_fingerprint(config, draft.info, target.info)
        finally:
            await close_engines(draft, target)

    scores, fingerprint = asyncio.run(job())
    if not scores:  # every first step was empty: an empty bank could never reject anything
        raise ValueError(f"no first step of the {len(problems)} pool problems could be scored; "
                         f"nothing was written to {out}")
    return save_bank(out, scores, fingerprint), len(scores)


async def _calibration_scores(
    config: RunConfig, problems: Sequence[Problem], draft: Engine, target: Engine,
    samples: int, show_progress: bool,
) -> list[float]:
    from tqdm import tqdm

    env = SampleEnv.build(config, *guarded_pair(config, draft, target))  # no bank: no decision
    bar = tqdm(total=len(problems) * samples, unit="step", desc="calibrate",
               disable=not show_progress, file=sys.stderr)
    scores: list[float] = []

    async def one(spec: SampleSpec) -> None:
        state = SampleState(spec, list(env.prompt_ids(spec.question)))
        drafted = await draft_and_score(state, env, 0)
        if drafted.value is not None:
            scores.append(drafted.value)
        bar.update(1)

    admission: Admission[SampleSpec] = Admission(one, max_active=config.max_active_samples)
    admission.push([SampleSpec.of(p, i, derive_seed(config.seed, "calibrate", p.id, i))
                    for p in problems for i in range(samples)])
    try:
        await admission.run()
    finally:
        bar.close()
    return scores
