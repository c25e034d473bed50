"""Named latency shapes with a seed: the inputs of the quantile accuracy tests and of ``bench.stats_size``."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: constant; bimodal (80% fast, 20% slow); log-normal; exponential
LATENCY_SHAPES = ("constant", "bimodal", "lognormal", "exponential")


def latency_samples(shape: str, n: int, seed: int = 7) -> npt.NDArray[np.float64]:
    """``n`` call latencies in seconds of a named shape (see :data:`LATENCY_SHAPES`)."""
    rng = np.random.default_rng(seed)
    if shape == "constant":
        return np.full(n, 0.0425)
    if shape == "bimodal":
        fast, slow = rng.normal(0.004, 0.0004, n), rng.normal(0.25, 0.02, n)
        return np.where(rng.random(n) < 0.8, fast, slow)
    if shape == "lognormal":
        return rng.lognormal(math.log(0.012), 0.7, n)
    if shape == "exponential":
        return rng.exponential(0.05, n)
    raise ValueError(f"unknown latency shape {shape!r}; one of {', '.join(LATENCY_SHAPES)}")
