r"""Warm-up: step size, mass matrix and trajectory length tuned across all chains at once.

:func:`warmup` runs a kernel (:class:`~splitdyn.mcmc.MALA`, :class:`~splitdyn.mcmc.HMC`,
:class:`~splitdyn.mcmc.GHMC` or a :class:`~splitdyn.mcmc.KineticLangevin` splitting) from a state of many
chains and returns a :class:`WarmupResult`: the tuned kernel, its parameters as plain data (so a run can be
replayed with :func:`tuned_step` without tuning again), the final state and the gradients spent. Every
chain shares one step size and one mass matrix, estimated from all chains together, so 1000 chains on one
device tune as fast as one chain would (in iterations) and with far less noise.

**Step size of the Metropolis kernels: dual averaging** (Nesterov 2009, as adapted by Hoffman & Gelman 2014,
Algorithm 5). With :math:`\bar\alpha_t` the mean over chains of :math:`\min(1, \alpha)` at iteration
:math:`t` and the target :math:`\delta`,

.. math::

    \bar H_t = (1 - \tfrac{1}{t + t_0})\bar H_{t-1} + \tfrac{\delta - \bar\alpha_t}{t + t_0}, \qquad
    \log h_t = \mu - \tfrac{\sqrt t}{\gamma}\bar H_t, \qquad
    \log\bar h_t = t^{-\kappa}\log h_t + (1 - t^{-\kappa})\log\bar h_{t-1},

with :math:`\gamma = 0.05`, :math:`t_0 = 10`, :math:`\kappa = 0.75`, :math:`\mu = \log(10 h_0)` (their
values), restarted after each mass-matrix update; the tuned step is the final :math:`\bar h`. Default
targets :math:`\delta` (:data:`TARGET_ACCEPTANCE`):

- MALA 0.574, the optimal acceptance rate of MALA in high dimension (Roberts & Rosenthal 1998);
- HMC 0.8: the asymptotically optimal value is 0.651 (Beskos et al. 2013), but it assumes the limit
  :math:`d \to \infty` and a product target; Stan, PyMC and numpyro use 0.8 because slightly smaller steps
  cost little and make divergences in curved posteriors much rarer;
- GHMC 0.9: a rejection reverses the momentum, which undoes the persistence that makes GHMC efficient
  (Horowitz 1991; Neal 2011, Sec. 5.5.3), so it wants fewer rejections than HMC.

**Step size of unadjusted kinetic Langevin: energy-error tuning** (as in the MCLMC tuner of Robnik et al.
2023). Without a Metropolis test there is no acceptance rate; the error of a step shows in the energy error
of its deterministic parts, :math:`\Delta E` (:mod:`splitdyn.mcmc.underdamped`: the change of :math:`H` over
a step less what its O parts change). For a second-order splitting :math:`\mathrm E[\Delta E^2] \approx c\,h^6`,
so with :math:`\xi_t` the mean over chains of :math:`\Delta E^2 / d` the tuner keeps an exponentially
weighted estimate of :math:`c = \xi_t / h_t^6` (weight 0.95 per iteration) and sets
:math:`h = (\xi^\star / \hat c)^{1/6}`. The default :math:`\xi^\star = 5\cdot10^{-4}` per dimension
(MCLMC's default) keeps the bias of the stationary law small (a few per cent on the variances of a
Gaussian; measured in ``tests/test_mcmc_adaptation.py``); a non-finite energy error halves the step.

**Mass matrix: windowed variance estimates** with Stan's schedule (Stan Reference Manual, "HMC algorithm
parameters"): an initial fast interval of 75 iterations (step size only), slow windows of 25, 50, 100, ...
iterations (the last one stretched to the end of the slow phase) at whose ends :math:`M^{-1}` is set to the
positions' variance (``"diagonal"``) or covariance (``"dense"``) over that window, pooled across all
chains, and a final fast interval of 50 iterations. For ``n_steps < 150`` the three phases take 15%, 75% and
10% of the iterations, as Stan does. The estimate is regularised towards :math:`10^{-3} I` as in Stan:
:math:`\frac{n}{n + 5}\hat\Sigma + 10^{-3}\frac{5}{n + 5} I` with :math:`n` the pooled draws.

**HMC trajectory length**: jittered by default (see :class:`~splitdyn.mcmc.HMC`), with the number of
leapfrog steps kept; ``trajectory="chees"`` adapts the trajectory length :math:`T = Lh` across chains
after the ChEES criterion of Hoffman, Radul & Sountsov (2021),
:math:`C(T) = \mathrm E[(|q' - \mathrm Eq|^2 - |q - \mathrm Eq|^2)^2]/4`, here per unit of trajectory length,
:math:`C(T)/T` (ChEES per gradient: with jittered lengths :math:`C` flattens out for long trajectories and
its maximiser drifts, while :math:`C/T` has a finite maximiser, near :math:`T = 1` for a standard Gaussian).
Iteration :math:`t` runs :math:`\lceil 2u_tT/h\rceil` leapfrog steps (:math:`u_t` the van der Corput
sequence, so lengths are uniform on :math:`(0, 2T)`); from all chains, with :math:`a_c` their acceptance
probabilities normalised to sum to one, :math:`\Delta_c = |q'_c - \bar q'|^2 - |q_c - \bar q|^2`,
:math:`\hat C = \sum_c a_c\Delta_c^2/4` and :math:`\widehat{C'} = 2u_t\sum_c a_c\Delta_c(q'_c - \bar q')\cdot
M^{-1}p'_c`; exponential averages (weight 0.9) of both give the gradient :math:`T\overline{C'}/\overline C - 1` of
:math:`\log(C/T)` in :math:`\log T`, which Adam follows (learning rate 0.025, :math:`\beta_1 = 0`,
:math:`\beta_2 = 0.95`); the tuned :math:`T` is the geometric mean over the final fast interval. It needs at
least 2 chains and is meant for many; it is an option (the estimate is noisy with few chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import check_count, check_positive
from ..steps.base import Intervals
from ..steps.noise import as_noise_source
from .hamiltonian import GHMC, HMC, van_der_corput
from .metric import MassMatrix
from .metropolis import MALA
from .state import ChainState, CountedPotential, TransitionInfo
from .underdamped import KineticLangevin

__all__ = ["TARGET_ACCEPTANCE", "DualAveraging", "WindowedCovariance", "window_schedule", "WarmupResult", "warmup",
           "tuned_step"]

#: Default target acceptance of the Metropolis kernels (justified in the module docstring).
TARGET_ACCEPTANCE = {"MALA": 0.574, "HMC": 0.8, "GHMC": 0.9}


class DualAveraging:
    r"""Dual averaging of :math:`\log h` towards a target acceptance (Hoffman & Gelman 2014, Algorithm 5).

    Parameters
    ----------
    step_size:
        The initial :math:`h_0 > 0` (:math:`\mu = \log(10 h_0)`).
    target:
        The target acceptance :math:`\delta \in (0, 1)`.
    gamma, t0, kappa:
        The averaging constants (defaults from the paper).
    """

    def __init__(self, step_size: float, target: float, gamma: float = 0.05, t0: float = 10.0,
                 kappa: float = 0.75) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target acceptance must be in (0, 1), got {target}")
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: float) -> None:
        """Start again from ``step_size`` (after a mass-matrix update)."""
        self.mu = math.log(10.0 * step_size)
        self.t, self.H, self.log_h, self.log_h_bar = 0, 0.0, math.log(step_size), math.log(step_size)

    def update(self, acceptance: float) -> float:
        """Feed the mean acceptance probability of the last iteration; returns the next step size."""
        self.t += 1
        t = self.t
        acceptance = 0.0 if not math.isfinite(acceptance) else min(1.0, max(0.0, acceptance))
        self.H = (1.0 - 1.0 / (t + self.t0)) * self.H + (self.target - acceptance) / (t + self.t0)
        self.log_h = self.mu - math.sqrt(t) / self.gamma * self.H
        weight = t ** (-self.kappa)
        self.log_h_bar = weight * self.log_h + (1.0 - weight) * self.log_h_bar
        return math.exp(self.log_h)

    @property
    def step_size(self) -> float:
        """The averaged step size :math:`\\bar h` (what warm-up keeps)."""
        return math.exp(self.log_h_bar)


class WindowedCovariance:
    """Running mean and (co)variance of positions pooled over chains and iterations (Chan et al.'s batch update,
    float64 on the positions' device).

    Parameters
    ----------
    dense:
        Keep the full covariance of the flattened event instead of the variances.
    """

    def __init__(self, dense: bool = False) -> None:
        self.dense = dense
        self.reset()

    def reset(self) -> None:
        """Forget the draws."""
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add the positions ``(chains, *event)`` of one iteration."""
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        nb = flat.shape[0]
        mean_b = flat.mean(0)
        centred = flat - mean_b
        m2_b = centred.T @ centred if self.dense else centred.square().sum(0)
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (nb / n)
        outer = torch.outer(delta, delta) if self.dense else delta.square()
        self.m2 = self.m2 + m2_b + outer * (self.n * nb / n)
        self.n = n

    def estimate(self, regularise: bool = True) -> torch.Tensor:
        """The (co)variance, regularised towards ``1e-3 I`` as in Stan (float64, flat event)."""
        if self.n < 2 or self.m2 is None:
            raise ValueError("a variance estimate needs at least 2 draws")
        cov = self.m2 / (self.n - 1)
        if not regularise:
            return cov
        w = self.n / (self.n + 5.0)
        if self.dense:
            return w * cov + 1e-3 * (1.0 - w) * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return w * cov + 1e-3 * (1.0 - w)


def window_schedule(n_steps: int, initial: int = 75, final: int = 50, base: int = 25) -> list[tuple[int, int]]:
    """Stan's slow windows ``[(start, end), ...]`` for ``n_steps`` warm-up iterations (module docstring).

    Returns an empty list when there is no room for a slow window (``n_steps < 20``).
    """
    n = check_count("n_steps", n_steps)
    if n < 20:
        return []
    if initial + final + base > n:
        initial, final = int(0.15 * n), int(0.1 * n)
        base = n - initial - final
    windows, start, size = [], initial, base
    end_slow = n - final
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:  # the next window would not fit: stretch this one to the end
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


@dataclass
class WarmupResult:
    """What :func:`warmup` returns.

    Attributes
    ----------
    step:
        The tuned kernel (run it with :func:`~splitdyn.mcmc.run_chain` and ``step_size``).
    step_size:
        The tuned step size :math:`h`.
    parameters:
        The tuned parameters as data: ``kind``, ``step_size``, ``inverse_mass`` (a float or a float64 tensor),
        ``n_leapfrog``, ``jitter``, ``friction``, ``sequence``; :func:`tuned_step` rebuilds the kernel from it.
    state:
        The final state ``(chains, k, *event)`` (start sampling from it).
    nfe:
        Gradient evaluations spent by the warm-up.
    acceptance:
        Mean acceptance probability over the final fast interval (Metropolis kernels), else ``None``.
    energy_variance:
        Mean :math:`\\Delta E^2 / d` over the final fast interval (kinetic Langevin), else ``None``.
    trace:
        Per-iteration step sizes (and, with ChEES, trajectory lengths) of the warm-up.
    """

    step: Any
    step_size: float
    parameters: dict
    state: torch.Tensor
    nfe: int
    acceptance: float | None = None
    energy_variance: float | None = None
    trace: dict = field(default_factory=dict)


def _kind(step) -> str:
    for cls, name in ((MALA, "MALA"), (HMC, "HMC"), (GHMC, "GHMC"), (KineticLangevin, "KineticLangevin")):
        if isinstance(step, cls):
            return name
    raise TypeError(f"step must be a MALA, HMC, GHMC or KineticLangevin kernel to warm up, got {type(step).__name__}")


def tuned_step(potential, parameters: dict):
    """The kernel described by ``parameters`` (:attr:`WarmupResult.parameters`) for ``potential``: a warm-up
    replayed without tuning again."""
    if not isinstance(parameters, dict) or "kind" not in parameters:
        raise TypeError("parameters must be the dict of WarmupResult.parameters")
    kind, inverse = parameters["kind"], parameters["inverse_mass"]
    metric = MassMatrix(inverse, dense=parameters.get("dense"))
    if kind == "MALA":
        return MALA(potential, inverse_mass=metric)
    if kind == "HMC":
        return HMC(potential, parameters["n_leapfrog"], inverse_mass=metric, jitter=parameters["jitter"])
    if kind == "GHMC":
        return GHMC(potential, parameters["friction"], n_leapfrog=parameters["n_leapfrog"], inverse_mass=metric)
    if kind == "KineticLangevin":
        return KineticLangevin(potential, parameters["sequence"], parameters["friction"], inverse_mass=metric)
    raise ValueError(f"unknown kernel kind {kind!r} in parameters")


def _with_metric(step, kind: str, metric: MassMatrix, n_leapfrog: int | None = None):
    if kind == "MALA":
        return MALA(step.potential, inverse_mass=metric)
    if kind == "HMC":
        return HMC(step.potential, n_leapfrog or step.n_leapfrog, inverse_mass=metric, jitter=step.jitter)
    if kind == "GHMC":
        return GHMC(step.potential, step.friction, n_leapfrog=step.n_leapfrog, inverse_mass=metric)
    return KineticLangevin(step.potential, step.sequence, step.friction, inverse_mass=metric)


def _metric_from(estimate: torch.Tensor, event_shape, dense: bool) -> MassMatrix:
    cpu = estimate.detach().to("cpu", torch.float64)
    if dense:
        return MassMatrix(0.5 * (cpu + cpu.T), dense=True)
    return MassMatrix(cpu.reshape(event_shape), dense=False)


class _Counter:
    def __init__(self) -> None:
        self.evaluations = 0
        self.energy_evaluations = 0


def _mean_acceptance(info: TransitionInfo) -> float:
    clean = torch.nan_to_num(info.log_acceptance, nan=-math.inf).clamp(max=0.0).exp()
    return float(clean.mean())


def warmup(step, u: torch.Tensor, n_steps: int = 1000, *, step_size: float | None = None,
           target_acceptance: float | None = None, mass_matrix: str | None = "diagonal",
           trajectory: str = "jitter", energy_variance: float = 5e-4,
           generator: torch.Generator | None = None, progress: bool = False) -> WarmupResult:
    r"""Tune ``step``'s step size and mass matrix (and HMC's trajectory length) in ``n_steps`` warm-up iterations.

    Parameters
    ----------
    step:
        A :class:`~splitdyn.mcmc.MALA`, :class:`~splitdyn.mcmc.HMC`, :class:`~splitdyn.mcmc.GHMC` or
        :class:`~splitdyn.mcmc.KineticLangevin` kernel (its potential, friction, sequence and number of
        leapfrog steps are kept; its mass matrix is the starting point).
    u:
        Initial state ``(chains, 1, *event)`` (``(chains, 2, *event)`` for GHMC and kinetic Langevin).
    n_steps:
        Warm-up iterations (Stan's default 1000; a few hundred suffice with many chains).
    step_size:
        Initial step size; default: found by doubling or halving from 0.1 until the mean acceptance crosses
        0.5 (Metropolis kernels) or the energy error crosses its target (kinetic Langevin).
    target_acceptance:
        Target of dual averaging (default :data:`TARGET_ACCEPTANCE` for the kernel).
    mass_matrix:
        ``"diagonal"`` (default), ``"dense"``, or ``None`` to keep the kernel's own.
    trajectory:
        HMC only: ``"jitter"`` (keep the number of leapfrog steps; jittered if the kernel is) or ``"chees"``
        (adapt the trajectory length across chains, module docstring).
    energy_variance:
        Kinetic Langevin only: the target :math:`\xi^\star` of :math:`\mathrm E[\Delta E^2]/d`.
    generator:
        ``torch.Generator`` on ``u``'s device (the warm-up is deterministic given it).
    progress:
        Show a tqdm progress bar.

    Returns
    -------
    WarmupResult

    Examples
    --------
    >>> import torch
    >>> from splitdyn.mcmc import MALA, Potential, run_chain, warmup
    >>> target = Potential(lambda x: 0.5 * (x**2 / torch.tensor([0.01, 1.0])).sum(-1))
    >>> tuned = warmup(MALA(target), torch.zeros(64, 1, 2), 300, generator=torch.Generator().manual_seed(0))
    >>> tuned.step.mass_matrix.kind, round(tuned.acceptance, 1)
    ('diagonal', 0.6)
    >>> out = run_chain(tuned.step, tuned.state, 200, tuned.step_size, generator=torch.Generator().manual_seed(1))
    """
    kind = _kind(step)
    n_steps = check_count("n_steps", n_steps)
    if not isinstance(u, torch.Tensor) or not u.is_floating_point() or u.ndim < 3:
        raise ValueError("u must be a floating state tensor (chains, k, *event)")
    components = 2 if kind in ("GHMC", "KineticLangevin") else 1
    if u.shape[1] != components:
        raise ValueError(f"u must have shape (chains, {components}, *event) for {kind}, got {tuple(u.shape)}")
    if mass_matrix not in (None, "diagonal", "dense"):
        raise ValueError(f"mass_matrix must be 'diagonal', 'dense' or None, got {mass_matrix!r}")
    if trajectory not in ("jitter", "chees"):
        raise ValueError(f"trajectory must be 'jitter' or 'chees', got {trajectory!r}")
    if trajectory == "chees" and kind != "HMC":
        raise ValueError("trajectory='chees' adapts HMC's trajectory length; the kernel is " + kind)
    if trajectory == "chees" and u.shape[0] < 2:
        raise ValueError("trajectory='chees' estimates its criterion across chains: it needs at least 2 chains")
    if step_size is not None:
        step_size = check_positive("step_size", step_size)
    energy_variance = check_positive("energy_variance", energy_variance)
    if kind == "KineticLangevin":
        return _warmup_kinetic(step, u, n_steps, step_size, mass_matrix, energy_variance, generator,
                               _iterations(n_steps, progress))
    target = TARGET_ACCEPTANCE[kind] if target_acceptance is None else float(target_acceptance)
    return _warmup_metropolis(step, kind, u, n_steps, step_size, target, mass_matrix, trajectory, generator,
                              _iterations(n_steps, progress))


def _iterations(n_steps: int, progress: bool):
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if not progress:
        return range(n_steps)
    from tqdm.auto import tqdm

    return tqdm(range(n_steps), desc="warm-up", leave=False)


def _phases(n_steps: int, adapt_mass: bool):
    windows = window_schedule(n_steps) if adapt_mass else []
    ends = {end for _, end in windows}
    slow = [False] * n_steps
    for start, end in windows:
        for t in range(start, end):
            slow[t] = True
    final_start = windows[-1][1] if windows else max(0, n_steps - max(1, n_steps // 10))
    return windows, ends, slow, final_start


def _initial_metropolis_step(kernel, state, potential, generator, kind) -> float:
    h = 0.1
    direction = 0
    for _ in range(40):
        _, info = _transition(kernel, kind, state, h, generator, potential, 1)
        a = _mean_acceptance(info)
        go = 1 if a > 0.5 else -1
        if direction and go != direction:
            break
        direction = go
        h = h * 2.0 if go > 0 else h / 2.0
    return h


def _transition(kernel, kind, state, h, generator, potential, k, n_leapfrog=None):
    if kind == "HMC":
        return kernel.transition(state, h, generator, potential=potential,
                                 n_leapfrog=n_leapfrog or kernel.leapfrog_steps(k))
    return kernel.transition(state, h, generator, potential=potential)


def _warmup_metropolis(step, kind, u, n_steps, step_size, target, mass_matrix, trajectory, generator, iterations):
    counter = _Counter()
    potential = CountedPotential(step.potential, counter)
    kernel = step
    event = tuple(u.shape[2:])
    d = math.prod(event)
    state: ChainState = kernel.state_of(u, potential)
    with torch.no_grad():
        h = step_size if step_size is not None else _initial_metropolis_step(kernel, state, potential, generator, kind)
        averaging = DualAveraging(h, target)
        windows, ends, slow, final_start = _phases(n_steps, mass_matrix is not None)
        covariance = WindowedCovariance(dense=mass_matrix == "dense")
        chees = trajectory == "chees"
        T = h * kernel.n_leapfrog if kind == "HMC" else None
        adam_v, log_T_sum, log_T_count, ema_C, ema_dC = 0.0, 0.0, 0, 0.0, 0.0
        trace: dict[str, list] = {"step_size": []}
        if chees:
            trace["trajectory_length"] = []
        final_acceptance = []
        for t in iterations:
            n_leapfrog, u_t = None, 1.0
            if chees:
                u_t = van_der_corput(t + 1)
                n_leapfrog = max(1, math.ceil(2.0 * u_t * T / h))  # t = 2 u T, uniform on (0, 2T)
            before = state.position
            state, info = _transition(kernel, kind, state, h, generator, potential, t + 1, n_leapfrog)
            a = _mean_acceptance(info)
            h = averaging.update(a)
            if t >= final_start:
                final_acceptance.append(a)
            if chees:
                C, dC = _chees_terms(before, info, kernel.mass_matrix, u_t)
                if math.isfinite(C) and math.isfinite(dC):
                    ema_C, ema_dC = 0.9 * ema_C + 0.1 * C, 0.9 * ema_dC + 0.1 * dC
                grad = T * ema_dC / ema_C - 1.0 if ema_C > 0 else 0.0
                if math.isfinite(grad):
                    adam_v = 0.95 * adam_v + 0.05 * grad * grad
                    T = T * math.exp(0.025 * grad / (math.sqrt(adam_v / (1 - 0.95 ** (t + 1))) + 1e-12))
                T = min(max(T, h), 1e3 * h)
                if t >= final_start:
                    log_T_sum, log_T_count = log_T_sum + math.log(T), log_T_count + 1
                trace["trajectory_length"].append(T)
            if slow[t]:
                covariance.update(state.position)
            if t + 1 in ends:
                metric = _metric_from(covariance.estimate(), event, mass_matrix == "dense")
                kernel = _with_metric(kernel, kind, metric)
                if kind == "GHMC":  # momenta of the new metric
                    state = state._replace(momentum=metric.momentum(state.position, generator))
                covariance.reset()
                averaging.restart(averaging.step_size)
                h = averaging.step_size
            trace["step_size"].append(h)
    h_final = averaging.step_size
    n_leapfrog = kernel.n_leapfrog if kind in ("HMC", "GHMC") else None
    if chees:
        T_final = math.exp(log_T_sum / log_T_count) if log_T_count else T
        n_leapfrog = max(1, round(T_final / h_final))
        kernel = HMC(kernel.potential, n_leapfrog, inverse_mass=kernel.mass_matrix, jitter=1.0)
    parameters = {"kind": kind, "step_size": h_final, "inverse_mass": kernel.mass_matrix.inverse(),
                  "dense": kernel.mass_matrix.kind == "dense", "n_leapfrog": n_leapfrog,
                  "jitter": getattr(kernel, "jitter", None), "friction": getattr(kernel, "friction", None),
                  "sequence": None, "dimension": d}
    acceptance = sum(final_acceptance) / len(final_acceptance) if final_acceptance else None
    return WarmupResult(step=kernel, step_size=h_final, parameters=parameters, state=state.as_tensor(),
                        nfe=counter.evaluations, acceptance=acceptance, trace=trace)


def _chees_terms(before: torch.Tensor, info: TransitionInfo, metric: MassMatrix, u_t: float) -> tuple[float, float]:
    """Across-chain estimates of ChEES and of its derivative in T at this iteration (module docstring)."""
    a = torch.nan_to_num(info.log_acceptance, nan=-math.inf).clamp(max=0.0).exp().to(torch.float64)
    if float(a.sum()) <= 0.0 or info.proposal is None or info.momentum is None:
        return math.nan, math.nan
    q0 = before.reshape(before.shape[0], -1).to(torch.float64)
    q1 = info.proposal.reshape(q0.shape).to(torch.float64)
    v1 = metric.velocity(info.momentum).reshape(q0.shape).to(torch.float64)
    w = a / a.sum()
    c0 = q0 - q0.mean(0)
    c1 = q1 - (w[:, None] * q1).sum(0)
    diff = c1.square().sum(1) - c0.square().sum(1)
    chees = 0.25 * float((w * diff.square()).sum())
    return chees, 2.0 * u_t * float((w * diff * (c1 * v1).sum(1)).sum())


def _warmup_kinetic(step: KineticLangevin, u, n_steps, step_size, mass_matrix, energy_variance, generator,
                    iterations):

    event = tuple(u.shape[2:])
    d = math.prod(event)
    evaluations = 0
    kernel = step
    h = 0.1 if step_size is None else step_size
    c_sum, w_sum = 0.0, 0.0
    windows, ends, slow, final_start = _phases(n_steps, mass_matrix is not None)
    covariance = WindowedCovariance(dense=mass_matrix == "dense")
    trace: dict[str, list] = {"step_size": []}
    final_xi = []

    def new_plan(kernel, h):
        plan = kernel.plan(Intervals.single(0.0, h), u)
        plan.track_energy = True
        return plan

    plan = new_plan(kernel, h)
    noise = as_noise_source(generator, u.device)  # plans draw from a NoiseSource
    state = u
    with torch.no_grad():
        for t in iterations:
            state = plan(state, 0, noise)
            xi = float(plan.energy_error.to(torch.float64).square().mean()) / d
            if not math.isfinite(xi) or not bool(torch.isfinite(state).all()):
                raise ValueError("kinetic Langevin warm-up diverged (non-finite energy error or state); start the "
                                 "chains closer to the posterior or give a smaller step_size")
            c = xi / h**6
            c_sum, w_sum = 0.95 * c_sum + c, 0.95 * w_sum + 1.0
            h_new = (energy_variance * w_sum / c_sum) ** (1.0 / 6.0) if c_sum > 0 else 2.0 * h
            h_new = min(max(h_new, 0.5 * h), 2.0 * h)
            if t >= final_start:
                final_xi.append(xi)
            if slow[t]:
                covariance.update(state[:, 0])
            if t + 1 in ends:
                metric = _metric_from(covariance.estimate(), event, mass_matrix == "dense")
                kernel = _with_metric(kernel, "KineticLangevin", metric)
                covariance.reset()
                state = torch.stack((state[:, 0], metric.momentum(state[:, 0], generator)), 1)
                c_sum, w_sum = 0.0, 0.0  # the error constant changes with the metric
            if h_new != h or t + 1 in ends:
                evaluations += plan.evaluations
                h = h_new
                cached = plan.cache.lookup(state)
                plan = new_plan(kernel, h)
                if cached is not None and t + 1 not in ends:
                    plan.cache.remember(state, cached)  # same positions: the buffers and force carry over
            trace["step_size"].append(h)
    evaluations += plan.evaluations
    parameters = {"kind": "KineticLangevin", "step_size": h, "inverse_mass": kernel.mass_matrix.inverse(),
                  "dense": kernel.mass_matrix.kind == "dense", "n_leapfrog": None, "jitter": None,
                  "friction": kernel.friction, "sequence": kernel.sequence, "dimension": d}
    energy = sum(final_xi) / len(final_xi) if final_xi else None
    return WarmupResult(step=kernel, step_size=h, parameters=parameters, state=state, nfe=evaluations,
                        energy_variance=energy, trace=trace)
