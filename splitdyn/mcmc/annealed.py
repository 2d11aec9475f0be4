r"""Annealed Langevin dynamics (Song & Ermon 2019, NCSN) driven by the score of a variance-exploding process.

For noise levels :math:`\sigma_1 > \sigma_2 > \dots > \sigma_L` (geometric, :func:`geometric_noise_levels`)
and the scores :math:`s(x, \sigma_i) = \nabla_x \log p_{\sigma_i}(x)` of the data convolved with
:math:`\mathcal N(0, \sigma_i^2 I)`, NCSN runs ``steps_per_level`` Langevin steps at each level,

.. math::

    x \leftarrow x + \frac{\alpha_i}{2}\,s(x, \sigma_i) + \sqrt{\alpha_i}\,z, \qquad
    \alpha_i = \epsilon\,\sigma_i^2 / \sigma_L^2 .

Here the levels are the kernel standard deviations of a :class:`~splitdyn.processes.VESDE`, reached at the
times :math:`t_i` with :math:`\sigma(t_i) = \sigma_i`, and the score is the library's ``score(u, t)`` (e.g.
:meth:`splitdyn.oracles.DiffusedGaussianMixture.score`). As a :class:`~splitdyn.steps.base.Step`,
:class:`AnnealedLangevin` is ULA of the score at the level of its interval, with the Langevin time rescaled
by :math:`\sigma_i^2/\sigma_L^2`: over :math:`[t, t + h]` in level :math:`i`,
:math:`x' = x + h r_i\,s(x, t_i) + \sqrt{2 h r_i}\,\xi`, :math:`r_i = \sigma_i^2/\sigma_L^2`. NCSN's step is
:math:`h = \epsilon/2` on a grid whose levels last ``steps_per_level`` steps; :func:`annealed_langevin` builds
that grid and runs it. States ``(chains, 1, *event)``.
"""

from __future__ import annotations

import math

import torch

from ..checks import as_float64, check_callable, check_count, check_positive, check_state
from ..integrate import Solution, integrate
from ..processes import VESDE
from ..steps.base import Intervals, Plan, Step
from ..steps.drift import check_drift_output

__all__ = ["AnnealedLangevin", "annealed_langevin", "geometric_noise_levels"]


def geometric_noise_levels(sigma_first: float, sigma_last: float, n_levels: int) -> torch.Tensor:
    r"""The geometric sequence :math:`\sigma_1 = ` ``sigma_first`` :math:`> \dots > \sigma_L =` ``sigma_last`` (float64)."""
    first, last = check_positive("sigma_first", sigma_first), check_positive("sigma_last", sigma_last)
    n = check_count("n_levels", n_levels)
    if n > 1 and not first > last:
        raise ValueError(f"sigma_first must exceed sigma_last (levels decrease), got {first} <= {last}")
    return torch.logspace(math.log10(first), math.log10(last), n, dtype=torch.float64)


class _AnnealedPlan(Plan):
    def __init__(self, step: "AnnealedLangevin", intervals: Intervals) -> None:
        self.score = step.score
        self.n = len(intervals)
        middle = intervals.starts + 0.5 * intervals.spans
        level = torch.floor(middle / step.level_duration).long()
        if bool((level < 0).any()) or bool((level >= len(step.level_times)).any()):
            raise ValueError(
                f"the grid must lie in [0, {len(step.level_times) * step.level_duration:g}] "
                f"({len(step.level_times)} levels of duration {step.level_duration:g}), got "
                f"[{float(intervals.starts[0]):g}, {float((intervals.starts + intervals.spans)[-1]):g}]")
        rate = step.rates[level]
        self.drift = (intervals.spans * rate).tolist()
        self.noise = (2.0 * intervals.spans * rate).sqrt().tolist()
        self.times = step.level_times[level].tolist()
        self.evaluations = 0

    def __call__(self, u, i, noise):
        generator = noise.generator
        s = check_drift_output("score", self.score(u, self.times[i]), u, u.shape)
        self.evaluations += 1
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        return torch.add(u, s, alpha=self.drift[i]).add_(noise, alpha=self.noise[i])

    def gaussian_moments(self, mean, covariance, i):
        """Exact moments for an affine score (Gaussian data)."""
        shape, n = mean.shape, mean.numel()

        def flat_map(x):
            y = x.reshape(shape)
            return (y + self.drift[i] * self.score(y, self.times[i])).reshape(n)

        x = mean.reshape(n).to(torch.float64)
        J = torch.func.jacrev(flat_map)(x).to(torch.float64)
        return flat_map(x).reshape(shape), J @ covariance @ J.T + self.noise[i] ** 2 * torch.eye(n, dtype=torch.float64)


