r"""The one sampling entry point: :func:`sample` for every forward process and every sampler.

``sample(process, score, initial, grid, step=...)`` builds the reverse-time SDE of ``process`` with ``score``
(:class:`~splitdyn.reverse.ReverseSDE`), draws :math:`u_T` from the process's prior when ``initial`` is a
shape, integrates reverse time :math:`\tau = T - t` over the grid to the cutoff :math:`\epsilon`, and, with
``denoise``, finishes with one noise-free Euler step of size :math:`\epsilon` (paper eq. 107, one NFE) or its
score-free form (``denoise="score-free"``, no NFE). The
result is a :class:`~splitdyn.integrate.Solution`; ``solution.components()`` gives CLD's ``(x, v)``.

Named samplers (:data:`SAMPLERS`): ``"em"`` (Euler-Maruyama), ``"sscs"`` (the symmetric splitting sampler,
Algorithm 1: exact linear half-steps around an Euler step of the score part), ``"trotter-split"``,
``"ancestral"`` (reverse diffusion), ``"pc-em-langevin"`` / ``"pc-ancestral-langevin"`` /
``"pc-sscs-langevin"`` (predictor-corrector, :func:`~splitdyn.steps.predictor_corrector.pc_step`),
``"adaptive-em"`` / ``"adaptive-sscs"`` (adaptive steps, :class:`~splitdyn.adaptive.AdaptiveSampler`),
``"torchsde-euler"`` / ``"torchsde-srk"`` (the torchsde reference), ``"ode"`` (adaptive probability flow,
torchdiffeq), ``"heun"`` / ``"rk4"`` (fixed-grid probability flow, :mod:`splitdyn.steps.runge_kutta`),
``"ei-ode-q"`` / ``"ei-sde-q"`` (exponential integrators with data prediction, order ``q`` = 1, 2, 3),
``"gddim-q"`` (noise prediction), ``"dpmpp-1"`` / ``"dpmpp-2m"`` / ``"dpmpp-3m"`` (DPM-Solver++: the
probability-flow integrator with polynomials in the log-SNR, processes with ``log_snr``; ``"dpmpp-2m"`` is
the ``"midpoint"`` form, diffusers' default, also named ``"dpmpp-2m-midpoint"``; ``"dpmpp-2m-heun"`` is the
exact integral of the linear interpolant, the ``"heun"``/Taylor form; see :mod:`splitdyn.steps.exponential`)
and ``"unipc-p"`` / ``"unipc-p-bh1"`` / ``"unipc-p-bh2"`` (UniPC with predictor order ``p`` = 1, 2, 3 and
weak order ``p + 1``, polynomials in :math:`t`, any linear SDE; unsuffixed is ``"bh2"``, diffusers' default;
:mod:`splitdyn.steps.unipc`) and ``"unipc-p-bh1-lof"`` / ``"unipc-p-bh2-lof"`` (``p`` = 2, 3: with
``lower_order_final``, diffusers' default, the predictor's order falling to 1 on the last steps: weak order
2, but the best at NFE 5 with exact scores, see :doc:`/concepts/exponential_integrators`).

**NFE** of an ``n``-step grid (score evaluations; ``tests/test_sampler_nfe.py`` checks every name against
this table and against the calls actually made):

============================================================================= ===================
sampler                                                                       evaluations
============================================================================= ===================
``em``, ``sscs``, ``trotter-split``, ``ancestral``, ``torchsde-euler``        ``n``
``ei-ode-q``, ``ei-sde-q``, ``gddim-q``, ``dpmpp-*``, ``unipc-*``             ``n``
``heun``, ``pc-em-langevin``, ``pc-ancestral-langevin``, ``pc-sscs-langevin`` ``2n``
``torchsde-srk``                                                              ``3n``
``rk4``                                                                       ``4n``
``ode``, ``adaptive-em``, ``adaptive-sscs``                                   the solver's choice
============================================================================= ===================

plus the final step: one more with ``denoise=True`` (the Euler step, eq. 107) or ``"tweedie"`` (the data
prediction at :math:`\epsilon`, :func:`tweedie_denoise`: for VP the natural last step), none with
``denoise="score-free"`` (:func:`score_free_denoise`, for processes whose noise does not reach the data,
e.g. CLD: an NFE-``n`` sampler then takes ``n`` steps) or ``denoise=False``. (torchsde's ``sdeint`` also
evaluates the drift once per call to check shapes; those calls are not counted.)
A :class:`~splitdyn.steps.base.Step`, a callable ``factory(reverse_sde) -> Step`` or a
:class:`~splitdyn.interop.ReferenceSolver` can be passed instead of a name.
"""

