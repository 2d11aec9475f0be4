r"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3): a reverse-time step, then Langevin MCMC.

A predictor moves the state from reverse time :math:`\tau` to :math:`\tau + h` (any
:class:`~splitdyn.steps.base.Step` of the reverse SDE: :class:`~splitdyn.steps.euler.EulerMaruyama`,
:class:`ReverseDiffusion`, a splitting or an exponential integrator); a corrector then makes ``steps``
Langevin moves that leave :math:`p_t`, :math:`t = T - \tau - h`, invariant:

.. math::

    u_c \leftarrow u_c + \epsilon\,s_c(u, t) + \sqrt{2\epsilon}\,z, \qquad z \sim \mathcal N(0, I),

on the components :math:`c` the score covers. With every component covered (VP, VE) this is the paper's
Langevin corrector targeting :math:`p_t(u)`. CLD's score covers the velocity only: the corrector is then a
Langevin chain on :math:`v` with :math:`x` held fixed, targeting the conditional :math:`p_t(v \mid x)`
(:math:`\nabla_v \log p_t(x, v) = \nabla_v \log p_t(v \mid x)`), which also leaves the joint :math:`p_t(x, v)`
invariant. :func:`predictor_corrector` composes the two as one step (``nfe`` counts both).

The step size :math:`\epsilon` follows one of three rules:

