"""Deciding a claim over seeds: a paired comparison against a baseline that can fail.

Every claim in adaptflow is "method beats baseline on metric M". Per seed we measure both under
the same budget and take the paired difference d_s (oriented so that positive = the claim's
direction). The rule:

- fewer than 2 seeds                         -> "not enough seeds" (never "holds")
- mean(d) - margin > t * SE(d)               -> "holds"
- mean(d) + margin < -t * SE(d)              -> "does not hold" (the baseline is better)
- otherwise                                  -> "within noise" (no difference shown)

SE(d) = std(d, ddof=1) / sqrt(n) and t = the 97.5 % quantile of Student's t with n - 1 degrees
of freedom (12.7 for 2 seeds, 4.30 for 3, 2.78 for 5): "holds" means the 95 % confidence interval
of the mean paired gain lies above `margin`, i.e. a one-sided paired t-test at 2.5 %. A flat
"2 SE" would say "holds" by chance ~9 % of the time with 3 seeds (15 % with 2).
`margin` (>= 0) asks for a gain larger than a practical minimum.

A report that makes many claims gets some "holds" by chance; `holm` re-decides a family of
claims with Holm's step-down procedure (family-wise error <= 2.5 %, one-sided), from the
one-sided p-values of the same paired t-tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOLDS = "holds"
FAILS = "does not hold"
NOISE = "within noise"
FEW_SEEDS = "not enough seeds"
VERDICTS = (HOLDS, FAILS, NOISE, FEW_SEEDS)


@dataclass(frozen=True)
class PairedResult:
    verdict: str
    mean_diff: float  # mean over seeds of (method - baseline), oriented: positive supports
    se: float  # standard error of that mean (nan with one seed)
    n: int
    margin: float = 0.0

    @property
    def half_width(self) -> float:
        """Half-width of the 95 % confidence interval of the mean gain (t quantile x SE)."""
        return t_quantile(self.n) * self.se if self.n >= 2 else math.nan

    @property
    def p_value(self) -> float:
        """One-sided p-value of the paired t-test of "mean gain > margin" (nan below 2 seeds;
        0 or 1 when every seed agrees exactly)."""
        if self.n < 2:
            return math.nan
        gain = self.mean_diff - self.margin
        if self.se == 0:
            return 0.0 if gain > 0 else 1.0
        from scipy.stats import t

        return float(t.sf(gain / self.se, self.n - 1))

    def describe(self, unit: str = "", scale: float = 1.0, digits: int = 2) -> str:
        """'+3.10 ± 1.72 pts (95 % CI, 3 seeds)' style text for a verdict table."""
        u = f" {unit}" if unit else ""
        if self.n < 2:
            return f"{scale * self.mean_diff:+.{digits}f}{u} ({self.n} seed)"
        return (
            f"{scale * self.mean_diff:+.{digits}f} ± {scale * self.half_width:.{digits}f}{u} "
            f"(95 % CI, {self.n} seeds)"
        )


def t_quantile(n: int) -> float:
    """97.5 % quantile of Student's t with n - 1 degrees of freedom (n >= 2 paired seeds)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def paired_verdict(
    method: Sequence[float],
    baseline: Sequence[float],
    higher_is_better: bool = True,
    margin: float = 0.0,
) -> PairedResult:
    """Verdict on "method beats baseline", from per-seed values paired by position."""
    a = np.asarray(method, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need equal 1-d shapes, got {a.shape} and {b.shape}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    d = (a - b) if higher_is_better else (b - a)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return PairedResult(FEW_SEEDS, float(d.mean()) if n else math.nan, math.nan, n, margin)
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    half = t_quantile(n) * se
    if mean - margin > half:
        verdict = HOLDS
    elif mean + margin < -half:
        verdict = FAILS
    else:
        verdict = NOISE
    return PairedResult(verdict, mean, se, n, margin)


def holm(results: Sequence[PairedResult], alpha: float = 0.025) -> list[str]:
    """Verdicts of a family of claims under Holm's step-down correction: the k-th smallest
    one-sided p-value (k = 0, 1, ...) must be <= alpha / (m - k), stopping at the first that is
    not. A claim that held alone but not here reads "within noise"; "does not hold" and "not
    enough seeds" stay as they were."""
    m = sum(r.n >= 2 for r in results)
    order = sorted((i for i, r in enumerate(results) if r.n >= 2), key=lambda i: results[i].p_value)
    survives: set[int] = set()
    for k, i in enumerate(order):
        if results[i].p_value > alpha / (m - k):
            break
        survives.add(i)
    return [
        NOISE if r.verdict == HOLDS and i not in survives else r.verdict
        for i, r in enumerate(results)
    ]


def all_of(verdicts: Sequence[str]) -> str:
    """One verdict for a claim made of several comparisons (e.g. every noise level)."""
    if not verdicts:
        return FEW_SEEDS
    if any(v == FEW_SEEDS for v in verdicts):
        return FEW_SEEDS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == FAILS for v in verdicts):
        return FAILS
    return NOISE
