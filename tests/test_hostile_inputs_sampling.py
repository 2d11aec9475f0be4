"""Hostile input to the sampler layer gets a clear error of the right type that names the offending argument.

One table of ``(id, callable, kwargs, exception type, name)``, as in ``test_hostile_inputs_core.py``: the
sampling entry points (``splitdyn.sample``, the CLD preset), the loop (``integrate``), every step and
composition constructor, the reference solvers, the reverse SDE, grids and the CUDA-graph loop. Silent wrong
answers the issue listed are here too: a float64 score for a float32 state, negative tolerances, a diverged
sampler with finite values, duplicate or non-integer score components.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import splitdyn
from splitdyn import (AdaptiveProbabilityFlow, CapturedLoop, Composition, EulerDrift, EulerMaruyama, ExactLinearFlow,
                      LinearSDE, ReverseSDE, TorchsdeSolver, UniformGrid, integrate, palindromic, split_step,
                      splitting, strang, uniform_grid)
from splitdyn_cld import CLD
from splitdyn_cld import sample as cld_sample

F64 = torch.float64
NAN = float("nan")
CLD_ = CLD()
OU = LinearSDE([[-0.5]], [[1.0]], beta=2.0)
GRID = uniform_grid(4)
U = torch.zeros(4, 2, 2, dtype=F64)


def velocity(u, t):
    return -u[:, 1:] / CLD_.mass


def returns(value):
    return lambda u, t: value


def float64_score(u, t):
    return -u[:, 1:].to(F64)


def huge_score(u, t):
    return -1e8 * u[:, 1:] - 1e8  # finite but explosive


class Nonlinear:
    """A non-linear forward SDE (drift u^3): Euler-Maruyama works, splitting off a linear part does not."""

    T, num_components = 1.0, 2

    def drift(self, u, t):
        return -(u**3)

    def diffusion_matrix(self, t):
        return torch.eye(2, dtype=F64)


NONLINEAR = Nonlinear()
REVERSE = ReverseSDE(CLD_, velocity, score_components=[1])
FLOW = ExactLinearFlow(CLD_.reverse_linear_part())
KICK = EulerDrift(lambda u, t: torch.zeros_like(u), nfe=0)


def sample(**kwargs):
    base = dict(process=CLD_, score=velocity, initial=(4, 2), grid=UniformGrid(4), step="em")
    base.update(kwargs)
    return splitdyn.sample(**base)


def loop(**kwargs):
    base = dict(step=EulerMaruyama(REVERSE), u=U, grid=GRID)
    base.update(kwargs)
    return integrate(**base)


CASES = [
    # -- splitdyn.sample: what it is given -------------------------------------------------------------------
    ("sample-process-type", sample, dict(process="cld"), TypeError, "process"),
    ("sample-score-not-callable", sample, dict(score="score"), TypeError, "score"),
    ("sample-score-none", sample, dict(score=returns(None)), TypeError, "score"),
    ("sample-score-numpy", sample, dict(score=returns(np.zeros((4, 1, 2)))), TypeError, "score"),
    ("sample-score-float", sample, dict(score=returns(0.5)), TypeError, "score"),
    ("sample-score-shape", sample, dict(score=lambda u, t: u), ValueError, "score"),
    ("sample-score-float64-for-float32", sample, dict(score=float64_score), TypeError, "score"),
    ("sample-score-nan", sample, dict(score=lambda u, t: u[:, 1:] * NAN), ValueError, "diverged"),
    ("sample-diverges-finite", sample, dict(score=huge_score, generator=torch.Generator().manual_seed(0)),
     splitdyn.DivergenceError, "diverged"),
    ("sample-components-float", sample, dict(score_components=[0.5]), ValueError, "score_components"),
    ("sample-components-bool", sample, dict(score_components=[True]), ValueError, "score_components"),
    ("sample-components-duplicate", sample, dict(score_components=[1, 1]), ValueError, "score_components"),
    ("sample-components-range", sample, dict(score_components=[2]), ValueError, "score_components"),
    ("sample-components-scalar", sample, dict(score_components=1), TypeError, "score_components"),
    ("sample-initial-string", sample, dict(initial="4, 2"), ValueError, "initial"),
    ("sample-initial-zero-batch", sample, dict(initial=(0, 2)), ValueError, "initial"),
    ("sample-initial-float-shape", sample, dict(initial=(4.0, 2)), ValueError, "initial"),
    ("sample-initial-object", sample, dict(initial=object()), TypeError, "initial"),
    ("sample-initial-integer-state", sample, dict(initial=torch.zeros(4, 2, 2, dtype=torch.long)), TypeError,
     "initial"),
    ("sample-initial-wrong-components", sample, dict(initial=torch.zeros(4, 3, 2)), ValueError, "initial"),
    ("sample-initial-empty-state", sample, dict(initial=torch.zeros(0, 2, 2)), ValueError, "initial"),
    ("sample-initial-nan-state", sample, dict(initial=torch.full((4, 2, 2), NAN)), ValueError, "initial"),
    ("sample-dtype-int", sample, dict(dtype=torch.int64), TypeError, "dtype"),
    ("sample-dtype-string", sample, dict(dtype="float32"), TypeError, "dtype"),
    ("sample-step-unknown", sample, dict(step="rk9"), ValueError, "step"),
    ("sample-step-object", sample, dict(step=3), TypeError, "step"),
    ("sample-step-factory-returns-junk", sample, dict(step=lambda reverse: "em"), TypeError, "step"),
    ("sample-grid-missing", sample, dict(grid=None), ValueError, "grid"),
    ("sample-grid-for-ode", sample, dict(step="ode"), ValueError, "grid"),
    ("sample-grid-decreasing", sample, dict(grid=torch.tensor([0.0, 0.5, 0.2], dtype=F64)), ValueError, "grid"),
    ("sample-grid-past-T", sample, dict(grid=torch.tensor([0.0, 0.5, 1.5], dtype=F64)), ValueError, "grid"),
    ("sample-grid-not-from-zero", sample, dict(grid=torch.tensor([0.2, 0.5, 0.9], dtype=F64)), ValueError, "grid"),
    ("sample-grid-nan", sample, dict(grid=torch.tensor([0.0, NAN, 0.9], dtype=F64)), ValueError, "grid"),
    ("sample-grid-one-time", sample, dict(grid=torch.tensor([0.0], dtype=F64)), ValueError, "grid"),
    ("sample-grid-string", sample, dict(grid="uniform"), ValueError, "grid"),
    ("sample-denoise-at-T", sample, dict(grid=torch.linspace(0, 1, 5, dtype=F64)), ValueError, "denoise"),
    ("sample-denoise-int", sample, dict(denoise=1), TypeError, "denoise"),
    ("sample-differentiable-str", sample, dict(differentiable="no"), TypeError, "differentiable"),
    ("sample-callback-not-callable", sample, dict(callback=3), TypeError, "callback"),
    ("sample-save-at-off-grid", sample, dict(save_at=[0.123]), ValueError, "save_at"),
    ("sample-save-at-string", sample, dict(save_at="some"), ValueError, "save_at"),
    ("sample-divergence-factor-negative", sample, dict(divergence_factor=-1.0), ValueError, "divergence_factor"),
    ("sample-divergence-factor-str", sample, dict(divergence_factor="big"), TypeError, "divergence_factor"),
    ("sample-sscs-nonlinear-process", sample, dict(process=NONLINEAR, step="sscs", initial=torch.zeros(4, 2, 2)),
     TypeError, "LinearSDE"),
    ("sample-prior-missing", sample, dict(process=OU, score=lambda u, t: -u), TypeError, "initial"),
    # -- the CLD preset ----------------------------------------------------------------------------------------
    ("cld-type", cld_sample, dict(cld=OU, velocity_score=velocity, shape_or_u=(4, 2), n_steps=3), TypeError, "cld"),
    ("cld-steps-zero", cld_sample, dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), n_steps=0),
     ValueError, "n_steps"),
    ("cld-steps-float", cld_sample, dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), n_steps=3.5),
     TypeError, "n_steps"),
    ("cld-steps-bool", cld_sample, dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), n_steps=True),
     TypeError, "n_steps"),
    ("cld-steps-missing", cld_sample, dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2)), ValueError,
     "n_steps"),
    ("cld-ode-with-steps", cld_sample,
     dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), n_steps=3, sampler="ode"), ValueError, "n_steps"),
    ("cld-grid-unknown", cld_sample,
     dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), n_steps=3, grid="cubic"), ValueError, "grid"),
    ("cld-eps-too-large", cld_sample,
     dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), n_steps=3, eps=2.0), ValueError, "eps"),
    ("cld-ode-negative-rtol", cld_sample,
     dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), sampler="ode", rtol=-1.0), ValueError, "rtol"),
    ("cld-ode-zero-atol", cld_sample,
     dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), sampler="ode", atol=0.0), ValueError, "atol"),
    ("cld-ode-method", cld_sample,
     dict(cld=CLD_, velocity_score=velocity, shape_or_u=(4, 2), sampler="ode", method="rk4"), ValueError, "method"),
    # -- the loop ----------------------------------------------------------------------------------------------
    ("loop-step-callable", loop, dict(step=lambda u, t, h, g: u), TypeError, "step"),
    ("loop-state-numpy", loop, dict(u=np.zeros((4, 2, 2))), TypeError, "u"),
    ("loop-state-integer", loop, dict(u=torch.zeros(4, 2, 2, dtype=torch.long)), TypeError, "u"),
    ("loop-state-empty", loop, dict(u=torch.zeros(0, 2, 2)), ValueError, "u"),
    ("loop-state-vector", loop, dict(u=torch.zeros(4)), ValueError, "u"),
    ("loop-state-nan", loop, dict(u=torch.full((4, 2, 2), NAN)), ValueError, "initial state"),
    ("loop-state-inf", loop, dict(u=torch.full((4, 2, 2), float("inf"))), ValueError, "initial state"),
    ("loop-grid-unsorted", loop, dict(grid=[0.0, 0.3, 0.1]), ValueError, "grid"),
    ("loop-grid-string", loop, dict(grid="uniform"), TypeError, "grid"),
    ("loop-grid-object", loop, dict(grid=UniformGrid(4)), TypeError, "grid"),
    ("loop-grid-2d", loop, dict(grid=torch.zeros(2, 3)), ValueError, "grid"),
    ("loop-save-trajectory-removed", loop, dict(save_trajectory=True), TypeError, "save_trajectory"),
    ("loop-fuse-str", loop, dict(fuse="yes"), TypeError, "fuse"),
    ("loop-differentiable-none", loop, dict(differentiable=None), TypeError, "differentiable"),
    ("loop-callback-str", loop, dict(callback="print"), TypeError, "callback"),
    ("loop-save-at-off-grid", loop, dict(save_at=[0.5]), ValueError, "save_at"),
    ("loop-divergence-factor-zero", loop, dict(divergence_factor=0.0), ValueError, "divergence_factor"),
    # -- steps and compositions --------------------------------------------------------------------------------
    ("flow-sde-type", ExactLinearFlow, dict(sde="sde"), TypeError, "sde"),
    ("flow-sde-reverse", ExactLinearFlow, dict(sde=REVERSE), TypeError, "sde"),
    ("em-sde-type", EulerMaruyama, dict(sde=3.0), TypeError, "sde"),
    ("em-nfe-negative", EulerMaruyama, dict(sde=REVERSE, nfe=-1), ValueError, "nfe"),
    ("em-nfe-float", EulerMaruyama, dict(sde=REVERSE, nfe=1.7), TypeError, "nfe"),
    ("drift-not-callable", EulerDrift, dict(drift="b"), TypeError, "drift"),
    ("drift-nfe-negative", EulerDrift, dict(drift=velocity, nfe=-1), ValueError, "nfe"),
    ("drift-nfe-float", EulerDrift, dict(drift=velocity, nfe=1.7), TypeError, "nfe"),
    ("drift-nfe-bool", EulerDrift, dict(drift=velocity, nfe=True), TypeError, "nfe"),
    ("drift-time-point-high", EulerDrift, dict(drift=velocity, time_point=1.5), ValueError, "time_point"),
    ("drift-time-point-str", EulerDrift, dict(drift=velocity, time_point="0"), ValueError, "time_point"),
    ("drift-reads-float", EulerDrift, dict(drift=velocity, reads=[0.5]), ValueError, "reads"),
    ("drift-writes-duplicate", EulerDrift, dict(drift=velocity, writes=[1, 1]), ValueError, "writes"),
    ("drift-writes-bool", EulerDrift, dict(drift=velocity, writes=[True]), ValueError, "writes"),
    ("drift-time-dependent-int", EulerDrift, dict(drift=velocity, time_dependent=0), TypeError, "time_dependent"),
    ("drift-nfe-contradicts", EulerDrift, dict(drift=REVERSE.score_part(), nfe=0), ValueError, "nfe"),
    ("composition-empty", Composition, dict(steps=[]), ValueError, "steps"),
    ("composition-not-pairs", Composition, dict(steps=[FLOW]), TypeError, "steps"),
    ("composition-callable-op", Composition, dict(steps=[(lambda u, t, h, g: u, 1.0)]), TypeError, "steps"),
    ("composition-str-fraction", Composition, dict(steps=[(FLOW, "1")]), TypeError, "fraction"),
    ("composition-nan-fraction", Composition, dict(steps=[(FLOW, NAN)]), TypeError, "fraction"),
    ("composition-negative-fraction", Composition, dict(steps=[(FLOW, -1.0), (FLOW, 2.0)]), ValueError, "fraction"),
    ("composition-sum", Composition, dict(steps=[(FLOW, 0.5)]), ValueError, "sum"),
    ("composition-check-int", Composition, dict(steps=[(FLOW, 1.0)], check_fractions=1), TypeError,
     "check_fractions"),
    ("composition-order-zero", Composition, dict(steps=[(FLOW, 1.0)], order=0), ValueError, "order"),
    ("composition-order-str", Composition, dict(steps=[(FLOW, 1.0)], order="2"), ValueError, "order"),
    ("palindromic-not-callable", palindromic, dict(operators=[FLOW, "B"], coefficients=[0.5, 1.0, 0.5]), TypeError,
     "operators"),
    ("palindromic-three-operators", palindromic, dict(operators=[FLOW, KICK, FLOW], coefficients=[1.0]),
     ValueError, "operators"),
    ("palindromic-not-palindrome", palindromic, dict(operators=[FLOW, KICK], coefficients=[0.3, 1.0, 0.7]),
     ValueError, "palindromic"),
    ("splitting-sequence-type", splitting, dict(sequence=["A"], operators={"A": FLOW}), TypeError, "sequence"),
    ("splitting-empty", splitting, dict(sequence="  ", operators={"A": FLOW}), ValueError, "sequence"),
    ("splitting-unknown-letter", splitting, dict(sequence="AB", operators={"A": FLOW}), ValueError, "operators"),
    ("splitting-fractions-length", splitting, dict(sequence="ABA", operators={"A": FLOW, "B": KICK},
                                                   fractions=[1.0]), ValueError, "fractions"),
    ("strang-callable", strang, dict(A=FLOW, B=lambda u, t, h, g: u), TypeError, "steps"),
    ("split-step-type", split_step, dict(reverse=CLD_), TypeError, "reverse"),
    ("split-step-scheme", split_step, dict(reverse=REVERSE, scheme="yoshida"), ValueError, "scheme"),
    ("split-step-precision-shape", split_step, dict(reverse=REVERSE, precision=torch.eye(3)), ValueError,
     "precision"),
    # -- the reverse SDE ---------------------------------------------------------------------------------------
    ("reverse-sde-type", ReverseSDE, dict(sde="cld", score=velocity), TypeError, "sde"),
    ("reverse-score-type", ReverseSDE, dict(sde=CLD_, score=None), TypeError, "score"),
    ("reverse-components-range", ReverseSDE, dict(sde=CLD_, score=velocity, score_components=[-1]), ValueError,
     "score_components"),
    ("reverse-components-empty", ReverseSDE, dict(sde=CLD_, score=velocity, score_components=[]), ValueError,
     "score_components"),
    ("reverse-denoise-eps", REVERSE.denoise, dict(u=U, eps=-1e-3), ValueError, "eps"),
    ("reverse-denoise-eps-str", REVERSE.denoise, dict(u=U, eps="1e-3"), TypeError, "eps"),
    # -- reference solvers -------------------------------------------------------------------------------------
    ("ode-rtol-negative", AdaptiveProbabilityFlow, dict(rtol=-1.0), ValueError, "rtol"),
    ("ode-rtol-zero", AdaptiveProbabilityFlow, dict(rtol=0.0), ValueError, "rtol"),
    ("ode-atol-nan", AdaptiveProbabilityFlow, dict(atol=NAN), ValueError, "atol"),
    ("ode-atol-str", AdaptiveProbabilityFlow, dict(atol="1e-5"), TypeError, "atol"),
    ("ode-method", AdaptiveProbabilityFlow, dict(method="euler"), ValueError, "method"),
    ("ode-eps-zero", AdaptiveProbabilityFlow, dict(eps=0.0), ValueError, "eps"),
    ("ode-fp16", sample, dict(step="ode", grid=None, dtype=torch.float16), TypeError, "dtype"),
    ("ode-callback", sample, dict(step="ode", grid=None, callback=print), ValueError, "callback"),
    ("torchsde-method", TorchsdeSolver, dict(method="rk4"), ValueError, "method"),
    ("torchsde-noise-type", TorchsdeSolver, dict(noise_type="scalar"), ValueError, "noise_type"),
    # -- grids and the CUDA-graph loop -------------------------------------------------------------------------
    ("grid-steps-zero", UniformGrid, dict(n=0), ValueError, "n"),
    ("grid-steps-bool", UniformGrid, dict(n=True), TypeError, "n"),
    ("grid-steps-float", UniformGrid, dict(n=2.5), TypeError, "n"),
    ("grid-eps-negative", UniformGrid, dict(n=3, eps=-1.0), ValueError, "eps"),
    ("captured-like-type", CapturedLoop, dict(step=FLOW, grid=GRID, like=np.zeros((2, 2, 1))), TypeError, "like"),
    ("captured-warmup-float", CapturedLoop, dict(step=FLOW, grid=GRID, like=U, warmup=1.5), TypeError, "warmup"),
    ("captured-graph-on-cpu", CapturedLoop, dict(step=FLOW, grid=GRID, like=U, use_graph=True), RuntimeError,
     "CUDA"),
    ("captured-use-graph-str", CapturedLoop, dict(step=FLOW, grid=GRID, like=U, use_graph="yes"), TypeError,
     "use_graph"),
]


@pytest.mark.parametrize(("fn", "kwargs", "error", "name"), [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_hostile_input_raises_a_clear_error_naming_the_argument(fn, kwargs, error, name):
    with pytest.raises(error) as info:
        fn(**kwargs)
    message = str(info.value)
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message), f"{name!r} not named in: {message}"


def test_the_table_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 100


def test_a_numpy_integer_step_count_is_accepted():
    out = cld_sample(CLD_, velocity, (4, 2), np.int64(3), dtype=F64)
    assert out.nfe == 4 and splitdyn.UniformGrid(np.int32(3)).n == 3
