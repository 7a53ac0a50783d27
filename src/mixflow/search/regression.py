"""Regressions from a mixture (a point of the simplex) to a loss, registered by name.

- ``linear``: ridge regression on the weights (RegMix's linear baseline, Liu et al. 2024, arXiv
  2407.01492, §3).
- ``loglinear``: the data mixing law L(r) = c + exp(b + t·r) (Ye et al. 2025, arXiv 2403.16952,
  Eq. 1, with k = exp(b) so it stays positive); fitted by profiling c (for a fixed c, log(L − c) is
  linear in r) and then Gauss–Newton on all parameters.
- ``lightgbm``: gradient-boosted trees on the weights (RegMix's regression, §3.2); the ``search``
  extra installs it.
- ``gp``: a Gaussian process (constant × RBF + white noise; Olmix's ``gp``), scikit-learn, the
  ``search`` extra.

A model is ``fit(x, y)`` then ``predict(x)``; x is [n, K] with rows on the simplex.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from mixflow.config.errors import ConfigError


class MixtureRegression(Protocol):
    name: str

    def fit(self, x: np.ndarray, y: np.ndarray) -> MixtureRegression: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


_MODELS: dict[str, Callable[[int], MixtureRegression]] = {}


def register_model(name: str) -> Callable[[Callable[[int], Any]], Callable[[int], Any]]:
    """Register a factory ``seed -> model`` under ``name``."""

    def decorate(factory: Callable[[int], Any]) -> Callable[[int], Any]:
        _MODELS[name] = factory
        return factory

    return decorate


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, seed: int = 0) -> MixtureRegression:
    """A fresh, unfitted model; an unknown name or a missing optional package is a one-line error."""
    if name not in _MODELS:
        raise ConfigError(f"--model: unknown model {name!r}; expected one of {', '.join(available_models())}")
    return _MODELS[name](seed)


def _design(x: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((len(x), 1)), x])


@register_model("linear")
class Linear:
    """Least squares on [1, r] with a small ridge (the weights sum to 1, so [1, r] is collinear)."""

    name = "linear"

    def __init__(self, seed: int = 0, ridge: float = 1e-6) -> None:
        self.ridge = ridge
        self.coef: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> Linear:
        a = _design(x)
        penalty = self.ridge * np.eye(a.shape[1]) * max(1.0, float(np.trace(a.T @ a)) / a.shape[1])
        penalty[0, 0] = 0.0
        self.coef = np.linalg.solve(a.T @ a + penalty, a.T @ y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.coef is not None, "fit first"
        return _design(x) @ self.coef


@register_model("loglinear")
class LogLinear:
    """L(r) = c + exp(b + t·r): a floor c (irreducible loss) plus an exponential in the weights."""

    name = "loglinear"

    def __init__(self, seed: int = 0, ridge: float = 1e-4, grid: int = 48, iterations: int = 50) -> None:
        self.ridge, self.grid, self.iterations = ridge, grid, iterations
        self.c = 0.0
        self.theta: np.ndarray | None = None  # (b, t_1..t_K)

    def _inner(self, a: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
        """For a fixed c: ridge on log(y − c), and the squared error of the fit in y."""
        z = np.log(y - c)
        penalty = self.ridge * np.eye(a.shape[1])
        penalty[0, 0] = 0.0
        theta = np.linalg.solve(a.T @ a + penalty, a.T @ z)
        return theta, float(np.sum((c + np.exp(a @ theta) - y) ** 2))

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogLinear:
        a = _design(x)
        low = float(np.min(y))
        # a spread of a few ulps would put the first c on min(y) itself (log 0)
        spread = max(float(np.ptp(y)), 1e-9 * max(abs(low), 1.0))
        # c below every observed loss: from well below (a pure exponential) up to just under the minimum
        cs = low - spread * np.geomspace(1e-3, 1e2, self.grid)
        fits = [self._inner(a, y, c) for c in cs]
        best = int(np.nanargmin([sse for _, sse in fits]))
        self.c, self.theta = float(cs[best]), fits[best][0]
        self._gauss_newton(a, y)
        return self

    def _gauss_newton(self, a: np.ndarray, y: np.ndarray) -> None:
        """Refine (c, θ) on the squared error in y itself (the profile fitted log(y − c))."""
        assert self.theta is not None
        params = np.concatenate([[self.c], self.theta])
        damping = 1e-3

        def sse(p: np.ndarray) -> float:
            return float(np.sum((p[0] + np.exp(np.clip(a @ p[1:], -50, 50)) - y) ** 2))

        current = sse(params)
        for _ in range(self.iterations):
            e = np.exp(np.clip(a @ params[1:], -50, 50))
            jac = np.hstack([np.ones((len(y), 1)), e[:, None] * a])
            resid = params[0] + e - y
            h = jac.T @ jac
            try:
                step = np.linalg.solve(h + damping * np.diag(np.diag(h) + 1e-12), jac.T @ resid)
            except np.linalg.LinAlgError:
                # h is singular by construction (the weights sum to 1, so b's column is the sum of
                # the t's) and only the damping keeps the system solvable: after many accepted
                # steps it is too small to, so damp as after a rejected step
                damping *= 10
                continue
            trial = params - step
            value = sse(trial)
            if value < current:  # Levenberg–Marquardt: accept and trust more, or reject and damp
                params, current, damping = trial, value, damping / 3
                if np.max(np.abs(step)) < 1e-10:
                    break
            else:
                damping *= 10
        self.c, self.theta = float(params[0]), params[1:]

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.theta is not None, "fit first"
        return self.c + np.exp(np.clip(_design(x) @ self.theta, -50, 50))


def _optional(module: str, model: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--model {model}: needs the {module} package; install it with pip install 'mixflow[search]'"
        ) from None


@register_model("lightgbm")
class LightGBM:
    """Gradient-boosted trees (RegMix §3.2: 1000 rounds, learning rate 0.01, no early stopping here:
    the released notebook stopped on its held-out set, which then no longer measures the fit)."""

    name = "lightgbm"

    def __init__(self, seed: int = 0) -> None:
        lgb = _optional("lightgbm", "lightgbm")
        self.model = lgb.LGBMRegressor(n_estimators=1000, learning_rate=0.01, random_state=seed, verbosity=-1, n_jobs=1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> LightGBM:
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x), dtype=np.float64)


@register_model("gp")
class GaussianProcess:
    """A Gaussian process with a constant × RBF + white-noise kernel on the weights."""

    name = "gp"

    def __init__(self, seed: int = 0) -> None:
        gp = _optional("sklearn.gaussian_process", "gp")
        kernels = _optional("sklearn.gaussian_process.kernels", "gp")
        kernel = kernels.ConstantKernel(1.0) * kernels.RBF(length_scale=0.5) + kernels.WhiteKernel(1e-3)
        self.model = gp.GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x), dtype=np.float64)
