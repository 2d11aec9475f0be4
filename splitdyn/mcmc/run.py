r"""Running Markov chains: one planned step per iteration, memory independent of the chain's length.

:func:`run_chain` is the MCMC counterpart of :func:`splitdyn.integrate`: it plans the step once and applies
the plan iteration after iteration, so every :mod:`splitdyn.mcmc` step (and any other
:class:`~splitdyn.steps.base.Step`) runs on it. Two differences:

- **No horizon.** With a constant ``step_size`` the step is planned for one block of ``block`` intervals
  and that plan is reused block after block (the steps of :mod:`splitdyn.mcmc` are time-homogeneous), so a
  chain of :math:`10^5` or :math:`10^7` steps holds the plan of one block, the current state and the kept
  draws only. A time-dependent schedule (SGLD's decreasing steps, annealing) passes its ``grid`` instead.
- **Bookkeeping.** Draws of the positions (component 0) are kept after ``burn_in`` every ``thin`` steps,
  and a Metropolis-Hastings plan's acceptance and divergence counts
  (:class:`~splitdyn.mcmc.metropolis.MetropolisPlan`) are reported per chain, counted after the burn-in.

After the run, problems a user must see are reported as warnings (:class:`~splitdyn.mcmc.diagnostics.MCMCWarning`, not errors), and
kept in :attr:`ChainResult.warnings` for :meth:`ChainResult.summary`: a mean acceptance rate below
:data:`~splitdyn.mcmc.diagnostics.THRESHOLDS` ``["acceptance"]``, divergent transitions (energy error above
:data:`~splitdyn.mcmc.metropolis.DIVERGENCE_THRESHOLD`), and a potential that is not finite at the final
state of some chains (the chains left the target's support, e.g. a potential that is NaN outside a region,
where an unadjusted chain sees a zero or NaN gradient and wanders). :meth:`ChainResult.summary` adds R-hat
and ESS warnings.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..checks import check_count, check_flag, check_positive
from ..grids import check_grid
from ..integrate import DivergenceError, plan_step
from ..steps.noise import as_noise_source
from .diagnostics import THRESHOLDS, MCMCWarning, summarize
from ..steps.base import Step
from .metropolis import MetropolisPlan

__all__ = ["ChainResult", "run_chain", "with_momentum"]

#: Thresholds of the warnings: mean acceptance rate below ``acceptance``; R-hat above ``rhat`` (Vehtari et al.
#: 2021 recommend 1.01); bulk ESS below ``ess`` (their recommended minimum of 400, i.e. 100 per chain for 4).
@dataclass
class ChainResult:
    r"""What :func:`run_chain` returns.

    Attributes
    ----------
    state:
        The final state ``(chains, k, *event)``.
    samples:
        Kept positions ``(draws, chains, *event)`` (``None`` when nothing was kept).
    nfe:
        Gradient (score) evaluations actually made.
    n_steps:
        Iterations run (burn-in included).
    seconds:
        Wall time of the loop.
    acceptance_rate:
        Per-chain fraction of accepted proposals after the burn-in (float64), ``None`` for unadjusted steps.
    acceptance_probability:
        Per-chain mean of :math:`\min(1, \alpha)` after the burn-in (a lower-variance estimate of the same).
    divergences:
        Per-chain count of divergent transitions after the burn-in (float64), ``None`` for unadjusted steps.
    warnings:
        The messages of the warnings issued after the run (see the module docstring).
    """

    state: torch.Tensor
    samples: torch.Tensor | None
    nfe: int
    n_steps: int
    seconds: float
    acceptance_rate: torch.Tensor | None = field(default=None)
    acceptance_probability: torch.Tensor | None = field(default=None)
    divergences: torch.Tensor | None = field(default=None)
    warnings: list = field(default_factory=list)

    def summary(self) -> dict:
        """Acceptance, divergences, ESS and R-hat per coordinate and the warnings, run's and diagnostics' (see
        :func:`splitdyn.mcmc.diagnostics.summarize`)."""

        return summarize(self)


def with_momentum(x: torch.Tensor, mass: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The state ``(chains, 2, *event)`` of positions ``x`` ``(chains, *event)`` and momenta :math:`p \sim \mathcal N(0, M)`."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError(f"x must be a floating torch.Tensor of positions (chains, *event), got {type(x).__name__}")
    mass = check_positive("mass", mass)
    p = math.sqrt(mass) * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return torch.stack((x, p), 1)


def _advance(plan, u: torch.Tensor, first: int, last: int, block: int, generator) -> torch.Tensor:
    """Iterations ``first .. last - 1`` (interval ``i % block`` of the plan)."""
    i = first
    while i < last:
        stop = min(last, (i // block + 1) * block)
        for j in range(i % block, i % block + stop - i):
            u = plan(u, j, generator)
        i = stop
    return u


def run_chain(step: Step, u: torch.Tensor, n_steps: int | None = None, step_size: float | None = None, *,
              grid: Sequence[float] | torch.Tensor | None = None, generator: torch.Generator | None = None,
              burn_in: int = 0, thin: int = 1, keep: bool = True, block: int = 1024,
              callback: Callable[[int, torch.Tensor], None] | None = None, progress: bool | str = False,
              ) -> ChainResult:
    r"""Run ``n_steps`` iterations of ``step`` from ``u`` with a constant ``step_size`` (or over ``grid``).

    Parameters
    ----------
    step:
        Any :class:`~splitdyn.steps.base.Step` (ULA, MALA, HMC, GHMC, a :func:`~splitdyn.mcmc.kinetic_langevin`
        splitting, ...).
    u:
        Initial state ``(chains, k, *event)`` (see :func:`with_momentum` for kinetic steps).
    n_steps, step_size:
        Number of iterations and the constant step :math:`h` (time-homogeneous steps; no horizon).
    grid:
        Instead of ``n_steps`` and ``step_size``: the increasing times of a time-dependent schedule.
    generator:
        ``torch.Generator`` on ``u``'s device.
    burn_in:
        Iterations discarded before keeping draws and counting acceptances.
    thin:
        Keep every ``thin``-th draw after the burn-in.
    keep:
        Keep draws at all (``False``: only the final state; memory then independent of ``n_steps``).
    block:
        Intervals planned at once with a constant ``step_size``.
    callback:
        ``callback(i, u)`` after iteration ``i``.
    progress:
        Show a tqdm progress bar (a string sets its label); updated once per 100 iterations.

    Examples
    --------
    >>> import torch
    >>> from splitdyn.mcmc import ULA, Potential, run_chain
    >>> out = run_chain(ULA(Potential(lambda x: 0.5 * (x**2).sum(-1))), torch.zeros(8, 1, 3), 500, 0.1,
    ...                 burn_in=100, thin=2, generator=torch.Generator().manual_seed(0))
    >>> tuple(out.samples.shape), out.nfe
    ((200, 8, 3), 500)
    """
    if not isinstance(step, Step):
        raise TypeError(f"step must be a splitdyn Step, got {type(step).__name__}")
    if not isinstance(u, torch.Tensor) or not u.is_floating_point() or u.ndim < 2 or u.shape[0] == 0:
        raise ValueError(f"u must be a floating state tensor (chains >= 1, k, *event), got "
                         f"{tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(i, u), got {type(callback).__name__}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if torch.device(generator.device).type != u.device.type:
            raise ValueError(f"generator must be on the state's device ({u.device}), got one on {generator.device}")
    if not isinstance(progress, (bool, str)):
        raise TypeError(f"progress must be a bool or a label string, got {type(progress).__name__}")
    if grid is not None:
        if n_steps is not None or step_size is not None:
            raise ValueError("pass either grid or (n_steps, step_size), not both")
        times = check_grid(grid)
        n_steps, block = len(times) - 1, len(times) - 1
    else:
        if n_steps is None or step_size is None:
            raise ValueError("n_steps and step_size are required without a grid")
        n_steps = check_count("n_steps", n_steps)
        h = check_positive("step_size", step_size)
        block = min(check_count("block", block), n_steps)
        times = (torch.arange(block + 1, dtype=torch.float64) * h).tolist()
    burn_in = check_count("burn_in", burn_in, minimum=0)
    thin = check_count("thin", thin)
    check_flag("keep", keep)
    if burn_in > n_steps or (burn_in == n_steps and keep):
        raise ValueError(f"burn_in ({burn_in}) must be smaller than n_steps ({n_steps})"
                         + (" to keep draws" if burn_in == n_steps else ""))
    if keep and thin > n_steps - burn_in:
        raise ValueError(f"thin ({thin}) is larger than the {n_steps - burn_in} iterations kept after burn_in: no "
                         "draw would be kept; lower thin or pass keep=False")
    plan = plan_step(step, times, u, fuse=False)
    generator = as_noise_source(generator, u.device)  # plans draw from a NoiseSource
    draws = (n_steps - burn_in) // thin if keep else 0
    samples = torch.empty((draws, *u.shape[:1], *u.shape[2:]), dtype=u.dtype, device=u.device) if draws else None
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_steps, desc=progress if isinstance(progress, str) else "MCMC", leave=False)
    with torch.no_grad():
        if samples is None and callback is None and bar is None:  # the bare loop: nothing but the plan per iteration
            u = _advance(plan, u, 0, burn_in, block, generator)
            if isinstance(plan, MetropolisPlan):
                plan.reset_statistics()
            u = _advance(plan, u, burn_in, n_steps, block, generator)
        else:
            kept = 0
            for i in range(n_steps):
                if i == burn_in and isinstance(plan, MetropolisPlan):
                    plan.reset_statistics()
                u = plan(u, i % block, generator)
                if samples is not None and i >= burn_in and (i + 1 - burn_in) % thin == 0 and kept < draws:
                    samples[kept] = u[:, 0]
                    kept += 1
                if callback is not None:
                    callback(i, u)
                if bar is not None and ((i + 1) % 100 == 0 or i + 1 == n_steps):
                    bar.update(i + 1 - bar.n)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if not bool(torch.isfinite(u).all()):
        raise DivergenceError(f"the chain diverged: non-finite states after {n_steps} steps; take a smaller step_size")
    rate = probability = divergences = None
    if (isinstance(plan, MetropolisPlan) and plan.proposals and plan.acceptance_probability is not None
            and plan.divergences is not None):
        rate = plan.acceptance_rate()
        probability = plan.acceptance_probability.detach().to("cpu", torch.float64) / plan.proposals
        divergences = plan.divergences.detach().to("cpu", torch.float64)
    messages = _run_warnings(step, u, rate, divergences)
    for message in messages:
        warnings.warn(message, MCMCWarning, stacklevel=2)
    return ChainResult(state=u, samples=samples, nfe=plan.evaluations, n_steps=n_steps, seconds=seconds,
                       acceptance_rate=rate, acceptance_probability=probability, divergences=divergences,
                       warnings=messages)


def _run_warnings(step: Step, u: torch.Tensor, rate, divergences) -> list[str]:
    messages = []
    if rate is not None and float(rate.mean()) < THRESHOLDS["acceptance"]:
        messages.append(f"mean acceptance rate {float(rate.mean()):.3g} is below {THRESHOLDS['acceptance']}: the "
                        "step size is too large for this target (use splitdyn.mcmc.warmup to tune it)")
    if divergences is not None and float(divergences.sum()) > 0:
        chains = int((divergences > 0).sum())
        messages.append(f"{int(divergences.sum())} divergent transitions (energy error above the threshold) in "
                        f"{chains} of {divergences.numel()} chains: reduce the step size or reparameterise")
    potential = getattr(step, "potential", None)
    if potential is not None and hasattr(potential, "energy"):
        try:
            with torch.no_grad():
                energy = potential.energy(u[:, 0])
        except Exception:  # a potential that cannot be evaluated here is not this check's business
            energy = None
        if energy is not None and not bool(torch.isfinite(energy).all()):
            bad = int((~torch.isfinite(energy)).sum())
            messages.append(f"the potential is not finite at the final state of {bad} of {energy.numel()} chains: "
                            "they left the target's support (a potential that is NaN or infinite outside a "
                            "region gives no gradient back there); start inside it, use a Metropolis kernel, or "
                            "return +inf outside")
    return messages
