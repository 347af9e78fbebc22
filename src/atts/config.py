"""The one configuration object of a run, and how it is built from flags and YAML recipes.

Configuration flows one way: defaults < YAML recipe < ``--set key=value`` overrides < explicit
flags, into a frozen ``RunConfig`` that is validated once, recorded in ``manifest.json``, and
passed explicitly to everything that needs it.  A recipe holds only overrides of the defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from atts.conformal import min_bank_size
from atts.conformal.scores import DEFAULT_TAIL_K, SCORES, score_rule
from atts.engines.compute import ComputePlan, machine_cores, plan_compute
from atts.errors import AttsError
from atts.grading.agreement import QUESTION_SCORES

STRATEGIES = ("atts", "sync", "target_only", "draft_only", "judge", "cascade", "atts_cascade")
CALIBRATIONS = ("question", "marginal", "file", "adaptive")
STRATA = ("auto", "none", "round", "question_round")
PVALUES = ("deterministic", "smoothed")
ADAPTIVE_STRATA = ("round", "question_round", "none")
ENGINES = ("llama_cpp", "transformers", "fake", "vllm", "sglang", "openai")
REMOTE_ENGINES = ("vllm", "sglang", "openai")
FORCE_AUTHORS = ("auto", "target", "draft", "none")
ADMISSIONS = ("sample", "question")
ESCALATE_LEVELS = ("fixed", "adaptive")
MAX_WARMUP = 4096  # a larger warm-up would draft for hours before anything is decided
ESCALATE_VOTES = ("target", "all")


# The keys whose values come from a fixed list: validation and the CLI's help read this.
CHOICES: dict[str, tuple[str, ...]] = {
    "strategy": STRATEGIES, "calibration": CALIBRATIONS, "strata": STRATA, "pvalue": PVALUES,
    "adaptive_strata": ADAPTIVE_STRATA, "engine": ENGINES, "force_answer": FORCE_AUTHORS,
    "score": SCORES, "admission": ADMISSIONS, "escalate_score": tuple(QUESTION_SCORES),
    "escalate_pvalue": PVALUES, "escalate_levels": ESCALATE_LEVELS,
    "escalate_vote": ESCALATE_VOTES,
}


class ConfigError(AttsError, ValueError):
    """A configuration value is invalid; the message names the key and the fix.  ``problems``:
    (key, line) for each problem the message joins (empty when it is not about keys)."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class RunConfig:
    # What to solve.
    dataset: str = "gsm8k"
    limit: int | None = 5
    offset: int = 0
    ids: tuple[str, ...] = ()
    samples: int = 4  # N: parallel samples per question

    # How to solve it.
    strategy: str = "atts"
    alpha: float = 0.5  # reject iff p <= alpha; why 0.5, not 0.25: BENCHMARKS.md 0.4-0.5
    # Regenerate instead of continue iff p <= alpha_discard; None (the default): = alpha, every
    # rejected step regenerated (BENCHMARKS.md 0.2); 0: never (the paper's); ``discard_level``.
    alpha_discard: float | None = None
    sync_budget: int = 1  # sync: the B worst-scored steps of each round go to the target
    # The nonconformity score of a draft step (atts.conformal.scores): ppl (the paper's) |
    # max_surprisal | tail_mean (mean of the score_k largest token surprisals; the default,
    # BENCHMARKS.md 0.3) | llr (draft - target).
    score: str = "tail_mean"
    score_k: int = DEFAULT_TAIL_K
    # judge (SpecReason): the target rates each draft step 0-9; below this it regenerates it.
    judge_threshold: int = 7

    # Calibration (docs/METHOD.md section 3).
    # adaptive (the default, with round strata): held alpha in every round on replays of
    # recorded runs (BENCHMARKS.md 6.5) and kept target-only's accuracy (section 0.2).
    calibration: str = "adaptive"  # adaptive | question | marginal | file
    calibration_m: int = 4  # question: first steps drafted and scored per question
    # marginal / adaptive: scores pooled before the first decision, raised to the least a
    # decision at alpha needs (n + 1 >= 1/alpha, plus one left out) when smaller
    # (``warmup_size``), so `--alpha 0.1` works without a matching `--warmup`.
    warmup: int = 8
    calibration_file: str | None = None
    grow_bank: bool = False  # add every scored draft step to the bank as the run goes on
    # Mondrian strata (marginal or adaptive): one online bank per round index, fed by that
    # round's judged steps; a round whose bank is below `warmup` is judged against round 0's.
    # question_round: one per (question, round) too, used once it can reject (pipeline/judge).
    # auto: round with calibration=adaptive (the pair that held alpha in every round on
    # replays, BENCHMARKS.md 6.5), none otherwise; ``bank_strata`` is the resolved value.
    strata: str = "auto"
    # smoothed: the randomised p-value, exactly uniform under ties, seeded per step.
    pvalue: str = "deterministic"
    # adaptive (Gibbs and Candes 2021): the level moves by gamma (alpha - err) per decision,
    # one tracker per round bucket 0/1/2/3+ (round), per question too, or one (none).
    adaptive_gamma: float = 0.05  # chosen by replay (BENCHMARKS.md, Rate control)
    adaptive_strata: str = "round"

    # Question-level escalation (cascade, atts_cascade; pipeline/escalation.py): once a
    # question's N first samples are in, the disagreement of their answers gets a conformal
    # p-value against earlier questions'; p <= escalate_alpha hands the question to the
    # target, which writes N samples of its own: P(escalate) <= escalate_alpha.
    escalate_alpha: float = 0.7
    escalate_score: str = "disagreement"  # or entropy (grading/agreement.py)
    escalate_pvalue: str = "smoothed"  # N answers tie often: the exact p-value under ties
    escalate_levels: str = "fixed"  # adaptive: one ACI tracker, for drift across questions
    escalate_vote: str = "target"  # maj@N of an escalated question: the target's or all
    # The first questions wait for each other until this many are in (raised to what
    # escalate_alpha needs), then are decided leave-one-out: no forced escalations.
    escalate_warmup: int = 4

    # Models and engines.
    engine: str = "llama_cpp"
    draft: str = "qwen2.5-coder-0.5b"
    target: str = "qwen2.5-coder-1.5b"
    n_ctx: int = 4096
    # Remote engines (docs/REMOTE.md): comma-separated endpoints per role, the tokenizer source
    # when the model name is only the served name, and a per-call timeout in seconds.
    draft_url: str = ""
    target_url: str = ""
    draft_tokenizer: str | None = None
    target_tokenizer: str | None = None
    remote_timeout: float = 120.0
    # The compute budget (engines/compute.py): cores the in-process engines keep busy, shared by
    # both models (each batched decode call takes the free ones); None: every core of the
    # machine.  Every strategy spends the same budget, so strategies compare at equal hardware.
    cores: int | None = None
    # Explicit overrides: that engine runs every call on this many threads, outside the pool.
    draft_threads: int | None = None
    target_threads: int | None = None
    # Requests in flight per engine; None: max_active_samples (in-process) or 2 (remote).
    draft_concurrency: int | None = None
    target_concurrency: int | None = None
    max_active_samples: int = 8  # samples in flight at once (bounds KV memory and lost work)
    # sample: each sample takes a free slot on its own (no barrier); question: a question's
    # samples take their slots together, as in the authors' code (with max_active_samples =
    # N, one question at a time).  The sync strategy always admits by question.
    admission: str = "sample"

    # Steps and rounds (docs/METHOD.md section 2).
    draft_tokens: int = 160  # K_d
    target_tokens: int = 160  # K_t
    rounds: int = 12  # T
    min_rounds: int = 0  # answer earlier than this -> append "Wait" and go on
    # Who completes a forced final answer when T runs out; auto: the draft for draft_only (a
    # draft-only baseline must not borrow the target), the target otherwise.
    force_answer: str = "auto"
    temperature: float = 0.8
    top_p: float = 0.95
    step_stop: str = "\n\n"

    # Robustness and reproducibility.
    seed: int = 0
    max_retries: int = 3
    retry_backoff: float = 0.5  # seconds; doubles per retry, with jitter

    def __post_init__(self) -> None:
        # Every problem at once, one line: a user fixes them in one go, not one per run.
        check = _Problems()
        for key, choices in CHOICES.items():  # every key whose values come from a fixed list
            check(getattr(self, key) in choices, key, f"choose one of {', '.join(choices)}")
        check(self.score_k >= 1, "score_k", f"must be >= 1, got {self.score_k}")
        check(0 <= self.judge_threshold <= 9, "judge_threshold",
               f"must lie in [0, 9] (the rating is one digit), got {self.judge_threshold}")
        check(
            not (self.score in SCORES and score_rule(self.score).needs_draft_logprobs
                 and self.engine in REMOTE_ENGINES),
            "score",
            f"score={self.score} needs the draft's log-probabilities from its generation, which "
            f"the remote engines do not return yet; use ppl, max_surprisal or tail_mean",
        )
        check(0 < self.adaptive_gamma < 1, "adaptive_gamma", "must lie in (0, 1)")
        check(0 < self.escalate_alpha < 1, "escalate_alpha",
              f"must lie in (0, 1) (the share of questions the target may take), got "
              f"{self.escalate_alpha}")
        if self.calibration == "adaptive":
            check(
                not self.grow_bank,
                "grow_bank",
                "calibration=adaptive already grows its bank (decide, then add); leave it off",
            )
        if self.strata not in ("none", "auto"):
            check(
                self.calibration in ("marginal", "adaptive"),
                "strata",
                f"{self.strata} strata need calibration=marginal or adaptive (pooled, online "
                "banks per stratum)",
            )
            check(
                not self.grow_bank,
                "grow_bank",
                "round strata already grow their banks; leave grow_bank off",
            )
        check(0 < self.alpha < 1, "alpha", f"must lie in (0, 1), got {self.alpha}")
        check(
            self.alpha_discard is None or 0 <= self.alpha_discard <= self.alpha,
            "alpha_discard",
            f"must satisfy 0 <= alpha_discard <= alpha ({self.alpha}), or be null (= alpha), "
            f"got {self.alpha_discard}",
        )
        for key in (
            "samples", "rounds", "draft_tokens", "target_tokens", "n_ctx", "max_active_samples",
        ):
            value = getattr(self, key)
            check(value >= 1, key, f"must be >= 1, got {value}")
        machine = machine_cores()
        for key in ("cores", "draft_threads", "target_threads"):
            value = getattr(self, key)
            check(
                value is None or 1 <= value <= machine,
                key,
                f"must lie in [1, {machine}] (this machine has {machine} cores) or be unset "
                f"(every core), got {value}",
            )
        for key in ("draft_concurrency", "target_concurrency"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be >= 1 or unset, got {value}")
        check(self.limit is None or self.limit >= 1, "limit", "must be >= 1 (or unset)")
        check(self.offset >= 0, "offset", f"must be >= 0, got {self.offset}")
        for key in ("warmup", "calibration_m", "escalate_warmup"):  # drafted before deciding
            value = getattr(self, key)
            check(1 <= value <= MAX_WARMUP, key, f"must lie in [1, {MAX_WARMUP}] (what is "
                  f"drafted before the first decision; the bank grows online after), got "
                  f"{value}")
        check(0 <= self.min_rounds <= self.rounds, "min_rounds", "must lie in [0, rounds]")
        check(0 <= self.sync_budget <= self.samples, "sync_budget", "must lie in [0, samples]")
        check(self.temperature >= 0, "temperature", "must be >= 0")
        check(0 < self.top_p <= 1, "top_p", "must lie in (0, 1]")
        check(self.max_retries >= 0, "max_retries", "must be >= 0")
        check(bool(self.step_stop), "step_stop", "must be a non-empty string such as '\\n\\n'")
        if self.engine in REMOTE_ENGINES:
            check(
                bool(self.draft_url and self.target_url),
                "draft_url",
                f"engine={self.engine} needs --draft-url and --target-url (the servers' base "
                "URLs, e.g. http://127.0.0.1:8001; see docs/REMOTE.md)",
            )
        check(self.remote_timeout > 0, "remote_timeout", "must be > 0 seconds")
        if self.calibration == "file":
            check(
                self.calibration_file is not None,
                "calibration_file",
                "calibration=file needs --calibration-file PATH (made by `atts calibrate`)",
            )
        valid_alpha = 0 < self.alpha < 1
        if self.strategy == "atts" and self.calibration == "question" and valid_alpha:
            needed = min_bank_size(self.alpha) + 1  # leave-one-out: n = m - 1 scores remain
            check(
                self.calibration_m >= needed,
                "calibration_m",
                f"alpha={self.alpha} needs at least {needed} calibration steps per question "
                f"(n + 1 >= 1/alpha with one left out); raise calibration_m or alpha",
            )
        check.raise_if_any()

    def compute_plan(self) -> ComputePlan:
        """How the in-process engines spend the ``cores`` budget (engines/compute.py)."""
        return plan_compute(self.cores, self.draft_threads, self.target_threads)

    def concurrency(self, role: str) -> int:
        """Requests in flight for the ``role`` engine: the setting, or by default one per
        active sample for an in-process engine (it decodes them all in one batch) and 2 for a
        remote one."""
        explicit = self.draft_concurrency if role == "draft" else self.target_concurrency
        if explicit is not None:
            return explicit
        return 2 if self.engine in REMOTE_ENGINES else self.max_active_samples

    @property
    def warmup_size(self) -> int:
        """The warm-up a run uses: ``warmup``, or the least alpha needs if that is larger."""
        return max(self.warmup, min_bank_size(self.alpha) + 1)

    @property
    def escalate_warmup_size(self) -> int:
        """Questions whose scores fill the escalation bank before the first decision: at least
        what escalate_alpha needs with the question itself left out."""
        return max(self.escalate_warmup, min_bank_size(self.escalate_alpha) + 1)

    @property
    def discard_level(self) -> float:
        """``alpha_discard`` with null resolved to alpha (pure regeneration)."""
        return self.alpha if self.alpha_discard is None else self.alpha_discard

    @property
    def bank_strata(self) -> str:
        """``strata`` with ``auto`` resolved: round under adaptive calibration, else none."""
        if self.strata == "auto":
            return "round" if self.calibration == "adaptive" else "none"
        return self.strata

    @property
    def draft_logprobs(self) -> bool:
        """Whether draft steps must carry the draft's own log-probabilities (the llr score)."""
        return score_rule(self.score).needs_draft_logprobs

    @property
    def escalates(self) -> bool:
        """Whether questions whose samples disagree are handed to the target."""
        return self.strategy in ("cascade", "atts_cascade")

    @property
    def forced_answer_author(self) -> str | None:
        """Who completes a forced answer ("target" or "draft"), None when none is forced."""
        author = resolve_force_answer(self.force_answer, self.strategy)
        return None if author == "none" else author

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            guesses = [f"{key} -> did you mean {close[0]}?" for key in unknown
                       if (close := difflib.get_close_matches(key, known, n=1, cutoff=0.6))]
            hint = f" ({'; '.join(guesses)})" if guesses else ""
            raise ConfigError(
                f"unknown configuration key(s): {', '.join(unknown)}{hint}; "
                f"valid keys: {', '.join(sorted(known))}"
            )
        coerced, problems = {}, []
        for key, value in values.items():
            try:
                coerced[key] = _coerce(key, known[key].type, value)
            except ConfigError as err:
                problems.append((key, str(err)))
        if problems:  # unreadable values first: the checks below need every value typed
            raise ConfigError("; ".join(line for _, line in problems), problems=tuple(problems))
        return cls(**coerced)

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_mapping({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ids"] = list(self.ids)
        return data


def resolve_force_answer(force_answer: str, strategy: str) -> str:
    """``force_answer`` with ``auto`` resolved: the draft where the draft writes alone
    (draft_only, and the cascade's first samples), else the target."""
    if force_answer == "auto":
        return "draft" if strategy in ("draft_only", "cascade") else "target"
    return force_answer


class _Problems:
    """Collects every failed check of one configuration, raised together as one line."""

    def __init__(self) -> None:
        self._found: list[tuple[str, str]] = []

    def __call__(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            self._found.append((key, f"invalid {key}: {message}"))

    def raise_if_any(self) -> None:
        if self._found:
            raise ConfigError("; ".join(line for _, line in self._found),
                              problems=tuple(self._found))


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    text = str(annotation)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"invalid {key}: a value is required")
    try:
        if text.startswith("tuple"):
            if isinstance(value, str):
                return tuple(v for v in value.split(",") if v)
            if not isinstance(value, (list, tuple)):  # a mapping's keys are not a list
                raise ValueError(value)
            return tuple(str(v) for v in value)
        if text.startswith("bool"):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if text.startswith(("int", "float")) and isinstance(value, bool):
            raise ValueError(value)  # YAML's `samples: true` is not the number 1
        if text.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if text.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {key}: cannot read {value!r} as {text}") from err