- ``snr`` (the paper's rule): :math:`\epsilon = 2\,(r\,\|z\| / \|s\|)^2` with :math:`\|\cdot\|` over the score's
  components, per sample (``per_sample=True``) or from the batch means of the norms (the paper's code);
- ``step_size``: a fixed :math:`\epsilon`;
- ``rate``: :math:`\epsilon = \text{rate}\cdot h / \text{steps}`, proportional to the predictor's step.

With ``snr`` or a fixed ``step_size`` the corrector's bias (a Langevin step of size :math:`\epsilon` leaves
:math:`p_t` only up to :math:`O(\epsilon)`) does not vanish as :math:`h \to 0`: the sampler converges to a
law within :math:`O(\epsilon)` of the data, and the corrector declares ``weak_order = 0``. With ``rate`` the
corrector is the Euler-Maruyama step of the annealed Langevin dynamics
:math:`du_c = \text{rate}\,s_c(u, T - \tau)\,d\tau + \sqrt{2\,\text{rate}}\,dW` (order 1), which leaves every
:math:`p_t` invariant; the predictor-corrector is then a Lie-Trotter splitting of a reverse SDE with the same
marginals and converges with order 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..checks import check_count, check_flag, check_positive
from .base import AffineMap, Intervals, Plan, Step, kron_identity
from .composition import Composition
from ..gaussian import psd_cholesky
from ..protocols import ReverseDynamics, require
from .euler import EulerMaruyama
from .noise import NoiseSource, brownian_flow_tables
from .split import split_step

if TYPE_CHECKING:
    from ..reverse import ReverseSDE

__all__ = ["ReverseDiffusion", "LangevinCorrector", "predictor_corrector", "pc_step"]


def _check_reverse(reverse) -> None:
    require("reverse", reverse, ReverseDynamics)


def _score_columns(reverse) -> list[int]:
    return list(range(reverse.num_components)) if reverse.score_components is None else list(reverse.score_components)


def _moments_of_affine(flat_map, mean, covariance, noise):
    """Mean and covariance through ``x -> flat_map(x) + noise`` (``flat_map`` affine, ``noise`` its covariance)."""
    x = mean.reshape(-1).to(torch.float64)
    J = torch.func.jacrev(flat_map)(x)
    return flat_map(x).reshape(mean.shape), J @ covariance @ J.T + noise


class _ReverseDiffusionPlan(Plan):
    def __init__(self, step: "ReverseDiffusion", intervals: Intervals, like: torch.Tensor) -> None:
        reverse = step.reverse
        self.reverse, self.n = reverse, len(intervals)
        end = reverse.T - intervals.starts  # forward time of the interval's start (where the score is taken)
        begin = (end - intervals.spans).clamp_min(0.0)
        Phi, Q = reverse.sde.kernel(end, begin)
        inverse = torch.linalg.inv(Phi)
        cols = _score_columns(reverse)
        self.M, self.C = inverse, inverse @ Q[..., cols]
        self.Q = Q
        self.map = AffineMap([self.M, self.C, psd_cholesky(Q, "the forward transition covariance")], like)
        self.begin, self.spans = begin, intervals.spans
        self.starts, self.span_list = intervals.starts.tolist(), intervals.spans.tolist()
        self.score_times = end.tolist()
        self.brownian_map = None
        self.counters = (reverse.counter,)

    def __call__(self, u, i, noise: NoiseSource):
        s = self.reverse.evaluate_score(u, self.score_times[i])
        if noise.brownian:
            return self._on_path(u, s, i, noise)
        return self.map(i, u, s, torch.randn(u.shape, generator=noise.generator, dtype=u.dtype, device=u.device))

    def _on_path(self, u, s, i, source):
        # noise B0 dW + R zeta ~ N(0, Q) with B0 -> G: the same path as Euler-Maruyama to leading order
        sde = self.reverse.sde
        m = int(sde.diffusion_matrix(self.begin[:1]).shape[-1])
        if self.brownian_map is None:
            B0, _, R = brownian_flow_tables(sde, self.begin, self.spans, False)
            self.brownian_map = AffineMap([self.M, self.C, B0, R], u)
        dW, _ = source.increments(self.starts[i], self.span_list[i], u, m)
        return self.brownian_map(i, u, s, dW, source.independent_normal(u.shape, u))

    def gaussian_moments(self, mean, covariance, i):
        d, shape = mean[0, 0].numel(), mean.shape
        M, C = kron_identity(self.M[i], d), kron_identity(self.C[i], d)

        def flat_map(x):
            score = self.reverse.evaluate_score(x.reshape(shape), self.score_times[i]).reshape(-1)
            return M @ x + C @ score

        return _moments_of_affine(flat_map, mean, covariance, kron_identity(self.Q[i], d))


class ReverseDiffusion(Step):
    r"""Reverse-diffusion (ancestral) predictor in exact-linear-part form.

    With :math:`(\Phi, Q)` the forward kernel over :math:`[t - h, t]`, :math:`t = T - \tau` (exact mean matrix
    and noise covariance of the linear forward SDE),

    .. math::

        u' = \Phi^{-1}\big(u + Q_{:,c}\,s_c(u, t)\big) + L\,\xi, \qquad LL^\top = Q,

    the one-step Tweedie mean of :math:`u_{t-h}` given :math:`u_t` plus fresh forward noise. For VP,
    :math:`\Phi = \sqrt{\alpha_i}`, :math:`Q = 1 - \alpha_i` with :math:`\alpha_i = e^{-\int_{t-h}^t\beta}`: the
    DDPM ancestral sampler :math:`x' = (x + \beta_i s)/\sqrt{1 - \beta_i} + \sqrt{\beta_i}\,z`. For VE,
    :math:`\Phi = 1`, :math:`Q = \sigma_t^2 - \sigma_{t-h}^2`: Song et al.'s reverse-diffusion predictor. For CLD
    only the velocity columns of :math:`Q` meet the score (:math:`Q_{xx} = O(h^3)`), which keeps weak order 1.
    One score evaluation per step.

    Parameters
    ----------
    reverse:
        A :class:`~splitdyn.reverse.ReverseSDE` of a linear forward SDE (with ``kernel(t, s)``).
    """

    nfe = 1
    weak_order = 1.0
    strong_order = 0.5

    def __init__(self, reverse: "ReverseSDE") -> None:
        _check_reverse(reverse)
        if not hasattr(reverse.sde, "kernel"):
            raise TypeError("reverse must have a linear forward SDE (with kernel(t, s)), got "
                            f"{type(reverse.sde).__name__}")
        self.reverse = reverse

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _ReverseDiffusionPlan(self, intervals, like)

    def __repr__(self) -> str:
        return f"ReverseDiffusion({type(self.reverse.sde).__name__})"


class _LangevinPlan(Plan):
    def __init__(self, step: "LangevinCorrector", intervals: Intervals, like: torch.Tensor) -> None:
        reverse = step.reverse
        self.step, self.reverse, self.n = step, reverse, len(intervals)
        self.cols = _score_columns(reverse)
        self.all = self.cols == list(range(reverse.num_components))
        self.score_times = (reverse.T - (intervals.starts + step.time_point * intervals.spans)).tolist()
        self.sizes: list[float] | None
        if step.rate is not None:
            self.sizes = (step.rate * intervals.spans / step.steps).tolist()
        elif step.step_size is not None:
            self.sizes = [step.step_size] * self.n
        else:
            self.sizes = None
        self.counters = (reverse.counter,)

    def _size(self, z: torch.Tensor, s: torch.Tensor, i: int):
        if self.sizes is not None:
            return self.sizes[i]
        zn = z.reshape(z.shape[0], -1).norm(dim=-1)
        sn = s.reshape(s.shape[0], -1).norm(dim=-1)
        if not self.step.per_sample:
            zn, sn = zn.mean(), sn.mean()
        eps = 2.0 * (self.step.snr * zn / sn.clamp_min(torch.finfo(s.dtype).tiny)) ** 2
        return eps.reshape(-1, *([1] * (s.ndim - 1))) if self.step.per_sample else eps

    def __call__(self, u, i, noise: NoiseSource):
        t = self.score_times[i]
        for _ in range(self.step.steps):
            s = self.reverse.evaluate_score(u, t)
            z = noise.independent_normal(s.shape, u)
            eps = self._size(z, s, i)
            if isinstance(eps, float):
                move = torch.add(s * eps, z, alpha=math.sqrt(2.0 * eps))
            else:
                move = eps * s + (2.0 * eps).sqrt() * z
            if self.all:
                u = u + move
            else:
                parts = list(u.unbind(1))
                for j, c in enumerate(self.cols):
                    parts[c] = parts[c] + move[:, j]
                u = torch.stack(parts, dim=1)
        return u

    def gaussian_moments(self, mean, covariance, i):
        if self.sizes is None:
            raise NotImplementedError("the signal-to-noise step size depends on the state: moments are not "
                                      "Gaussian-exact (use step_size= or rate= for exact moments)")
        k, d, shape = mean.shape[1], mean[0, 0].numel(), mean.shape
        E = torch.eye(k, dtype=torch.float64)[:, self.cols]
        eps = self.sizes[i]
        for _ in range(self.step.steps):
            def flat_map(x):
                score = self.reverse.evaluate_score(x.reshape(shape), self.score_times[i]).reshape(-1)
                return x + eps * kron_identity(E, d) @ score

            mean, covariance = _moments_of_affine(flat_map, mean, covariance, 2.0 * eps * kron_identity(E @ E.T, d))
        return mean, covariance


class LangevinCorrector(Step):
    r"""Langevin corrector: ``steps`` moves :math:`u_c \leftarrow u_c + \epsilon s_c + \sqrt{2\epsilon}\,z` at a
    fixed time (see the module docstring for the step-size rules and what it acts on for CLD).

    Over an interval :math:`[\tau, \tau + h]` it targets :math:`p_t` at :math:`t = T - \tau - \theta h`
    (``time_point`` :math:`\theta`; 1, the end, follows a predictor). Its noise is independent of any
    Brownian path (from the noise source's generator).

    Parameters
    ----------
    reverse:
        The :class:`~splitdyn.reverse.ReverseSDE` whose score the corrector uses.
    snr:
        Signal-to-noise ratio :math:`r` of the paper's rule (default 0.16 when neither ``step_size`` nor
        ``rate`` is given).
    steps:
        Corrector moves per call (each one score evaluation).
    per_sample:
        With ``snr``: one :math:`\epsilon` per sample instead of one per batch.
    step_size:
        A fixed :math:`\epsilon > 0`.
    rate:
        :math:`\epsilon = \text{rate}\cdot h/\text{steps}` (declared weak order 1, see the module docstring).
    time_point:
        :math:`\theta \in [0, 1]`.
    """

    strong_order = None

    def __init__(self, reverse: "ReverseSDE", snr: float | None = None, steps: int = 1, *, per_sample: bool = False,
                 step_size: float | None = None, rate: float | None = None, time_point: float = 1.0) -> None:
        _check_reverse(reverse)
        given = [name for name, v in (("snr", snr), ("step_size", step_size), ("rate", rate)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"pass at most one step-size rule (snr, step_size or rate), got {given}")
        self.reverse = reverse
        self.snr = check_positive("snr", snr) if snr is not None else (0.16 if not given else None)
        self.step_size = check_positive("step_size", step_size) if step_size is not None else None
        self.rate = check_positive("rate", rate) if rate is not None else None
        self.steps = check_count("steps", steps)
        self.per_sample = check_flag("per_sample", per_sample)
        if isinstance(time_point, bool) or not isinstance(time_point, (int, float)) or not 0.0 <= time_point <= 1.0:
            raise ValueError(f"time_point must be a number in [0, 1], got {time_point!r}")
        self.time_point = float(time_point)
        self.nfe = self.steps

    @property
    def weak_order(self) -> float:  # type: ignore[override]
        """1 with the ``rate`` rule; 0 otherwise (the corrector's bias does not vanish with the step)."""
        return 1.0 if self.rate is not None else 0.0

    def plan(self, intervals: Intervals, like: torch.Tensor) -> Plan:
        return _LangevinPlan(self, intervals, like)

    def __repr__(self) -> str:
        rule = (f"snr={self.snr:g}" if self.snr is not None else f"step_size={self.step_size:g}"
                if self.step_size is not None else f"rate={self.rate:g}")
        return f"LangevinCorrector({rule}, steps={self.steps})"


def predictor_corrector(predictor: Step, corrector: Step) -> Composition:
    """The predictor-corrector step: ``predictor`` over :math:`[\\tau, \\tau + h]`, then ``corrector`` at
    :math:`\\tau + h`; any :class:`~splitdyn.steps.base.Step` may be either. ``nfe`` is the sum of both."""
    for name, step in (("predictor", predictor), ("corrector", corrector)):
        if not isinstance(step, Step):
            raise TypeError(f"{name} must be a splitdyn Step, got {type(step).__name__}")
    return Composition([(predictor, 1.0), (corrector, 1.0)])


def pc_step(reverse: ReverseSDE, *, predictor: str = "em", snr: float = 0.16, steps: int = 1,
            per_sample: bool = False) -> Step:
    r"""Song et al.'s predictor-corrector step: ``predictor`` (``"em"``, ``"ancestral"`` or ``"sscs"``) then
    ``steps`` Langevin corrector moves with the signal-to-noise rule ``snr`` (see
    :mod:`splitdyn.steps.predictor_corrector`; for CLD the corrector moves :math:`v` given :math:`x`)."""
    predictors: dict[str, Callable[[ReverseSDE], Step]] = {"em": EulerMaruyama, "ancestral": ReverseDiffusion,
                                                           "sscs": split_step}
    if predictor not in predictors:
        raise ValueError(f"predictor must be one of {sorted(predictors)}, got {predictor!r}")
    corrector = LangevinCorrector(reverse, snr=snr, steps=steps, per_sample=per_sample)
    return predictor_corrector(predictors[predictor](reverse), corrector)
