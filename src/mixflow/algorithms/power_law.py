"""Fitting a loss curve L(n) = ε + β·n^(−α) and smoothing it first (ADO's per-domain scaling law).

The objective is the released ADO fit's (Jiang et al. 2025, arXiv 2410.11820, Eq. 1; yidingjiang/ado
``loss_fn``): Σ_i Huber_δ(log L_i − log L̂(n_i)) with δ = 1e-3, α in [0, α_max], β ≤ β_max and
ε ≥ ε_min. The released code minimises it by L-BFGS from 512 starting points; here α runs over a
grid (every 0.01) and, for each α, L̂ is linear in (ε, β), which iteratively reweighted least squares
solves (the Huber weights, and 1/L² so that a residual in L counts as one in log L); the best α
by the exact objective wins. Pure numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class PowerLaw(NamedTuple):
    """L̂(n) = eps + beta·n^(−alpha)."""

    eps: float
    beta: float
    alpha: float

    def __call__(self, n: np.ndarray | float) -> np.ndarray:
        return self.eps + self.beta * np.power(np.asarray(n, dtype=np.float64), -self.alpha)


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """½r² within δ, δ(|r| − δ/2) beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def fit_power_law(
    n: np.ndarray,
    loss: np.ndarray,
    eps_min: float,
    alpha_max: float = 0.8,
    beta_max: float = float(np.exp(6.5)),
    delta: float = 1e-3,
    iterations: int = 8,
) -> PowerLaw:
    """The law minimising Σ Huber_δ(log loss − log L̂(n)) with ε ≥ ``eps_min``, 0 ≤ β ≤ ``beta_max``,
    0 ≤ α ≤ ``alpha_max`` (the released ADO bounds). ``n`` > 0 and ``loss`` > 0, same length ≥ 2."""
    n, y = np.asarray(n, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    alphas = np.round(np.arange(0.0, alpha_max + 1e-9, 0.01), 2)[:, None]  # one row per α
    x = np.power(n[None, :], -alphas)  # [G, N]
    w = np.broadcast_to(1.0 / (y * y), x.shape).copy()
    eps, beta = _weighted_line(x, y, w, eps_min, beta_max)
    for _ in range(iterations):
        r = np.log(y)[None, :] - np.log(eps[:, None] + beta[:, None] * x)
        robust = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), 1e-300))
        eps, beta = _weighted_line(x, y, robust / (y * y), eps_min, beta_max)
    cost = huber(np.log(y)[None, :] - np.log(eps[:, None] + beta[:, None] * x), delta).sum(axis=1)
    best = int(np.argmin(cost))
    return PowerLaw(float(eps[best]), float(beta[best]), float(alphas[best, 0]))


def _weighted_line(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, eps_min: float, beta_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``x``: (ε, β) of y ≈ ε + β·x by weighted least squares, then held in the bounds
    (an intercept below ε_min is set to it and β refitted; β clipped to [0, β_max] and ε refitted)."""
    sw, swx, swy = w.sum(1), (w * x).sum(1), (w * y).sum(1)
    swxx, swxy = (w * x * x).sum(1), (w * x * y).sum(1)
    det = sw * swxx - swx * swx
    safe = np.where(np.abs(det) > 1e-300, det, 1.0)
    beta = np.where(np.abs(det) > 1e-300, (sw * swxy - swx * swy) / safe, 0.0)
    eps = (swy - beta * swx) / sw
    low = eps < eps_min
    beta = np.where(low, (swxy - eps_min * swx) / np.maximum(swxx, 1e-300), beta)
    eps = np.where(low, eps_min, eps)
    clipped = np.clip(beta, 0.0, beta_max)
    eps = np.where(clipped != beta, np.maximum((swy - clipped * swx) / sw, eps_min), eps)
    return eps, clipped


def savgol_smooth(y: np.ndarray, window: int, order: int = 3) -> np.ndarray:
    """Savitzky–Golay smoothing (Savitzky & Golay 1964): each point replaced by the value at it of the
    least-squares polynomial of ``order`` over the ``window`` points centred on it; the first and last
    half-windows take the polynomial of the first and last whole window. Fewer points than
    ``window`` (or ≤ ``order``): one polynomial over all of them."""
    y = np.asarray(y, dtype=np.float64)
    m = y.size
    if m <= order + 1:
        return y.copy()
    window = min(window if window % 2 else window - 1, m if m % 2 else m - 1)
    if window <= order:
        return np.polyval(np.polyfit(np.arange(m), y, order), np.arange(m))
    half = window // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    # the centre value of the fitted polynomial is a fixed linear combination of the window's points
    coeffs = np.linalg.pinv(np.vander(offsets, order + 1, increasing=True))[0]
    out = np.empty(m)
    out[half : m - half] = np.convolve(y, coeffs[::-1], mode="valid")
    for lo, positions in ((0, np.arange(half)), (m - window, np.arange(m - half, m))):
        fit = np.polyfit(np.arange(window), y[lo : lo + window], order)
        out[positions] = np.polyval(fit, positions - lo)
    return out