from __future__ import annotations

import contextlib
from functools import partial
from collections.abc import Sequence
from typing import Callable

from numbers import Integral

import torch

from .checks import check_arity, check_compile, check_device, check_flag, check_progress
from .final_step import DENOISE_MODES, check_score_free, score_free_denoise, tweedie_denoise
from .grids import check_grid
from .integrate import Callback, DivergenceError, Solution, integrate, plan_step, save_indices
from .interop import AdaptiveProbabilityFlow, ReferenceSolver, TorchsdeSolver
from .reverse import ReverseSDE, ScoreFunction
from .adaptive import AdaptiveSampler
from .steps.base import Plan, Step
from .steps.euler import EulerMaruyama
from .steps.exponential import ExponentialODE, ExponentialSDE, NoiseExponentialODE
from .steps.unipc import UniPC
from .steps.runge_kutta import ProbabilityFlowHeun, ProbabilityFlowRK4
from .plan_cache import SAMPLE_PLANS, PlanCache, cache_key
from .protocols import ForwardProcess, require
from .steps.noise import NoiseSource, as_noise_source
from .steps.predictor_corrector import ReverseDiffusion, pc_step
from .steps.split import split_step

__all__ = ["sample", "SAMPLERS", "sampler_step"]


def _ignore_dynamics(solver_type, reverse, **options):
    """A reference solver needs nothing from the dynamics at construction (a picklable factory)."""
    return solver_type(**options)


#: The named samplers :func:`sample` accepts, each ``name -> factory(reverse_sde)``.
#:
#: :meta hide-value:
SAMPLERS: dict[str, Callable[[ReverseSDE], Step | ReferenceSolver]] = {
    "em": EulerMaruyama,
    "sscs": split_step,
    "trotter-split": partial(split_step, scheme="trotter"),
    "torchsde-euler": partial(_ignore_dynamics, TorchsdeSolver, method="euler"),
    "torchsde-srk": partial(_ignore_dynamics, TorchsdeSolver, method="srk", noise_type="additive"),
    "ode": partial(_ignore_dynamics, AdaptiveProbabilityFlow),
    "heun": ProbabilityFlowHeun,
    "rk4": ProbabilityFlowRK4,
    **{f"ei-ode-{q}": partial(ExponentialODE, order=q) for q in (1, 2, 3)},
    **{f"ei-sde-{q}": partial(ExponentialSDE, order=q) for q in (1, 2, 3)},
    **{f"gddim-{q}": partial(NoiseExponentialODE, order=q) for q in (1, 2, 3)},
    "dpmpp-1": partial(ExponentialODE, order=1, interpolation="log_snr"),
    "dpmpp-2m": partial(ExponentialODE, order=2, interpolation="log_snr", linear_rule="bh2"),
    "dpmpp-2m-midpoint": partial(ExponentialODE, order=2, interpolation="log_snr", linear_rule="bh2"),
    "dpmpp-2m-heun": partial(ExponentialODE, order=2, interpolation="log_snr"),
    "dpmpp-3m": partial(ExponentialODE, order=3, interpolation="log_snr"),
    **{f"unipc-{q}": partial(UniPC, order=q, variant="bh2") for q in (1, 2, 3)},
    **{f"unipc-{q}-{v}": partial(UniPC, order=q, variant=v) for q in (1, 2, 3) for v in ("bh1", "bh2")},
    **{f"unipc-{q}-{v}-lof": partial(UniPC, order=q, variant=v, lower_order_final=True)
       for q in (2, 3) for v in ("bh1", "bh2")},
    "ancestral": ReverseDiffusion,
    "pc-em-langevin": pc_step,
    "pc-ancestral-langevin": partial(pc_step, predictor="ancestral"),
    "pc-sscs-langevin": partial(pc_step, predictor="sscs"),
    "adaptive-em": partial(_ignore_dynamics, AdaptiveSampler, method="em"),
    "adaptive-sscs": partial(_ignore_dynamics, AdaptiveSampler, method="sscs"),
}


