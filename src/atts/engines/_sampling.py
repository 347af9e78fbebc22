"""Token sampling and log-softmax over raw logits, in numpy (shared by in-process engines).

Sampling here rather than inside the backend makes a seed mean the same thing everywhere: a
``numpy.random.Generator`` seeded with ``SamplingParams.seed`` drives every draw of one
generation, so a (prompt, params) pair always yields the same tokens.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def log_softmax(logits: FloatArray) -> npt.NDArray[np.float64]:
    """Row-wise log p = z - logsumexp(z), computed in float64 (the scores are sums of these)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_logprobs(logits: FloatArray, targets: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """log_softmax(logits[i])[targets[i]] for each row i: z_i[t_i] - max_i - log sum exp(z_i -
    max_i).  The shifted logits are <= 0, so their exp lies in [0, 1] and float32 holds it to a
    relative 6e-8; the sums and the result are float64 (observed error against an all-float64
    evaluation: about 1e-8 nat on a 150k vocabulary).  Half the memory traffic of float64
    matters: on a CPU this runs once per scored token beside the model's own work."""
    z = np.asarray(logits)
    if z.dtype != np.float32:
        z = z.astype(np.float32)
    rows = np.arange(z.shape[0])
    top = z.max(axis=1)
    picked = z[rows, np.asarray(targets)].astype(np.float64) - top
    shifted = z - top[:, None]  # the one scratch array; exp runs in place
    np.exp(shifted, out=shifted)
    return picked - np.log(shifted.sum(axis=1, dtype=np.float64))


def _nucleus(probs: npt.NDArray[np.float64], top_p: float) -> npt.NDArray[np.intp]:
    """Ids of the smallest set of most probable tokens whose mass reaches ``top_p``.

    A full sort of a 150k vocabulary per token costs as much as a decode step, so look at the
    k most probable tokens (argpartition) and widen k only when they hold too little mass.
    """
    total = probs.sum()
    k = min(64, probs.size)
    while True:
        top = np.argpartition(-probs, k - 1)[:k] if k < probs.size else np.arange(probs.size)
        top = top[np.argsort(-probs[top], kind="stable")]
        mass = np.cumsum(probs[top])
        if mass[-1] >= top_p * total or k == probs.size:
            cut = int(np.searchsorted(mass, top_p * total)) + 1
            return top[: min(cut, k)]
        k = min(k * 8, probs.size)


def sample_token(
    logits: FloatArray, temperature: float, top_p: float, rng: np.random.Generator
) -> int:
    """Draw one token id: greedy at temperature 0, else softmax(z / T) restricted to top-p."""
    if temperature == 0:
        return int(np.argmax(logits))  # no float64 copy: the argmax is the same
    z = np.asarray(logits, dtype=np.float64)
    z = (z - z.max()) / temperature
    probs = np.exp(z)
    if top_p < 1.0:
        keep = _nucleus(probs, top_p)
        cdf = np.cumsum(probs[keep])
        pick = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        return int(keep[min(pick, keep.size - 1)])
    cdf = np.cumsum(probs)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(index, probs.size - 1)
