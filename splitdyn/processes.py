r"""The standard one-component diffusion processes (VP, sub-VP, VE) as linear SDEs with closed-form kernels.

Each process is a :class:`~splitdyn.linear_sde.LinearSDEBase` with ``k = 1`` (states ``(batch, 1, *event)``)
and the scalar SDE :math:`dx = f(t)\,x\,dt + g(t)\,dw` of Song et al. (2021):

==========  ===============================  ====================================================  =============
process     drift :math:`f(t)`                diffusion :math:`g(t)^2`                               prior
==========  ===============================  ====================================================  =============
VP          :math:`-\tfrac12\beta(t)`         :math:`\beta(t)`                                      :math:`\mathcal N(0, I)`
sub-VP      :math:`-\tfrac12\beta(t)`         :math:`\beta(t)\,(1 - e^{-2B(t)})`                    :math:`\mathcal N(0, I)`
VE          :math:`0`                         :math:`d\sigma(t)^2/dt`                               :math:`\mathcal N(0, \sigma_{\max}^2 I)`
==========  ===============================  ====================================================  =============

with a rate :math:`\beta(t)` and its integral :math:`B(t) = \int_0^t \beta` given by a
:class:`~splitdyn.schedules.Schedule` (``schedule=``; default the linear rate
:math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min})\,t/T`), and for VE the noise scale
:math:`\sigma(t)` with :math:`B(t) = \sigma(t)^2 - \sigma(0)^2` (default the geometric
:math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t/T}`). Every process keeps its schedule in
the attribute ``schedule``; cosine, tabulated (diffusers' ``alphas_cumprod``) and EDM-style schedules are in
:mod:`splitdyn.schedules`.

Given :math:`x_0`, every process has the Gaussian marginal :math:`x_t = \alpha(t)\,x_0 + \sigma(t)\,\varepsilon`
(:meth:`DiffusionProcess.alpha`, :meth:`DiffusionProcess.sigma`), and the log signal-to-noise ratio is
:math:`\lambda(t) = \log(\alpha(t)/\sigma(t))`, decreasing from :math:`+\infty` at :math:`t = 0`:

* VP: :math:`\alpha = e^{-B/2}`, :math:`\sigma^2 = 1 - e^{-B}`, :math:`\lambda = -\tfrac12\log(e^B - 1)`;
* sub-VP: :math:`\alpha = e^{-B/2}`, :math:`\sigma = 1 - e^{-B}`, :math:`\sinh(B/2) = e^{-\lambda}/2`;
* VE: :math:`\alpha = 1`, :math:`\lambda = -\tfrac12\log B`, and :math:`\sigma(t)` **here denotes the kernel's standard deviation**
  :math:`\sqrt{\sigma_{\mathrm{geo}}(t)^2 - \sigma_{\min}^2}`, the exact law of the SDE started at
  :math:`x_0` at :math:`t = 0`; the geometric scale itself is :meth:`VESDE.noise_scale`.
  (Song et al.'s code instead uses :math:`\sigma_{\mathrm{geo}}(t)` as the marginal std, i.e. treats
  :math:`x_0` as already perturbed by :math:`\sigma_{\min}`; the two differ by :math:`\sigma_{\min}^2/2\sigma^2`
  relatively.)

All coefficients are computed in float64 on the CPU with ``expm1``/``log1p`` forms that keep full relative
precision near :math:`t = 0`, and cast to the state's dtype at use.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence

import torch

from .checks import as_float64, check_count, check_finite_tensor, check_positive, check_state, check_time
from .gaussian import PerturbationKernel, gaussian_log_prob
from .linear_sde import LinearSDE, LinearSDEBase
from .schedules import GeometricSigma, LinearBeta, Schedule, softplus
from .checks import check_sample_shape

__all__ = ["DiffusionProcess", "VPSDE", "SubVPSDE", "VESDE", "log_snr_bisection"]

_BISECTION_STEPS = 1100  # enough halvings of [0, T] to reach adjacent float64 numbers even near t = 0


def _process_schedule(name: str, schedule, defaults: tuple, given: dict, make) -> tuple[Schedule, float]:
    """The schedule of a process and its horizon: ``schedule`` (with ``T`` at most its own horizon, default
    the schedule's ``T`` or 1), or the default schedule built from the keyword parameters."""
    if schedule is None:
        values = {key: (default if given[key] is None else given[key]) for key, default in zip(given, defaults)}
        built = make(**values)
        return built, built.T
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a splitdyn.schedules.Schedule, got {type(schedule).__name__}")
    extra = [key for key in given if key != "T" and given[key] is not None]
    if extra:
        raise ValueError(f"{name}: pass either schedule or {', '.join(extra)} (the schedule's own parameters), "
                         "not both")
    own = getattr(schedule, "T", None)
    T = given["T"]
    if T is None:
        return schedule, float(own) if own is not None else 1.0
    T = check_positive("T", T)
    if own is not None and T > float(own) * (1 + 1e-12):
        raise ValueError(f"T must be at most the schedule's horizon {own}, got {T}")
    return schedule, T


def log_snr_bisection(process: "DiffusionProcess", lam: float | torch.Tensor) -> torch.Tensor:
    r"""The time :math:`t \in [0, T]` with :math:`\lambda(t) = \lambda`, by bisection on the decreasing
    :meth:`DiffusionProcess.log_snr` (float64, same shape as ``lam``).

    The generic inverse for processes without a closed form, and an independent check of the closed forms.
    Values of :math:`\lambda` below :math:`\lambda(T)` give ``T``; bisection stops when the bracket is two
    adjacent float64 numbers.
    """
    if not isinstance(process, DiffusionProcess):
        raise TypeError(f"process must be a DiffusionProcess, got {type(process).__name__}")
    lam = as_float64("lam", lam, "a real number or a tensor of log-SNR values")
    lo = torch.zeros_like(lam)
    hi = torch.full_like(lam, process.T)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if bool(((mid == lo) | (mid == hi)).all()):
            break
        above = process._log_snr(mid) > lam
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return hi


class DiffusionProcess(LinearSDEBase):
    r"""A one-component (``k = 1``) diffusion process with marginals :math:`x_t = \alpha(t)x_0 + \sigma(t)\varepsilon`.

    Subclasses give the coefficients (``_alpha``, ``_sigma``, ``_log_snr``), the kernels, and
    ``prior_std``; this class adds the prior, the perturbation kernel and the log-SNR inverse (by bisection
    unless overridden with a closed form).

    Attributes
    ----------
    prior_std:
        Standard deviation of the Gaussian prior :math:`\mathcal{N}(0, \sigma_{\mathrm{prior}}^2 I)`.
    schedule:
        The :class:`~splitdyn.schedules.Schedule` giving :math:`\beta(t)` and :math:`B(t)`.
    """

    num_components = 1
    prior_std: float
    schedule: Schedule

    @abstractmethod
    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha(t) for float64 times, unchecked."""

    @abstractmethod
    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) for float64 times, unchecked."""

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) for float64 times, unchecked (subclasses override with cancellation-free forms)."""
        return torch.log(self._alpha(t)) - torch.log(self._sigma(t))

    def alpha(self, t: float | torch.Tensor) -> torch.Tensor:
        r"""The signal coefficient :math:`\alpha(t)` of :math:`x_t = \alpha(t) x_0 + \sigma(t)\varepsilon` (float64)."""
        return self._alpha(check_time("t", t, self.T))

    def sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        r"""The noise coefficient :math:`\sigma(t)`, the standard deviation of :math:`x_t` given :math:`x_0` (float64)."""
        return self._sigma(check_time("t", t, self.T))

    def log_snr(self, t: float | torch.Tensor) -> torch.Tensor:
        r"""The log signal-to-noise ratio :math:`\lambda(t) = \log(\alpha(t)/\sigma(t))` (float64; :math:`+\infty` at 0)."""
        return self._log_snr(check_time("t", t, self.T))

    def time_from_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        r"""The inverse of :meth:`log_snr`: the time :math:`t` with :math:`\lambda(t) = \lambda` (float64).

        ``lam`` must be finite and at least :math:`\lambda(T)`. This generic version bisects
        (:func:`log_snr_bisection`); the built-in processes override it with closed forms.
        """
        lam = self._check_log_snr(lam)
        return log_snr_bisection(self, lam)

    def _check_log_snr(self, lam) -> torch.Tensor:
        lam = as_float64("lam", lam, "a real number or a tensor of log-SNR values")
        lowest = float(self._log_snr(torch.tensor(self.T, dtype=torch.float64)))
        if lam.numel() and bool((lam < lowest - 1e-12 * max(1.0, abs(lowest))).any()):
            raise ValueError(f"lam must be at least log_snr(T) = {lowest:.6g} (times beyond T), got min "
                             f"{lam.min().item():.6g}")
        return lam

    # -- prior ---------------------------------------------------------------------------------------
    def prior_sample(self, shape: Sequence[int], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                     device=None) -> torch.Tensor:
        r"""Samples of the prior :math:`\mathcal{N}(0, \sigma_{\mathrm{prior}}^2 I)` as states ``(batch, 1, *event)``.

        Parameters
        ----------
        shape:
            ``(batch, *event_shape)``, positive integers.
        generator, dtype, device:
            Passed to ``torch.randn``.
        """
        shape = check_sample_shape("shape", shape, components=1, dtype=dtype, device=device, generator=generator)
        try:
            dims = tuple(shape)
        except TypeError:
            raise TypeError(f"shape must be a sequence (batch, *event_shape), got {type(shape).__name__}") from None
        if not dims:
            raise ValueError("shape must be (batch, *event_shape) with at least the batch size, got ()")
        dims = tuple(check_count(f"shape[{i}]", s) for i, s in enumerate(dims))
        u = torch.randn((dims[0], 1, *dims[1:]), generator=generator, dtype=dtype, device=device)
        return u * self.prior_std

    def prior_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        r"""Log density of states ``u`` (``(batch, 1, *event)``) under the prior (float64, shape ``(batch,)``)."""
        check_state("u", u, 1)
        check_finite_tensor("u", u)
        return gaussian_log_prob(u, torch.tensor([[self.prior_std**2]], dtype=torch.float64))

    def perturbation_kernel(self, t: float | torch.Tensor, x0: torch.Tensor, eps_num: float = 0.0) -> PerturbationKernel:
        r"""The perturbation kernel :math:`p_t(x_t \mid x_0) = \mathcal{N}(\alpha(t)x_0, \sigma(t)^2 I)`.

        Parameters
        ----------
        t:
            A time in ``[0, T]`` or a ``(batch,)`` tensor of per-sample times.
        x0:
            Data of shape ``(batch, *event_shape)``.
        eps_num:
            Stabiliser added to the variance before factorising (see :class:`~splitdyn.gaussian.PerturbationKernel`).
        """
        if not isinstance(x0, torch.Tensor):
            raise TypeError(f"x0 must be a torch.Tensor of shape (batch, *event_shape), got {type(x0).__name__}")
        if x0.ndim < 1:
            raise ValueError("x0 must have shape (batch, *event_shape), got a 0-d tensor")
        return PerturbationKernel(self, t, x0.unsqueeze(1), eps_num=eps_num)

    # -- kernels from (Phi, Q) closed forms ------------------------------------------------------------
    @abstractmethod
    def _kernel(self, t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form scalar (Phi, Q) for checked, broadcast float64 times."""

    def kernel(self, t, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The closed-form :math:`(\Phi(t, s), Q(t, s))`, float64 of shape ``broadcast(t, s).shape + (1, 1)``."""
        t, s = self._check_interval(t, s)
        Phi, Q = self._kernel(t, s)
        return Phi[..., None, None], Q[..., None, None]

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[0]

    def noise_covariance(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[1]


class VPSDE(LinearSDE, DiffusionProcess):
    r"""The variance-preserving SDE :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw` (Song et al. 2021).

    A :class:`~splitdyn.linear_sde.LinearSDE` with :math:`F = -\tfrac12`, :math:`G = 1` and a
    :class:`~splitdyn.schedules.Schedule` :math:`\beta(t)` (default the linear
    :math:`\beta(t) = \beta_{\min} + (\beta_{\max} - \beta_{\min})t/T`); its kernels are the closed forms
    :math:`\Phi(t, s) = e^{-\Delta B/2}`, :math:`Q(t, s) = 1 - e^{-\Delta B}` with :math:`\Delta B = B(t) - B(s)`,
    so :math:`\bar\alpha(t) = \alpha(t)^2 = e^{-B(t)}`. The prior is :math:`\mathcal{N}(0, I)`.

    Parameters
    ----------
    beta_min, beta_max:
        The linear rate's :math:`0 \le \beta_{\min} \le \beta_{\max}`, :math:`\beta_{\max} > 0` (defaults
        ``0.1``, ``20``); not with ``schedule``.
    T:
        Time horizon (default ``1``, or the schedule's ``T``; with a schedule it may cut the schedule short).
    schedule:
        Any :class:`~splitdyn.schedules.Schedule` (e.g. :class:`~splitdyn.schedules.CosineSchedule`,
        :class:`~splitdyn.schedules.DiscreteSchedule`).

    Examples
    --------
    >>> from splitdyn import VPSDE
    >>> from splitdyn.schedules import CosineSchedule
    >>> vp = VPSDE(schedule=CosineSchedule())
    >>> float(vp.time_from_log_snr(vp.log_snr(0.5)))
    0.5
    """

    prior_std = 1.0

    def __init__(self, beta_min: float | None = None, beta_max: float | None = None, T: float | None = None, *,
                 schedule: Schedule | None = None) -> None:
        schedule, horizon = _process_schedule("VPSDE", schedule, (0.1, 20.0, 1.0),
                                              {"beta_min": beta_min, "beta_max": beta_max, "T": T}, LinearBeta)
        super().__init__([[-0.5]], [[1.0]], schedule, horizon)

    @property
    def schedule(self) -> Schedule:  # type: ignore[override]
        """The :class:`~splitdyn.schedules.Schedule` (the same object as ``rescaling``)."""
        return self.rescaling

    def __repr__(self) -> str:
        if isinstance(self.rescaling, LinearBeta) and self.rescaling.T == self.T:
            return f"VPSDE(beta_min={self.rescaling.beta_min}, beta_max={self.rescaling.beta_max}, T={self.T})"
        return f"VPSDE(schedule={self.rescaling!r}, T={self.T})"

    def _kernel(self, t, s):
        delta = self.rescaling.increment(t, s)
        return torch.exp(-0.5 * delta), -torch.expm1(-delta)

    def kernel(self, t, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        return DiffusionProcess.kernel(self, t, s)

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[0]

    def noise_covariance(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[1]

    def _alpha(self, t):
        return torch.exp(-0.5 * self.rescaling.integral(t))

    def _sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.rescaling.integral(t)))

    def _log_snr(self, t):
        B = self.rescaling.integral(t)
        return -0.5 * (B + torch.log(-torch.expm1(-B)))  # = -log(expm1(B)) / 2 without overflow

    def time_from_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        r"""Closed form: :math:`B = \log(1 + e^{-2\lambda})`, then the schedule's inverse of :math:`B(t) = B`."""
        lam = self._check_log_snr(lam)
        return self.rescaling.inverse_integral(softplus(-2.0 * lam)).clamp(0.0, self.T)


class SubVPSDE(DiffusionProcess):
    r"""The sub-VP SDE :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dw` (Song et al. 2021).

    Its diffusion is not :math:`\beta(t)` times a constant, so it is not a time-rescaled
    :class:`~splitdyn.linear_sde.LinearSDE`. The kernels have the closed forms
    :math:`\Phi(t, s) = e^{-\Delta B/2}` and

    .. math::

        Q(t, s) = \int_s^t e^{-(B(t) - B(r))}\beta(r)(1 - e^{-2B(r)})\,dr
        = (1 - e^{-\Delta B})(1 - e^{-(B(t) + B(s))}),

    so :math:`\sigma(t) = Q(t, 0)^{1/2} = 1 - e^{-B(t)}`, below the VP's :math:`(1 - e^{-B})^{1/2}`.
    The prior is :math:`\mathcal{N}(0, I)`.

    Parameters
    ----------
    beta_min, beta_max, T, schedule:
        As for :class:`VPSDE`.
    """

    prior_std = 1.0

    def __init__(self, beta_min: float | None = None, beta_max: float | None = None, T: float | None = None, *,
                 schedule: Schedule | None = None) -> None:
        self.schedule, self.T = _process_schedule("SubVPSDE", schedule, (0.1, 20.0, 1.0),
                                                  {"beta_min": beta_min, "beta_max": beta_max, "T": T}, LinearBeta)

    def __repr__(self) -> str:
        if isinstance(self.schedule, LinearBeta) and self.schedule.T == self.T:
            return f"SubVPSDE(beta_min={self.schedule.beta_min}, beta_max={self.schedule.beta_max}, T={self.T})"
        return f"SubVPSDE(schedule={self.schedule!r}, T={self.T})"

    def beta(self, t: float | torch.Tensor) -> torch.Tensor:
        r"""The rate :math:`\beta(t)` (float64)."""
        return self.schedule.beta(check_time("t", t, self.T))

    def _drift_matrix(self, t):
        return (-0.5 * self.schedule.beta(t))[..., None, None]

    def _diffusion_matrix(self, t):
        g2 = self.schedule.beta(t) * -torch.expm1(-2.0 * self.schedule.integral(t))
        return g2.clamp_min(0.0).sqrt()[..., None, None]

    def _kernel(self, t, s):
        delta = self.schedule.increment(t, s)
        total = self.schedule.integral(t) + self.schedule.integral(s)
        return torch.exp(-0.5 * delta), torch.expm1(-delta) * torch.expm1(-total)

    def _alpha(self, t):
        return torch.exp(-0.5 * self.schedule.integral(t))

    def _sigma(self, t):
        return -torch.expm1(-self.schedule.integral(t))

    def _log_snr(self, t):
        B = self.schedule.integral(t)
        return -0.5 * B - torch.log(-torch.expm1(-B))

    def time_from_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        r"""Closed form: :math:`\alpha/\sigma = 1/(2\sinh(B/2))`, so :math:`B = 2\,\mathrm{asinh}(e^{-\lambda}/2)`,
        then the schedule's inverse of :math:`B(t) = B`."""
        lam = self._check_log_snr(lam)
        # asinh(e^{-lam}/2) = -lam + O(e^{2 lam}) once e^{-lam} would overflow
        B = torch.where(lam < -300.0, -2.0 * lam, 2.0 * torch.asinh(0.5 * torch.exp(-lam.clamp_min(-300.0))))
        return self.schedule.inverse_integral(B).clamp(0.0, self.T)


class VESDE(LinearSDE, DiffusionProcess):
    r"""The variance-exploding SDE :math:`dx = \sqrt{d\sigma(t)^2/dt}\,dw` (Song et al. 2021).

    A :class:`~splitdyn.linear_sde.LinearSDE` with :math:`F = 0`, :math:`G = 1` and the rate
    :math:`\beta(t) = d\sigma^2/dt` of a :class:`~splitdyn.schedules.Schedule` (default the
    :class:`~splitdyn.schedules.GeometricSigma` :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t/T}`;
    :class:`~splitdyn.schedules.LinearSigma` gives EDM's :math:`\sigma(t) = t`). Its kernels are
    :math:`\Phi = 1`, :math:`Q(t, s) = B(t) - B(s) = \sigma(t)^2 - \sigma(s)^2`. Here :meth:`sigma` is the
    kernel's standard deviation :math:`\sqrt{B(t)} = \sqrt{\sigma(t)^2 - \sigma(0)^2}` (see the module notes)
    and :meth:`noise_scale` the schedule's :math:`\sigma(t)`. The prior is
    :math:`\mathcal{N}(0, \sigma(T)^2 I)`.

    Parameters
    ----------
    sigma_min, sigma_max:
        :math:`0 < \sigma_{\min} < \sigma_{\max}` of the geometric schedule (defaults ``0.01``, ``50``); not
        with ``schedule``.
    T:
        Time horizon (default ``1``, or the schedule's ``T``).
    schedule:
        Any :class:`~splitdyn.schedules.Schedule` whose integral is the kernel variance from 0; with a
        ``sigma(t)`` method (the noise scale) it gives :meth:`noise_scale` and the prior.
    """

    def __init__(self, sigma_min: float | None = None, sigma_max: float | None = None, T: float | None = None, *,
                 schedule: Schedule | None = None) -> None:
        schedule, horizon = _process_schedule("VESDE", schedule, (0.01, 50.0, 1.0),
                                              {"sigma_min": sigma_min, "sigma_max": sigma_max, "T": T}, GeometricSigma)
        super().__init__([[0.0]], [[1.0]], schedule, horizon)
        own_max, own_T = getattr(schedule, "sigma_max", None), getattr(schedule, "T", None)
        if own_max is not None and own_T is not None and float(own_T) == self.T:
            self.prior_std = float(own_max)  # exactly sigma_max, not its recomputation
        else:
            self.prior_std = float(self.noise_scale(self.T))

    @property
    def schedule(self) -> Schedule:  # type: ignore[override]
        """The :class:`~splitdyn.schedules.Schedule` (the same object as ``rescaling``)."""
        return self.rescaling

    def __repr__(self) -> str:
        if isinstance(self.rescaling, GeometricSigma) and self.rescaling.T == self.T:
            return f"VESDE(sigma_min={self.rescaling.sigma_min}, sigma_max={self.rescaling.sigma_max}, T={self.T})"
        return f"VESDE(schedule={self.rescaling!r}, T={self.T})"

    def noise_scale(self, t: float | torch.Tensor) -> torch.Tensor:
        r"""The schedule's noise scale :math:`\sigma(t)` (its ``sigma`` method; else :math:`\sqrt{B(t)}`; float64)."""
        t = check_time("t", t, self.T)
        sigma = getattr(self.rescaling, "sigma", None)
        return sigma(t) if callable(sigma) else self.rescaling.integral(t).sqrt()

    def _kernel(self, t, s):
        delta = self.rescaling.increment(t, s)
        return torch.ones_like(delta), delta

    def kernel(self, t, s=0.0) -> tuple[torch.Tensor, torch.Tensor]:
        return DiffusionProcess.kernel(self, t, s)

    def transition_matrix(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[0]

    def noise_covariance(self, t, s=0.0) -> torch.Tensor:
        return self.kernel(t, s)[1]

    def _alpha(self, t):
        return torch.ones_like(t)

    def _sigma(self, t):
        return self.rescaling.integral(t).sqrt()

    def _log_snr(self, t):
        return -0.5 * torch.log(self.rescaling.integral(t))

    def time_from_log_snr(self, lam: float | torch.Tensor) -> torch.Tensor:
        r"""Closed form: :math:`B = e^{-2\lambda}`, then the schedule's inverse of :math:`B(t) = B` (for the
        geometric schedule :math:`t = \log(1 + e^{-2\lambda}/\sigma_{\min}^2)/(2c)`)."""
        lam = self._check_log_snr(lam)
        if isinstance(self.rescaling, GeometricSigma):  # log1p form: no overflow of e^{-2 lam} for lam << 0
            g = self.rescaling
            t = softplus(-2.0 * (lam + math.log(g.sigma_min))) / (2.0 * g.rate)
        else:
            t = self.rescaling.inverse_integral(torch.exp(-2.0 * lam))
        return t.clamp(0.0, self.T)