def sampler_step(step, reverse: ReverseSDE) -> Step | ReferenceSolver:
    """Resolve ``step`` (a name in :data:`SAMPLERS`, a Step, a solver or a factory) for ``reverse``."""
    if isinstance(step, str):
        if step not in SAMPLERS:
            raise ValueError(f"step must be one of {sorted(SAMPLERS)} or a Step, got {step!r}")
        return SAMPLERS[step](reverse)
    if isinstance(step, (Step, ReferenceSolver)):
        return step
    if callable(step):
        built = step(reverse)
        if not isinstance(built, (Step, ReferenceSolver)):
            raise TypeError(f"a step factory must return a splitdyn Step, got {type(built).__name__}")
        return built
    raise TypeError(f"step must be a sampler name, a Step, a ReferenceSolver or a factory, got {type(step).__name__}")


def _initial_state(process, initial, generator, dtype, device) -> torch.Tensor:
    k = process.num_components
    if isinstance(initial, torch.Tensor):
        if not initial.is_floating_point():
            raise TypeError(f"initial must be a floating state tensor, got dtype {initial.dtype}")
        if initial.ndim < 2 or initial.shape[1] != k or initial.shape[0] == 0:
            raise ValueError(f"initial must be a state (batch >= 1, {k}, *event), got shape {tuple(initial.shape)}")
        return initial
    try:
        shape = tuple(initial)
    except TypeError:
        raise TypeError(f"initial must be a shape (batch, *event) or a state tensor, got {type(initial).__name__}") from None
    shape = tuple(int(s) if isinstance(s, Integral) and not isinstance(s, bool) else s for s in shape)  # numpy ints
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"initial must be a shape (batch, *event) of positive ints, got {initial!r}")
    if not hasattr(process, "prior_sample"):
        raise TypeError(f"{type(process).__name__} has no prior_sample: pass an initial state tensor")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return process.prior_sample(shape, generator=generator, dtype=dtype, device=device)


def _reverse_times(grid, T: float) -> list[float]:
    if isinstance(grid, str):
        raise ValueError(f"grid must be a grid object (e.g. splitdyn.UniformGrid(n)) or reverse times, got {grid!r} "
                         "(splitdyn.make_grid(name, n) builds one by name)")
    times = check_grid(grid, T=T)
    if abs(times[0]) > 1e-12 * max(1.0, T) or times[-1] > T * (1 + 1e-12):
        raise ValueError(f"grid must run in reverse time from 0 to at most T = {T}, got [{times[0]}, {times[-1]}]")
    return times


