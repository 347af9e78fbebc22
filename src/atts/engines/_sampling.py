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
    """log_softmax(logits[i])[targets[i]] for each row i, in float64, with one scratch array
    (a 64 x 150k block is 78 MB in float64: temporaries cost more than the arithmetic)."""
    z = np.array(logits, dtype=np.float64)  # a copy: exp runs in place below
    rows = np.arange(z.shape[0])
    top = z.max(axis=1)
    picked = z[rows, np.asarray(targets)] - top
    z -= top[:, None]
    np.exp(z, out=z)
    return picked - np.log(z.sum(axis=1))


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
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return int(np.argmax(z))
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