class AnnealedLangevin(Step):
    r"""ULA of a VE score, level by level, with step sizes :math:`\propto \sigma_i^2` (see the module docstring).

    Parameters
    ----------
    score:
        ``score(u, t) -> (chains, 1, *event)``, the score of the data diffused by ``sde`` to time ``t``.
    sde:
        The :class:`~splitdyn.processes.VESDE` whose kernel standard deviations are the noise levels.
    noise_levels:
        Decreasing :math:`\sigma_1 > \dots > \sigma_L`, within the process's range.
    level_duration:
        Grid time spent at each level (level :math:`i` covers :math:`[i\,D, (i + 1)\,D)`).
    """

    nfe = 1
    weak_order = 1.0

    def __init__(self, score, sde: VESDE, noise_levels, level_duration: float) -> None:
        self.score = check_callable("score", score, "a callable score(u, t)")
        if not isinstance(sde, VESDE):
            raise TypeError(f"sde must be a splitdyn.VESDE, got {type(sde).__name__}")
        sigmas = as_float64("noise_levels", noise_levels, "a sequence of noise levels").reshape(-1)
        if sigmas.numel() == 0 or bool((sigmas <= 0).any()) or bool((sigmas[1:] >= sigmas[:-1]).any()):
            raise ValueError(f"noise_levels must be positive and strictly decreasing, got {sigmas.tolist()}")
        top = float(sde.sigma(sde.T))
        if float(sigmas[0]) > top * (1 + 1e-12):
            raise ValueError(f"noise_levels must not exceed the process's largest kernel std {top:g}, got {float(sigmas[0]):g}")
        self.sde = sde
        self.noise_levels = sigmas
        self.level_times = sde.time_from_log_snr(-torch.log(sigmas))
        self.rates = (sigmas / sigmas[-1]) ** 2
        self.level_duration = check_positive("level_duration", level_duration)

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        check_state("like", like, 1)
        return _AnnealedPlan(self, intervals)

    def __repr__(self) -> str:
        return f"AnnealedLangevin({len(self.noise_levels)} levels, level_duration={self.level_duration:g})"


def annealed_langevin(score, sde: VESDE, x: torch.Tensor, noise_levels, steps_per_level: int, epsilon: float,
                      generator: torch.Generator | None = None) -> Solution:
    r"""Run NCSN's annealed Langevin dynamics from ``x`` (``(chains, 1, *event)``): ``steps_per_level`` steps
    :math:`x \leftarrow x + \frac{\alpha_i}{2}s + \sqrt{\alpha_i}z`, :math:`\alpha_i = \epsilon\sigma_i^2/\sigma_L^2`,
    at each level. Returns the :class:`~splitdyn.integrate.Solution` (``nfe = L * steps_per_level``).

    Parameters
    ----------
    score, sde, noise_levels:
        As for :class:`AnnealedLangevin`.
    x:
        Initial states ``(chains, 1, *event)``.
    steps_per_level:
        Langevin steps :math:`T` per level.
    epsilon:
        :math:`\epsilon > 0`.
    generator:
        Optional ``torch.Generator`` for the noise.
    """
    steps = check_count("steps_per_level", steps_per_level)
    h = 0.5 * check_positive("epsilon", epsilon)
    step = AnnealedLangevin(score, sde, noise_levels, steps * h)
    n = steps * len(step.noise_levels)
    grid = torch.arange(n + 1, dtype=torch.float64) * h
    return integrate(step, x, grid, generator=generator, divergence_factor=None)
