r"""An adaptive-step sampler for reverse SDEs: step doubling on one Brownian path with a PI controller.

The CLD paper leaves adaptive step sizes for its splitting sampler to future work; :class:`AdaptiveSampler`
picks its own steps for Euler-Maruyama or SSCS (any :class:`~splitdyn.steps.base.Step`):

- **Embedded error estimate (step doubling).** Each attempt over :math:`[\tau, \tau + h]` computes one step
  :math:`u^{(1)}` of size :math:`h` and two steps :math:`u^{(2)}` of size :math:`h/2`, on the same Brownian
  increments. For Euler-Maruyama both start with the score at :math:`(u, \tau)`: that evaluation is shared,
  so an attempt costs 2 NFE (3 for SSCS, whose score is evaluated after an exact half step). The error is
  the weighted RMS norm

  .. math::

      \mathrm{err} = \Big(\frac1N \sum_j \Big(\frac{u^{(2)}_j - u^{(1)}_j}
      {\mathrm{atol} + \mathrm{rtol}\,\max(|u_j|, |u^{(2)}_j|)}\Big)^2\Big)^{1/2}

  over the whole batch (one step size for the batch, as ``torchsde``'s adaptive mode), by default per unit
  step (below). A step is accepted when :math:`\mathrm{err} \le 1`, continuing from :math:`u^{(2)}` (local
  extrapolation).
- **Error per unit step** (``per_unit_step=True``, the default): the estimate is scaled by
  :math:`\sqrt{(T - \epsilon)/h}`. Local errors of a stochastic step are mostly random and add up like
  variances, so the global mean-square error is about :math:`\sum_i c_i h_i^3` for local errors
  :math:`\sqrt{c_i}\,h_i^{3/2}`; for a given number of steps it is smallest when :math:`c_i h_i^2`, the
  local variance per unit time, is the same for every step, which is what this scaling equidistributes; the
  global error then scales with the tolerance. In ``benchmarks/bench_adaptive.py`` it has about half the
  pathwise error of the plain per-step criterion at equal NFE.
- **PI step-size control** (Gustafsson; Hairer and Wanner IV.2): with :math:`q` the order of the estimate
  (:math:`u^{(2)} - u^{(1)} = O(h^{3/2})` for additive noise, so :math:`q = 3/2`, or 1 per unit step),
  :math:`h \leftarrow h\cdot\mathrm{safety}\cdot\mathrm{err}^{-0.7/q}\,\mathrm{err}_{\text{prev}}^{0.4/q}`
  after an accepted step, :math:`h \leftarrow h\cdot\max(0.2, \mathrm{safety}\cdot\mathrm{err}^{-1/q})` after a
  rejected one; each change is limited to the factor range ``[0.2, 5]``.
- **Unbiased rejections.** Increments come from a ``torchsde.BrownianInterval`` (Brownian bridges between the
  times already queried), so a rejected step does not change the path: retrying it with a smaller step
  samples the same Brownian motion (no bias from rejecting unlucky increments; Rackauckas and Nie 2017
  reach the same with "rejection sampling with memory"). SSCS uses the path's space-time Lévy area, see
  :mod:`splitdyn.steps.noise`.

``nfe`` counts every score evaluation, those of rejected attempts included.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .checks import check_count, check_flag, check_positive
from .integrate import Solution
from .interop import ReferenceSolver
from .linalg import apply_matrix
from .reverse import ReverseSDE
from .steps.base import Intervals, Step, evaluation_count
from .steps.noise import BrownianNoise
from .steps.split import split_step

__all__ = ["AdaptiveSampler"]

_ORDER = 1.5  # the error estimate scales as h^(3/2) (strong local error of an Euler-type step, additive noise)


class AdaptiveSampler(ReferenceSolver):
    r"""Adaptive steps for the reverse SDE, from reverse time 0 to :math:`T - \epsilon` (module docstring).

    Parameters
    ----------
    method:
        ``"em"`` (Euler-Maruyama with the shared first evaluation), ``"sscs"`` (the splitting sampler of
        :func:`splitdyn.steps.split.split_step`), or a factory ``f(reverse_sde) -> Step``.
    rtol, atol:
        Relative and absolute tolerances on the state; ``rtol`` below 1 (a relative error of 100% or more is
        no accuracy at all: the controller would take a few giant steps and return noise).
    eps:
        Forward time where the solve stops (the cutoff :math:`\epsilon`).
    h0:
        First step size (reverse time).
    safety:
        Safety factor of the controller, in ``(0, 1]``.
    max_steps:
        Most attempts before giving up (``RuntimeError``).
    max_step:
        Largest step size (reverse time); default no cap beyond the interval.
    per_unit_step:
        Scale the error estimate by :math:`\sqrt{(T - \epsilon)/h}` (error per unit step, see above).
    bm:
        A ``torchsde`` Brownian motion of size ``(batch, m * d)`` over :math:`[0, T - \epsilon]`; default a
        ``BrownianInterval`` (with the space-time Lévy area for ``"sscs"``) seeded from the ``generator``.

    Attributes
    ----------
    accepted, rejected:
        Step counts of the last solve.
    """

    needs_grid = False

    def __init__(self, method: str | Callable[..., Step] = "em", rtol: float = 1e-2, atol: float = 1e-2,
                 eps: float = 1e-3, h0: float = 1e-2, safety: float = 0.9, max_steps: int = 100_000, bm: object | None = None,
                 per_unit_step: bool = True, max_step: float | None = None) -> None:
        if not (method in ("em", "sscs") or (callable(method) and not isinstance(method, str))):
            raise ValueError(f"method must be 'em', 'sscs' or a factory f(reverse) -> Step, got {method!r}")
        self.method = method
        self.rtol = check_positive("rtol", rtol)
        if not self.rtol < 1.0:
            raise ValueError(f"rtol must be below 1 (a relative tolerance of 100% or more asks for no accuracy), "
                             f"got {rtol!r}")
        self.atol = check_positive("atol", atol)
        self.max_step = check_positive("max_step", max_step) if max_step is not None else math.inf
        self.eps = check_positive("eps", eps)
        self.h0 = check_positive("h0", h0)
        self.safety = check_positive("safety", safety)
        if self.safety > 1.0:
            raise ValueError(f"safety must be in (0, 1], got {safety!r}")
        self.max_steps = check_count("max_steps", max_steps)
        self.bm = bm
        self.per_unit_step = check_flag("per_unit_step", per_unit_step)
        self.accepted = self.rejected = 0

    # -- one attempt: a step of size h and two of size h / 2 on the same increments ---------------------------
    def _attempt_em(self, reverse, u, tau, h, source, m):
        starts = torch.tensor([tau, tau, tau + h / 2], dtype=torch.float64)
        spans = torch.tensor([h, h / 2, h / 2], dtype=torch.float64)
        M, C, L, score_times = reverse.euler_maruyama_tables(Intervals(starts, spans))
        G = L / spans.sqrt()[:, None, None]
        dW1, _ = source.increments(tau, h / 2, u, m)
        dW2, _ = source.increments(tau + h / 2, h / 2, u, m)
        s0 = reverse.evaluate_score(u, score_times[0])  # shared by the full step and the first half step
        coarse = apply_matrix(M[0], u) + apply_matrix(C[0], s0) + apply_matrix(G[0], dW1 + dW2)
        half = apply_matrix(M[1], u) + apply_matrix(C[1], s0) + apply_matrix(G[1], dW1)
        s1 = reverse.evaluate_score(half, score_times[2])
        fine = apply_matrix(M[2], half) + apply_matrix(C[2], s1) + apply_matrix(G[2], dW2)
        return coarse, fine, 2

    @staticmethod
    def _attempt_step(step: Step, u, tau, h, source):
        one = step.plan(Intervals.single(tau, h), u)
        two = step.plan(Intervals(torch.tensor([tau, tau + h / 2], dtype=torch.float64),
                                  torch.tensor([h / 2, h / 2], dtype=torch.float64)), u)
        before = evaluation_count(one, two)
        coarse = one(u, 0, source)
        fine = two(two(u, 0, source), 1, source)
        return coarse, fine, evaluation_count(one, two) - before

    def _step_of(self, reverse):
        if self.method == "em":
            return None
        if self.method == "sscs":
            return split_step(reverse)
        step = self.method(reverse)
        if not isinstance(step, Step):
            raise TypeError(f"method must return a splitdyn Step, got {type(step).__name__}")
        return step

    def _brownian(self, reverse, u, end, generator):
        import torchsde

        if self.bm is not None:
            return self.bm
        m = int(reverse.diffusion_matrix(0.0).shape[-1])
        d = math.prod(u.shape[2:])
        entropy = None
        if generator is not None:
            entropy = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())
        levy = "none" if self.method == "em" else "space-time"
        # t1 a hair past the end: tau + h / 2 + h / 2 may round above it on the last step
        return torchsde.BrownianInterval(t0=0.0, t1=end * (1 + 1e-12), size=(u.shape[0], m * d), dtype=u.dtype,
                                         device=u.device, entropy=entropy, levy_area_approximation=levy)

    def solve(self, reverse, u: torch.Tensor, times: list[float] | None, eps: float, *,
              generator: torch.Generator | None = None, progress: bool | str = False, callback=None,
              save_at=None) -> Solution:
        """Integrate the reverse SDE from reverse time 0 to :math:`T - \\epsilon` with adaptive steps."""
        if save_at is not None or progress:
            raise ValueError("the adaptive sampler picks its own steps: it saves no states and shows no progress "
                             "bar (pass a callback to see the accepted steps)")
        if not isinstance(reverse, ReverseSDE) or not reverse.linear:
            raise TypeError("the adaptive sampler needs the reverse SDE of a linear forward SDE")
        end = reverse.T - eps
        if not end > 0:
            raise ValueError(f"eps must be smaller than T = {reverse.T}, got {eps}")
        source = BrownianNoise(self._brownian(reverse, u, end, generator), generator)
        m = int(reverse.diffusion_matrix(0.0).shape[-1])
        step = self._step_of(reverse)
        order = _ORDER - 0.5 if self.per_unit_step else _ORDER
        tau, h, err_prev, nfe = 0.0, min(self.h0, end), 1.0, 0
        accepted_times = [0.0]
        self.accepted = self.rejected = 0
        while end - tau > 1e-12 * max(1.0, end):
            if self.accepted + self.rejected >= self.max_steps:
                raise RuntimeError(f"the adaptive sampler took {self.max_steps} attempts and reached reverse time "
                                   f"{tau:.6g} of {end:.6g}: loosen rtol/atol or raise max_steps")
            h = min(h, end - tau, self.max_step)
            if end - (tau + h) < 1e-9 * h:
                h = end - tau
            if step is None:
                coarse, fine, cost = self._attempt_em(reverse, u, tau, h, source, m)
            else:
                coarse, fine, cost = self._attempt_step(step, u, tau, h, source)
            nfe += cost
            scale = self.atol + self.rtol * torch.maximum(u.abs(), fine.abs())
            err = float(((fine - coarse) / scale).square().mean().sqrt())
            if self.per_unit_step:
                err *= math.sqrt(end / h)
            if not math.isfinite(err):
                raise FloatingPointError(f"the adaptive sampler's state became non-finite at reverse time {tau:.6g}")
            if err <= 1.0:
                u, tau = fine, tau + h
                self.accepted += 1
                accepted_times.append(tau)
                if callback is not None:
                    callback(self.accepted - 1, tau, u)
                factor = self.safety * max(err, 1e-10) ** (-0.7 / order) * err_prev ** (0.4 / order)
                err_prev = max(err, 1e-4)
            else:
                self.rejected += 1
                factor = max(0.2, self.safety * err ** (-1.0 / order))
            h *= min(5.0, max(0.2, factor))
        return Solution(state=u, nfe=nfe, times=accepted_times)