def sample(
    process,
    score: ScoreFunction,
    initial,
    grid=None,
    *,
    step="em",
    score_components: Sequence[int] | None = None,
    denoise: bool | str = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
    progress: bool | str = False,
    callback: Callback | None = None,
    save_at=None,
    fuse: bool = True,
    differentiable: bool = False,
    compile: bool | dict = False,
    divergence_factor: float | None = 1e4,
    noise: NoiseSource | None = None,
    cache: bool | PlanCache = True,
) -> Solution:
    r"""Sample the data distribution of ``process`` by integrating its reverse-time dynamics.

    Parameters
    ----------
    process:
        The forward SDE (CLD, VP, sub-VP, VE or any :class:`~splitdyn.linear_sde.LinearSDEBase`; a non-linear
        SDE with ``drift``/``diffusion_matrix`` works with ``"em"`` and the torchsde reference).
    score:
        ``score(u, t)`` in forward time, returning the components ``score_components`` (same dtype as ``u``).
    initial:
        ``(batch, *event)`` to draw :math:`u_T` from ``process.prior_sample``, or a state ``(batch, k, *event)``.
    grid:
        A grid object (:mod:`splitdyn.grids`, anything with ``reverse_times(T)``) or strictly increasing reverse
        times from 0 to :math:`T - \epsilon`; ``None`` for samplers that pick their own steps (``"ode"``).
    step:
        A name in :data:`SAMPLERS`, a :class:`~splitdyn.steps.base.Step`, a factory ``f(reverse_sde) -> Step``,
        or a :class:`~splitdyn.interop.ReferenceSolver`.
    score_components:
        Components the score returns; default ``process.score_components`` if defined (CLD: the velocity,
        ``[1]``), else all.
    denoise:
        The last step, from forward time :math:`\epsilon = T - \tau_n` to 0: ``True`` or ``"euler"``, the
        denoising Euler step (eq. 107, one more NFE); ``"score-free"``, :func:`score_free_denoise` (no NFE: the
        data component is the Euler step's where the noise does not reach it, CLD's :math:`x` by eq. 109;
        refused for VP/VE); ``"tweedie"``, :func:`tweedie_denoise` (one NFE: the data component becomes
        :math:`E[x_0 \mid u_\epsilon]`, the data-prediction samplers' step to 0); ``False``, none (the state at
        :math:`\epsilon`).
    generator, dtype, device:
        For the prior draw and the noise (``dtype``/``device`` only when ``initial`` is a shape).
    progress:
        tqdm progress bar (a string sets its label).
    callback:
        ``callback(i, tau_{i+1}, u)`` after each step (fixed-grid samplers).
    save_at:
        ``"all"`` or reverse grid times at which to keep the state (``Solution.trajectory``).
    fuse:
        Let a splitting sampler (``"sscs"``) fuse the exact half-steps of adjacent steps into one (same law,
        fewer noise draws). Fusion needs no state at the grid times, so it is off whenever ``save_at`` (after
        the start) or ``callback`` ask for them; the noise stream then differs from a fused run's. With
        ``fuse=False`` a run draws the same noise whether or not it saves: its states at the grid times are
        those a saving run returns in its trajectory, for the same generator.
    differentiable:
        Keep the autograd graph (default: sample under ``torch.no_grad()``).
    compile:
        ``True`` or ``torch.compile`` options: compile each plan's arithmetic once (scores then receive
        the time as a 0-d float64 tensor).
    divergence_factor:
        See :func:`~splitdyn.integrate.integrate`.
    noise:
        A :class:`~splitdyn.steps.noise.NoiseSource` (e.g. ``BrownianNoise(bm)`` on a ``torchsde`` path over
        reverse time) for fixed-grid steps; see :func:`~splitdyn.integrate.integrate`.
    cache:
        Reuse the plan of an earlier call with the same setup (see :class:`~splitdyn.plan_cache.PlanCache`): ``True`` uses
        :data:`~splitdyn.plan_cache.SAMPLE_PLANS`, ``False`` plans afresh, or pass a :class:`~splitdyn.plan_cache.PlanCache` of your own.

    Returns
    -------
    Solution
        ``state`` (denoised if asked), ``nfe`` (see :mod:`splitdyn.integrate`), ``times``, and the saved
        ``trajectory``.

    Examples
    --------
    For standard normal data the VP SDE keeps every marginal :math:`\mathcal N(0, I)`, so the exact score is
    :math:`-u`; 50 Euler-Maruyama steps and the denoising step make 51 score evaluations:

    >>> import torch
    >>> from splitdyn import VPSDE, UniformGrid, sample
    >>> out = sample(VPSDE(), lambda u, t: -u, (20000, 2), UniformGrid(50), step="em",
    ...              generator=torch.Generator().manual_seed(0))
    >>> out.state.shape, out.nfe
    (torch.Size([20000, 1, 2]), 51)
    >>> x = out.state[:, 0]
    >>> bool(x.mean(0).abs().max() < 0.05), bool((x.var(0) - 1).abs().max() < 0.1)
    (True, True)
    """
    if isinstance(denoise, str):
        if denoise not in DENOISE_MODES:
            raise ValueError(f"denoise must be True, False, 'euler', 'score-free' or 'tweedie', got {denoise!r}")
    else:
        denoise = check_flag("denoise", denoise)
    check_flag("fuse", fuse)
    check_flag("differentiable", differentiable)
    check_progress("progress", progress)
    check_compile("compile", compile)
    device = check_device("device", device)
    if callback is not None:
        check_arity("callback", callback, 3, "callback(i, tau, u)")
    as_noise_source(generator, initial.device if isinstance(initial, torch.Tensor) else device)  # refuses by name
    require("process", process, ForwardProcess)
    if isinstance(cache, bool):
        check_flag("cache", cache)
        plans = SAMPLE_PLANS if cache else None
    elif isinstance(cache, PlanCache):
        plans = cache
    else:
        raise TypeError(f"cache must be True, False or a splitdyn.PlanCache, got {type(cache).__name__}")
    if score_components is None:
        score_components = getattr(process, "score_components", None)
    u = _initial_state(process, initial, generator, dtype, device)
    T = float(process.T)
    key: tuple | None = None
    entry: tuple | None = None
    plan: Plan | None = None
    times: list[float] | None = None
    if plans is not None and grid is not None and isinstance(step, (str, Step)):
        times = _reverse_times(grid, T)
        fusable = fuse and callback is None and not any(j > 0 for j in save_indices(save_at, times))
        key = cache_key(process, score, step, score_components, times, u, fusable, compile)
        entry = plans.lookup(key) if key is not None else None
    if entry is not None:
        reverse, solver, plan = entry[-3:]
    else:
        reverse = ReverseSDE(process, score, score_components)
        solver = sampler_step(step, reverse)
    if noise is not None and isinstance(solver, ReferenceSolver):
        raise ValueError(f"noise is for fixed-grid steps: give {type(solver).__name__} its Brownian motion itself "
                         "(bm=...)")
    # reference solvers do not manage autograd themselves: without this they would keep the network's graph
    no_grad = torch.no_grad() if not differentiable else contextlib.nullcontext()
    if isinstance(solver, ReferenceSolver) and not solver.needs_grid:
        if grid is not None:
            raise ValueError(f"{type(solver).__name__} picks its own steps: pass grid=None (set its eps instead)")
        if solver.eps is None:
            raise TypeError(f"{type(solver).__name__} picks its own steps (needs_grid=False) but sets no eps: a "
                            "ReferenceSolver that takes no grid must declare its cutoff eps")
        times, eps = None, solver.eps
        with no_grad:
            solution = solver.solve(reverse, u, None, eps, generator=generator, progress=progress, callback=callback,
                                    save_at=None if save_at is None else [float(t) for t in save_at])
    else:
        if grid is None:
            raise ValueError("grid is required for this sampler (e.g. splitdyn.grids.UniformGrid(n))")
        times = _reverse_times(grid, T)
        eps = T - times[-1]
        if denoise == "score-free" and eps > 0:
            check_score_free(process, eps)  # refused before the run, not after
        if isinstance(solver, ReferenceSolver):
            with no_grad:
                solution = solver.solve(reverse, u, times, eps, generator=generator, progress=progress,
                                        callback=callback, save_at=save_indices(save_at, times))
        else:
            if plan is None and key is not None and plans is not None:  # plan once, keep it for the next call
                plan = plan_step(solver, times, u, fuse=key[-2])
                if compile:
                    plan.compile(**(compile if isinstance(compile, dict) else {}))
                plans.store(key, (process, score, step, reverse, solver, plan))
            solution = integrate(solver, u, times, generator=generator, save_at=save_at, progress=progress,
                                 callback=callback, fuse=fuse, differentiable=differentiable,
                                 compile=compile if plan is None else False, divergence_factor=divergence_factor,
                                 noise=noise, plan=plan)
    if denoise:
        if not eps > 0:
            raise ValueError("denoise needs a grid that stops before T (a cutoff eps > 0); pass denoise=False")
        score_free = denoise == "score-free"
        with torch.no_grad() if not differentiable else contextlib.nullcontext():
            if score_free:
                state = score_free_denoise(process, solution.state, eps)
            elif denoise == "tweedie":
                state = tweedie_denoise(reverse, solution.state, eps)
            else:
                state = reverse.denoise(solution.state, eps)
        if not bool(torch.isfinite(state).all()):
            raise DivergenceError("the denoised sample contains NaN or inf: the score failed at forward time eps")
        solution.state = state
        solution.nfe += 0 if score_free else 1
    return solution

