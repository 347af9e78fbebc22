"""atts.conformal: the conformal core. Nonconformity scores in, p-values and decisions out.

No model code lives here (numpy only), so everything can be tested on plain scores.

- `pvalue`: split-conformal p-values over a sorted bank (docs/METHOD.md section 3) and the guards;
- `decision`: `Decision`, `Thresholds` (ordinal levels, section 4), `classify` (the one rule)
  and `alpha_for_budget`;
- `bank`: `CalibrationBank`, `BankSnapshot`, copy-on-write so concurrent tasks and threads
  always decide on a consistent snapshot;
- `strata`: `StrataBanks`, which bank judges which key (group, round and question strata);
- `aci`: adaptive conformal inference, a working level per stratum;
- `decider`: `Decider`, the one place a score becomes a decision (steps and questions);
- `scores`: the nonconformity scores of a draft step (ppl, max_surprisal, tail_mean, llr);
- `persistence`: `save_bank` / `load_bank` with a fingerprint of score, models, prompt and
  settings.
"""

from atts.conformal.bank import BankSnapshot, CalibrationBank
from atts.conformal.decider import (
    BankStore,
    Decider,
    Decision,
    DecisionPolicy,
    Thresholds,
    Verdict,
    alpha_for_budget,
    classify,
)
from atts.conformal.persistence import (
    BankMismatchError,
    ScoreMismatchError,
    fingerprint_digest,
    load_bank,
    make_fingerprint,
    save_bank,
)
from atts.conformal.pvalue import (
    CalibrationError,
    check_bank_size,
    min_bank_size,
    p_value,
    p_value_sorted,
)
from atts.conformal.strata import DecisionKey, StrataBanks

__all__ = [
    "BankMismatchError",
    "BankSnapshot",
    "BankStore",
    "CalibrationBank",
    "CalibrationError",
    "Decider",
    "Decision",
    "DecisionKey",
    "DecisionPolicy",
    "ScoreMismatchError",
    "StrataBanks",
    "Thresholds",
    "Verdict",
    "alpha_for_budget",
    "check_bank_size",
    "classify",
    "fingerprint_digest",
    "load_bank",
    "make_fingerprint",
    "min_bank_size",
    "p_value",
    "p_value_sorted",
    "save_bank",
]
