"""Hostile input to the core modules gets a clear error of the right type that names the offending argument.

One table of ``(callable, kwargs, exception type, name)``: each case calls ``callable(**kwargs)`` and checks
the exception type and that the message contains ``name`` as a word (the argument's name, or for a callable's
output, the callable's name). Shapes, dtypes, non-finite values, times, counts, hyper-parameters and callables
returning the wrong thing (``None``, numpy arrays, floats) are covered, for splitdyn.checks, linear_sde,
schedules, moments, gaussian, score_matching, likelihood, metrics, oracles and splitdyn_cld's kernels, score,
losses and likelihood.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from splitdyn import checks
from splitdyn.gaussian import PerturbationKernel, gaussian_log_prob, psd_cholesky
from splitdyn.likelihood import divergence, log_likelihood
from splitdyn.linear_sde import LinearSDE, TimeVaryingLinearSDE, apply_matrix, stationary_covariance, van_loan_kernel
from splitdyn.metrics import mmd_rbf, mode_weight_error, wasserstein_sliced
from splitdyn.moments import moment_kernels
from splitdyn.oracles import DiffusedGaussianMixture, GaussianMixture, diamond_mixture, random_mixture
from splitdyn.reverse import ProbabilityFlowODE
from splitdyn.schedules import ConstantBeta, CustomBeta, LinearBeta, ReversedRescaling
from splitdyn.score_matching import kernel_score_matching_loss
from splitdyn_cld import CLD, MixedScore
from splitdyn_cld.kernels import (ell, forward_covariance, forward_mean_coefficients, half_step_kernel,
                                  reverse_linear_kernel, velocity_variance)
from splitdyn_cld.likelihood import nll_bound, velocity_entropy
from splitdyn_cld.losses import dsm_loss, hsm_loss, loss_weight, sample_times, score_matching_objective

F64 = torch.float64
NAN = float("nan")
CLD_ = CLD()
OU = LinearSDE([[-0.5]], [[1.0]], beta=2.0)
F2 = torch.tensor([[0.0, 1.0], [-1.0, -2.0]], dtype=F64)
GGT2 = torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=F64)
U = torch.zeros(4, 2, 2, dtype=F64)  # a CLD state batch
X0 = torch.zeros(4, 2, dtype=F64)  # CLD data batch
KERNEL = PerturbationKernel(CLD_, 0.5, U)
MIX = diamond_mixture()
ORACLE = DiffusedGaussianMixture(MIX, CLD_, [[CLD_.gamma * CLD_.mass]])
ODE = ProbabilityFlowODE(CLD_, ORACLE.score_fn([1]), score_components=[1])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the warning about the non-critical friction
    UNDERDAMPED = CLD(friction=2.0)
SAMPLES = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))


def velocity_zero(u, t):
    return torch.zeros_like(u[:, 1:])


def returns(value):
    return lambda *args, **kwargs: value


def nan_velocity(u, t):
    return torch.full_like(u[:, 1:], NAN)


def eye_callable(k):
    return lambda t: torch.eye(k, dtype=F64)


CASES = [
    # -- splitdyn.checks -------------------------------------------------------------------------------------
    ("count-bool", checks.check_count, dict(name="n", value=True), TypeError, "n"),
    ("count-float", checks.check_count, dict(name="n", value=1.5), TypeError, "n"),
    ("count-str", checks.check_count, dict(name="n", value="3"), TypeError, "n"),
    ("count-zero", checks.check_count, dict(name="n", value=0), ValueError, "n"),
    ("count-negative-numpy", checks.check_count, dict(name="nfe", value=np.int64(-1)), ValueError, "nfe"),
    ("count-float-nfe", checks.check_count, dict(name="nfe", value=1.7), TypeError, "nfe"),
    ("flag-int", checks.check_flag, dict(name="flag", value=1), TypeError, "flag"),
    ("flag-str", checks.check_flag, dict(name="flag", value="yes"), TypeError, "flag"),
    ("positive-str", checks.check_positive, dict(name="beta", value="4"), TypeError, "beta"),
    ("positive-nan", checks.check_positive, dict(name="beta", value=NAN), ValueError, "beta"),
    ("positive-vector", checks.check_positive, dict(name="beta", value=torch.ones(2)), TypeError, "beta"),
    ("nonnegative-negative", checks.check_nonnegative, dict(name="eps_num", value=-1e-3), ValueError, "eps_num"),
    ("nonnegative-vector", checks.check_nonnegative, dict(name="eps_num", value=torch.ones(3)), TypeError,
     "eps_num"),
    ("components-float", checks.check_components, dict(name="components", components=[0.5], num_components=2),
     TypeError, "components"),
    ("components-bool", checks.check_components, dict(name="components", components=[True], num_components=2),
     TypeError, "components"),
    ("components-duplicate", checks.check_components, dict(name="components", components=[1, 1], num_components=2),
     ValueError, "components"),
    ("components-empty", checks.check_components, dict(name="components", components=[], num_components=2),
     ValueError, "components"),
    ("components-out-of-range", checks.check_components, dict(name="components", components=[2], num_components=2),
     ValueError, "components"),
    ("components-str", checks.check_components, dict(name="components", components="1", num_components=2),
     TypeError, "components"),
    ("dtype-integer", checks.check_floating_dtype, dict(name="dtype", dtype=torch.int64), TypeError, "dtype"),
    ("tolerance-zero", checks.check_tolerance, dict(name="rtol", value=0.0), ValueError, "rtol"),
    ("real-str", checks.check_real, dict(name="bits_offset", value="7"), TypeError, "bits_offset"),
    ("matrix-asymmetric", checks.as_float64_matrix,
     dict(name="prior_covariance", value=[[1.0, 2.0], [0.0, 1.0]], symmetric=True), ValueError, "prior_covariance"),
    ("time-str", checks.check_time, dict(name="t", t="a", T=1.0), TypeError, "t"),
    ("state-integer", checks.check_state, dict(name="u", u=torch.zeros(3, 2, dtype=torch.long), num_components=2),
     TypeError, "u"),
    # -- splitdyn.linear_sde ---------------------------------------------------------------------------------
    ("van-loan-negative-span", van_loan_kernel, dict(F=F2, GGt=GGT2, delta=-0.1), ValueError, "delta"),
    ("van-loan-negative-entry", van_loan_kernel, dict(F=F2, GGt=GGT2, delta=torch.tensor([0.1, -0.5])),
     ValueError, "delta"),
    ("van-loan-nan-span", van_loan_kernel, dict(F=F2, GGt=GGT2, delta=NAN), ValueError, "delta"),
    ("van-loan-non-square", van_loan_kernel, dict(F=torch.zeros(2, 3), GGt=GGT2, delta=0.1), ValueError, "F"),
    ("van-loan-ggt-shape", van_loan_kernel, dict(F=F2, GGt=torch.eye(3), delta=0.1), ValueError, "GGt"),
    ("van-loan-str-matrix", van_loan_kernel, dict(F="F", GGt=GGT2, delta=0.1), TypeError, "F"),
    ("van-loan-nan-matrix", van_loan_kernel, dict(F=torch.full((2, 2), NAN), GGt=GGT2, delta=0.1), ValueError, "F"),
    ("apply-wrong-m", apply_matrix, dict(matrix=torch.eye(3), u=U), ValueError, "matrix"),
    ("apply-batch-mismatch", apply_matrix, dict(matrix=torch.eye(2).expand(5, 2, 2), u=U), ValueError, "matrix"),
    ("apply-list-matrix", apply_matrix, dict(matrix=[[1.0, 0.0], [0.0, 1.0]], u=U), TypeError, "matrix"),
    ("apply-integer-matrix", apply_matrix, dict(matrix=torch.eye(2, dtype=torch.long), u=U), TypeError, "matrix"),
    ("apply-integer-state", apply_matrix, dict(matrix=torch.eye(2), u=U.long()), TypeError, "u"),
    ("apply-1d-state", apply_matrix, dict(matrix=torch.eye(2), u=torch.zeros(4)), ValueError, "u"),
    ("linear-sde-str-drift", LinearSDE, dict(drift_matrix="a", diffusion_matrix=[[1.0]]), TypeError, "drift_matrix"),
    ("linear-sde-diffusion-rows", LinearSDE, dict(drift_matrix=[[1.0]], diffusion_matrix=[[1.0], [2.0]]),
     ValueError, "diffusion_matrix"),
    ("linear-sde-nan-drift", LinearSDE, dict(drift_matrix=[[NAN]], diffusion_matrix=[[1.0]]), ValueError,
     "drift_matrix"),
    ("linear-sde-str-beta", LinearSDE, dict(drift_matrix=[[-1.0]], diffusion_matrix=[[1.0]], beta="4"), TypeError,
     "beta"),
    ("linear-sde-zero-horizon", LinearSDE, dict(drift_matrix=[[-1.0]], diffusion_matrix=[[1.0]], T=0.0), ValueError,
     "T"),
    ("linear-sde-bool-horizon", LinearSDE, dict(drift_matrix=[[-1.0]], diffusion_matrix=[[1.0]], T=True), TypeError,
     "T"),
    ("kernel-after-horizon", OU.kernel, dict(t=1.5), ValueError, "t"),
    ("kernel-str-time", OU.kernel, dict(t="0.5"), TypeError, "t"),
    ("kernel-backwards", OU.kernel, dict(t=0.2, s=0.5), ValueError, "t"),
    ("drift-wrong-components", OU.drift, dict(u=torch.zeros(4, 2, 3), t=0.5), ValueError, "u"),
    ("drift-time-batch", OU.drift, dict(u=torch.zeros(4, 1, 3), t=torch.full((3,), 0.5)), ValueError, "t"),
    ("reverse-precision-shape", OU.reverse_linear_part, dict(precision=torch.eye(2)), ValueError, "precision"),
    ("stationary-non-square", stationary_covariance, dict(F=[[1.0, 2.0]], GGt=[[1.0]]), ValueError, "F"),
    ("time-varying-g-rows", TimeVaryingLinearSDE,
     dict(drift_matrix=eye_callable(2), diffusion_matrix=eye_callable(3), num_components=2), ValueError,
     "diffusion_matrix"),
    ("time-varying-f-shape", TimeVaryingLinearSDE,
     dict(drift_matrix=eye_callable(3), diffusion_matrix=eye_callable(2), num_components=2), ValueError,
     "drift_matrix"),
    ("time-varying-f-none", TimeVaryingLinearSDE,
     dict(drift_matrix=returns(None), diffusion_matrix=eye_callable(1), num_components=1), TypeError, "drift_matrix"),
    ("time-varying-f-float", TimeVaryingLinearSDE,
     dict(drift_matrix=returns(-1.0), diffusion_matrix=eye_callable(1), num_components=1), ValueError,
     "drift_matrix"),
    ("time-varying-float-count", TimeVaryingLinearSDE,
     dict(drift_matrix=eye_callable(2), diffusion_matrix=eye_callable(2), num_components=2.0), TypeError,
     "num_components"),
    ("time-varying-bool-count", TimeVaryingLinearSDE,
     dict(drift_matrix=eye_callable(1), diffusion_matrix=eye_callable(1), num_components=True), TypeError,
     "num_components"),
    ("time-varying-not-callable", TimeVaryingLinearSDE,
     dict(drift_matrix=torch.eye(1), diffusion_matrix=eye_callable(1), num_components=1), TypeError, "drift_matrix"),
    ("time-varying-zero-rtol", TimeVaryingLinearSDE,
     dict(drift_matrix=eye_callable(1), diffusion_matrix=eye_callable(1), num_components=1, rtol=0.0), ValueError,
     "rtol"),
    ("time-varying-negative-atol", TimeVaryingLinearSDE,
     dict(drift_matrix=eye_callable(1), diffusion_matrix=eye_callable(1), num_components=1, atol=-1.0), ValueError,
     "atol"),
    # -- splitdyn.schedules ----------------------------------------------------------------------------------
    ("constant-beta-negative", ConstantBeta, dict(value=-1.0), ValueError, "beta"),
    ("linear-beta-negative-min", LinearBeta, dict(beta_min=-0.1), ValueError, "beta_min"),
    ("linear-beta-str-max", LinearBeta, dict(beta_max="20"), TypeError, "beta_max"),
    ("custom-beta-not-callable", CustomBeta, dict(beta=1.0, integral=lambda t: t), TypeError, "beta"),
    ("custom-beta-returns-none", CustomBeta(returns(None), lambda t: t).beta, dict(t=0.5), TypeError, "beta"),
    ("custom-beta-negative-rate", CustomBeta(lambda t: -t, lambda t: t).beta, dict(t=0.5), ValueError, "beta"),
    ("custom-integral-returns-str", CustomBeta(lambda t: t, returns("x")).integral, dict(t=0.5), TypeError,
     "integral"),
    ("reversed-rescaling-base", ReversedRescaling, dict(base="b", T=1.0), TypeError, "base"),
    ("increment-str-time", ConstantBeta(2.0).increment, dict(t="a", s=0.0), TypeError, "t"),
    # -- splitdyn.moments ------------------------------------------------------------------------------------
    ("moments-not-an-sde", moment_kernels, dict(sde="sde", t=0.5), TypeError, "sde"),
    ("moments-backwards", moment_kernels, dict(sde=OU, t=0.2, s=0.5), ValueError, "t"),
    ("moments-zero-rtol", moment_kernels, dict(sde=OU, t=0.5, rtol=0.0), ValueError, "rtol"),
    ("moments-method-int", moment_kernels, dict(sde=OU, t=0.5, method=3), TypeError, "method"),
    ("moments-nan-time", moment_kernels, dict(sde=OU, t=NAN), ValueError, "t"),
    # -- splitdyn.gaussian -----------------------------------------------------------------------------------
    ("kernel-not-an-sde", PerturbationKernel, dict(sde="sde", t=0.5, initial_mean=U), TypeError, "sde"),
    ("kernel-mean-components", PerturbationKernel, dict(sde=CLD_, t=0.5, initial_mean=torch.zeros(4, 1, 2)),
     ValueError, "initial_mean"),
    ("kernel-integer-mean", PerturbationKernel, dict(sde=CLD_, t=0.5, initial_mean=U.long()), TypeError,
     "initial_mean"),
    ("kernel-empty-batch", PerturbationKernel, dict(sde=CLD_, t=0.5, initial_mean=torch.zeros(0, 2, 2)),
     ValueError, "initial_mean"),
    ("kernel-negative-covariance", PerturbationKernel,
     dict(sde=CLD_, t=0.5, initial_mean=U, initial_covariance=[[0.0, 0.0], [0.0, -1.0]]), ValueError,
     "initial_covariance"),
    ("kernel-covariance-shape", PerturbationKernel,
     dict(sde=CLD_, t=0.5, initial_mean=U, initial_covariance=[[1.0]]), ValueError, "initial_covariance"),
    ("kernel-asymmetric-covariance", PerturbationKernel,
     dict(sde=CLD_, t=0.5, initial_mean=U, initial_covariance=[[1.0, 0.5], [0.0, 1.0]]), ValueError,
     "initial_covariance"),
    ("kernel-negative-eps", PerturbationKernel, dict(sde=CLD_, t=0.5, initial_mean=U, eps_num=-1.0), ValueError,
     "eps_num"),
    ("kernel-time-batch", PerturbationKernel, dict(sde=CLD_, t=torch.full((3,), 0.5), initial_mean=U), ValueError,
     "t"),
    ("score-from-noise-shape", KERNEL.score_from_noise, dict(noise=torch.zeros(4, 2, 3)), ValueError, "noise"),
    ("score-from-noise-float-component", KERNEL.score_from_noise, dict(noise=U, components=[0.5]), TypeError,
     "components"),
    ("score-from-noise-bool-component", KERNEL.score_from_noise, dict(noise=U, components=[True]), TypeError,
     "components"),
    ("score-from-noise-duplicate", KERNEL.score_from_noise, dict(noise=U, components=[1, 1]), ValueError,
     "components"),
    ("score-from-noise-out-of-range", KERNEL.score_from_noise, dict(noise=U, components=[2]), ValueError,
     "components"),
    ("kernel-sample-nan-noise", KERNEL.sample, dict(noise=torch.full_like(U, NAN)), ValueError, "noise"),
    ("kernel-sample-numpy-noise", KERNEL.sample, dict(noise=np.zeros((4, 2, 2))), TypeError, "noise"),
    ("kernel-score-batch", KERNEL.score, dict(u=torch.zeros(3, 2, 2)), ValueError, "u"),
    ("kernel-score-duplicate", KERNEL.score, dict(u=U, components=[0, 0]), ValueError, "components"),
    ("kernel-log-prob-integer", KERNEL.log_prob, dict(u=U.long()), TypeError, "u"),
    ("psd-cholesky-list", psd_cholesky, dict(covariance=[[1.0]]), TypeError, "covariance"),
    ("psd-cholesky-negative", psd_cholesky, dict(covariance=torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=F64)),
     ValueError, "covariance"),
    ("psd-cholesky-vector", psd_cholesky, dict(covariance=torch.ones(3)), ValueError, "covariance"),
    ("gaussian-log-prob-shape", gaussian_log_prob, dict(u=U, covariance=torch.eye(3)), ValueError, "covariance"),
    ("gaussian-log-prob-negative", gaussian_log_prob, dict(u=U, covariance=-torch.eye(2)), ValueError,
     "covariance"),
    ("gaussian-log-prob-mean-shape", gaussian_log_prob, dict(u=U, covariance=torch.eye(2), mean=torch.zeros(3, 2, 2)),
     ValueError, "mean"),
    ("gaussian-log-prob-numpy", gaussian_log_prob, dict(u=np.zeros((4, 2, 2)), covariance=torch.eye(2)), TypeError,
     "u"),
    # -- splitdyn.score_matching -----------------------------------------------------------------------------
    ("ksm-score-not-callable", kernel_score_matching_loss, dict(score="s", kernel=KERNEL), TypeError, "score"),
    ("ksm-kernel-type", kernel_score_matching_loss, dict(score=velocity_zero, kernel="k"), TypeError, "kernel"),
    ("ksm-float-component", kernel_score_matching_loss, dict(score=velocity_zero, kernel=KERNEL, components=[0.5]),
     TypeError, "components"),
    ("ksm-duplicate-component", kernel_score_matching_loss,
     dict(score=velocity_zero, kernel=KERNEL, components=[1, 1]), ValueError, "components"),
    ("ksm-score-none", kernel_score_matching_loss, dict(score=returns(None), kernel=KERNEL, components=[1]),
     TypeError, "score"),
    ("ksm-score-numpy", kernel_score_matching_loss,
     dict(score=returns(np.zeros((4, 1, 2))), kernel=KERNEL, components=[1]), TypeError, "score"),
    ("ksm-score-float", kernel_score_matching_loss, dict(score=returns(0.0), kernel=KERNEL, components=[1]),
     TypeError, "score"),
    ("ksm-score-shape", kernel_score_matching_loss, dict(score=velocity_zero, kernel=KERNEL), ValueError, "score"),
    ("ksm-weight-shape", kernel_score_matching_loss,
     dict(score=velocity_zero, kernel=KERNEL, components=[1], weight=torch.ones(3)), ValueError, "weight"),
    ("ksm-weight-str", kernel_score_matching_loss,
     dict(score=velocity_zero, kernel=KERNEL, components=[1], weight="a"), TypeError, "weight"),
    ("ksm-nan-noise", kernel_score_matching_loss,
     dict(score=velocity_zero, kernel=KERNEL, components=[1], noise=torch.full_like(U, NAN)), ValueError, "noise"),
    # -- splitdyn.likelihood ---------------------------------------------------------------------------------
    ("likelihood-ode-type", log_likelihood, dict(ode="ode", u=U), TypeError, "ode"),
    ("likelihood-zero-rtol", log_likelihood, dict(ode=ODE, u=U, rtol=0.0), ValueError, "rtol"),
    ("likelihood-negative-rtol", log_likelihood, dict(ode=ODE, u=U, rtol=-1e-5), ValueError, "rtol"),
    ("likelihood-nan-rtol", log_likelihood, dict(ode=ODE, u=U, rtol=NAN), ValueError, "rtol"),
    ("likelihood-str-atol", log_likelihood, dict(ode=ODE, u=U, atol="1e-5"), TypeError, "atol"),
    ("likelihood-prior-shape", log_likelihood, dict(ode=ODE, u=U, prior_covariance=torch.eye(3)), ValueError,
     "prior_covariance"),
    ("likelihood-prior-negative", log_likelihood, dict(ode=ODE, u=U, prior_covariance=[[1.0, 0.0], [0.0, -1.0]]),
     ValueError, "prior_covariance"),
    ("likelihood-fp16-tolerance", log_likelihood, dict(ode=ODE, u=U.half(), rtol=1e-5), ValueError, "rtol"),
    ("likelihood-nan-state", log_likelihood, dict(ode=ODE, u=torch.full_like(U, NAN)), ValueError, "u"),
    ("likelihood-empty-batch", log_likelihood, dict(ode=ODE, u=torch.zeros(0, 2, 2)), ValueError, "u"),
    ("likelihood-nan-vector-field", log_likelihood,
     dict(ode=ProbabilityFlowODE(CLD_, nan_velocity, score_components=[1]), u=U), ValueError, "score"),
    ("likelihood-unknown-trace", log_likelihood, dict(ode=ODE, u=U, trace="fast"), ValueError, "trace"),
    ("likelihood-zero-t0", log_likelihood, dict(ode=ODE, u=U, t0=0.0), ValueError, "t0"),
    ("likelihood-method-int", log_likelihood, dict(ode=ODE, u=U, method=5), TypeError, "method"),
    ("divergence-not-callable", divergence, dict(field="f", u=U, t=0.5), TypeError, "field"),
    ("divergence-field-none", divergence, dict(field=returns(None), u=U, t=0.5), TypeError, "field"),
    ("divergence-field-shape", divergence, dict(field=velocity_zero, u=U, t=0.5), ValueError, "field"),
    ("divergence-probe-shape", divergence, dict(field=lambda u, t: u, u=U, t=0.5, probe=torch.ones(4, 2)),
     ValueError, "probe"),
    # -- splitdyn.metrics ------------------------------------------------------------------------------------
    ("sliced-float-projections", wasserstein_sliced, dict(x=SAMPLES, y=SAMPLES, num_projections=2.5), TypeError,
     "num_projections"),
    ("sliced-bool-projections", wasserstein_sliced, dict(x=SAMPLES, y=SAMPLES, num_projections=True), TypeError,
     "num_projections"),
    ("sliced-numpy-zero-projections", wasserstein_sliced, dict(x=SAMPLES, y=SAMPLES, num_projections=np.int64(0)),
     ValueError, "num_projections"),
    ("mmd-one-max-sample", mmd_rbf, dict(x=SAMPLES, y=SAMPLES, max_samples=1), ValueError, "max_samples"),
    ("mmd-str-bandwidth", mmd_rbf, dict(x=SAMPLES, y=SAMPLES, bandwidths="0.1"), TypeError, "bandwidths"),
    ("mmd-no-bandwidth", mmd_rbf, dict(x=SAMPLES, y=SAMPLES, bandwidths=[]), ValueError, "bandwidths"),
    ("sliced-integer-samples", wasserstein_sliced, dict(x=SAMPLES.long(), y=SAMPLES), TypeError, "x"),
    ("sliced-empty-samples", wasserstein_sliced, dict(x=torch.zeros(0, 2), y=SAMPLES), ValueError, "x"),
    ("mode-weight-mixture-type", mode_weight_error, dict(samples=SAMPLES, mixture="diamond"), TypeError, "mixture"),
    # -- splitdyn.oracles ------------------------------------------------------------------------------------
    ("mixture-str-means", GaussianMixture, dict(means="a", stds=0.1), TypeError, "means"),
    ("mixture-negative-std", GaussianMixture, dict(means=[[0.0, 0.0]], stds=-0.1), ValueError, "stds"),
    ("mixture-weights-shape", GaussianMixture, dict(means=[[0.0, 0.0]], stds=0.1, weights=[1.0, 2.0]), ValueError,
     "weights"),
    ("mixture-negative-weight", GaussianMixture, dict(means=[[0.0, 0.0]], stds=0.1, weights=[-1.0]), ValueError,
     "weights"),
    ("mixture-nan-mean", GaussianMixture, dict(means=[[NAN, 0.0]], stds=0.1), ValueError, "means"),
    ("mixture-sample-float-n", MIX.sample, dict(n=2.5), TypeError, "n"),
    ("mixture-sample-bool-n", MIX.sample, dict(n=True), TypeError, "n"),
    ("mixture-sample-zero-n", MIX.sample, dict(n=0), ValueError, "n"),
    ("mixture-sample-integer-dtype", MIX.sample, dict(n=4, dtype=torch.int64), TypeError, "dtype"),
    ("mixture-sample-str-flag", MIX.sample, dict(n=4, return_labels="yes"), TypeError, "return_labels"),
    ("mixture-score-empty", MIX.score, dict(x=torch.zeros(0, 2)), ValueError, "x"),
    ("mixture-log-prob-shape", MIX.log_prob, dict(x=torch.zeros(3, 3)), ValueError, "x"),
    ("mixture-log-prob-integer", MIX.log_prob, dict(x=torch.zeros(3, 2, dtype=torch.long)), TypeError, "x"),
    ("diamond-str-std", diamond_mixture, dict(std="0.04"), TypeError, "std"),
    ("random-mixture-float-d", random_mixture, dict(d=2.0), TypeError, "d"),
    ("random-mixture-zero-K", random_mixture, dict(K=0), ValueError, "K"),
    ("random-mixture-int-flag", random_mixture, dict(random_weights=1), TypeError, "random_weights"),
    ("oracle-mixture-type", DiffusedGaussianMixture, dict(mixture="m", sde=CLD_), TypeError, "mixture"),
    ("oracle-sde-type", DiffusedGaussianMixture, dict(mixture=MIX, sde="sde"), TypeError, "sde"),
    ("oracle-negative-covariance", DiffusedGaussianMixture, dict(mixture=MIX, sde=CLD_, initial_covariance=[[-0.1]]),
     ValueError, "initial_covariance"),
    ("oracle-covariance-first-row", DiffusedGaussianMixture,
     dict(mixture=MIX, sde=CLD_, initial_covariance=[[1.0, 0.0], [0.0, 1.0]]), ValueError, "initial_covariance"),
    ("oracle-nan-state", ORACLE.score, dict(u=torch.full_like(U, NAN), t=0.5), ValueError, "u"),
    ("oracle-empty-state", ORACLE.score, dict(u=torch.zeros(0, 2, 2), t=0.5), ValueError, "u"),
    ("oracle-integer-state", ORACLE.score, dict(u=U.long(), t=0.5), TypeError, "u"),
    ("oracle-str-time", ORACLE.score, dict(u=U, t="0.5"), TypeError, "t"),
    ("oracle-time-after-horizon", ORACLE.score, dict(u=U, t=1.5), ValueError, "t"),
    ("oracle-float-component", ORACLE.component_score, dict(u=U, t=0.5, components=[0.5]), TypeError, "components"),
    ("oracle-bool-component", ORACLE.component_score, dict(u=U, t=0.5, components=[True]), TypeError, "components"),
    ("oracle-duplicate-component", ORACLE.component_score, dict(u=U, t=0.5, components=[1, 1]), ValueError,
     "components"),
    ("oracle-no-component", ORACLE.component_score, dict(u=U, t=0.5, components=[]), ValueError, "components"),
    ("oracle-score-fn-out-of-range", ORACLE.score_fn, dict(components=[2]), ValueError, "components"),
    ("oracle-sample-float-n", ORACLE.sample, dict(n=1.5, t=0.5), TypeError, "n"),
    ("oracle-sample-numpy-zero-n", ORACLE.sample, dict(n=np.int64(0), t=0.5), ValueError, "n"),
    ("oracle-sample-integer-dtype", ORACLE.sample, dict(n=4, t=0.5, dtype=torch.int32), TypeError, "dtype"),
    ("oracle-data-marginal-times", ORACLE.data_marginal, dict(t=torch.tensor([0.1, 0.2])), ValueError, "t"),
    # -- splitdyn_cld.kernels --------------------------------------------------------------------------------
    ("ell-unknown-kind", ell, dict(cld=CLD_, t=0.5, kind="vp"), ValueError, "kind"),
    ("ell-cld-type", ell, dict(cld="cld", t=0.5), TypeError, "cld"),
    ("ell-after-horizon", ell, dict(cld=CLD_, t=1.5), ValueError, "t"),
    ("ell-singular", ell, dict(cld=CLD(eps_num=0.0), t=0.0), ValueError, "eps_num"),
    ("forward-covariance-one-variance", forward_covariance, dict(cld=CLD_, t=0.5, initial_covariance=(0.1,)),
     ValueError, "initial_covariance"),
    ("forward-covariance-negative", forward_covariance, dict(cld=CLD_, t=0.5, initial_covariance=(-0.1, 0.0)),
     ValueError, "initial_covariance"),
    ("forward-covariance-off-diagonal", forward_covariance,
     dict(cld=CLD_, t=0.5, initial_covariance=torch.tensor([[1.0, 0.5], [0.5, 1.0]])), ValueError,
     "initial_covariance"),
    ("forward-covariance-unknown-str", forward_covariance, dict(cld=CLD_, t=0.5, initial_covariance="vp"),
     ValueError, "initial_covariance"),
    ("half-step-negative", half_step_kernel, dict(cld=CLD_, delta_B=-0.1), ValueError, "delta_B"),
    ("reverse-kernel-backwards", reverse_linear_kernel, dict(cld=CLD_, tau=0.2, s=0.5), ValueError, "tau"),
    ("mean-coefficients-non-critical", forward_mean_coefficients, dict(cld=UNDERDAMPED, t=0.5), ValueError,
     "friction"),
    ("velocity-variance-str-time", velocity_variance, dict(cld=CLD_, t="a"), TypeError, "t"),
    # -- splitdyn_cld.score ----------------------------------------------------------------------------------
    ("mixed-net-not-callable", MixedScore, dict(net="net", cld=CLD_), TypeError, "net"),
    ("mixed-cld-type", MixedScore, dict(net=velocity_zero, cld="cld"), TypeError, "cld"),
    ("mixed-str-flag", MixedScore, dict(net=velocity_zero, cld=CLD_, mixed="yes"), TypeError, "mixed"),
    ("mixed-unknown-kind", MixedScore, dict(net=velocity_zero, cld=CLD_, kind="vp"), ValueError, "kind"),
    ("mixed-net-returns-none", MixedScore(returns(None), CLD_), dict(u=U, t=0.5), TypeError, "net"),
    ("mixed-net-returns-numpy", MixedScore(returns(np.zeros((4, 1, 2))), CLD_), dict(u=U, t=0.5), TypeError, "net"),
    ("mixed-net-shape", MixedScore(lambda u, t: u, CLD_), dict(u=U, t=0.5), ValueError, "net"),
    ("mixed-empty-batch", MixedScore(velocity_zero, CLD_), dict(u=torch.zeros(0, 2, 2), t=0.5), ValueError, "u"),
    ("mixed-time-batch", MixedScore(velocity_zero, CLD_), dict(u=U, t=torch.full((3,), 0.5)), ValueError, "t"),
    ("mixed-coefficients-float-batch", MixedScore(velocity_zero, CLD_).coefficients, dict(t=0.5, batch=2.5),
     TypeError, "batch"),
    # -- splitdyn_cld.losses ---------------------------------------------------------------------------------
    ("sample-times-float-batch", sample_times, dict(batch=2.5, T=1.0), TypeError, "batch"),
    ("sample-times-zero-batch", sample_times, dict(batch=0, T=1.0), ValueError, "batch"),
    ("sample-times-cutoff", sample_times, dict(batch=4, T=1.0, t_min=1.0), ValueError, "t_min"),
    ("loss-weight-unknown", loss_weight, dict(cld=CLD_, t=0.5, weighting="uniform"), ValueError, "weighting"),
    ("loss-weight-cld-type", loss_weight, dict(cld="cld", t=0.5), TypeError, "cld"),
    ("objective-nan-noise", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, noise=torch.full((4, 2, 2), NAN)), ValueError, "noise"),
    ("objective-numpy-noise", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, noise=np.zeros((4, 2, 2))), TypeError, "noise"),
    ("objective-noise-shape", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, noise=torch.zeros(4, 1, 2)), ValueError, "noise"),
    ("objective-integer-noise", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, noise=torch.zeros(4, 2, 2, dtype=torch.long)), TypeError, "noise"),
    ("objective-integer-data", score_matching_objective, dict(score=velocity_zero, x0=X0.long(), cld=CLD_),
     TypeError, "x0"),
    ("objective-empty-batch", score_matching_objective, dict(score=velocity_zero, x0=torch.zeros(0, 2), cld=CLD_),
     ValueError, "x0"),
    ("objective-list-data", score_matching_objective, dict(score=velocity_zero, x0=[[0.0, 0.0]], cld=CLD_),
     TypeError, "x0"),
    ("objective-unknown-kind", score_matching_objective, dict(score=velocity_zero, x0=X0, cld=CLD_, kind="vp"),
     ValueError, "kind"),
    ("objective-unknown-reduction", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, reduction="max"), ValueError, "reduction"),
    ("objective-score-none", score_matching_objective, dict(score=returns(None), x0=X0, cld=CLD_), TypeError,
     "score"),
    ("objective-score-numpy", score_matching_objective, dict(score=returns(np.zeros((4, 1, 2))), x0=X0, cld=CLD_),
     TypeError, "score"),
    ("objective-score-float", score_matching_objective, dict(score=returns(0.0), x0=X0, cld=CLD_), TypeError,
     "score"),
    ("objective-score-shape", score_matching_objective, dict(score=lambda u, t: u, x0=X0, cld=CLD_), ValueError,
     "score"),
    ("objective-v0-with-hsm", score_matching_objective, dict(score=velocity_zero, x0=X0, cld=CLD_, v0=X0),
     ValueError, "v0"),
    ("objective-v0-shape", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, kind="dsm", v0=torch.zeros(3, 2)), ValueError, "v0"),
    ("objective-nan-v0", score_matching_objective,
     dict(score=velocity_zero, x0=X0, cld=CLD_, kind="dsm", v0=torch.full((4, 2), NAN)), ValueError, "v0"),
    ("objective-zero-time", score_matching_objective, dict(score=velocity_zero, x0=X0, cld=CLD_, t=0.0), ValueError,
     "t"),
    ("objective-time-batch", score_matching_objective, dict(score=velocity_zero, x0=X0, cld=CLD_, t=[0.5] * 3),
     ValueError, "t"),
    ("objective-score-not-callable", score_matching_objective, dict(score="s", x0=X0, cld=CLD_), TypeError, "score"),
    ("hsm-zero-cutoff", hsm_loss, dict(score_model=velocity_zero, x0=X0, cld=CLD_, t_min=0.0), ValueError, "t_min"),
    ("dsm-unknown-weighting", dsm_loss, dict(score_model=velocity_zero, x0=X0, cld=CLD_, weighting="x"), ValueError,
     "weighting"),
    # -- splitdyn_cld.likelihood -----------------------------------------------------------------------------
    ("entropy-float-dimension", velocity_entropy, dict(cld=CLD_, dimension=2.5), TypeError, "dimension"),
    ("entropy-zero-dimension", velocity_entropy, dict(cld=CLD_, dimension=0), ValueError, "dimension"),
    ("entropy-cld-type", velocity_entropy, dict(cld="cld", dimension=2), TypeError, "cld"),
    ("nll-cld-type", nll_bound, dict(cld="cld", velocity_score=velocity_zero, x0=X0), TypeError, "cld"),
    ("nll-score-not-callable", nll_bound, dict(cld=CLD_, velocity_score="s", x0=X0), TypeError, "velocity_score"),
    ("nll-integer-data", nll_bound, dict(cld=CLD_, velocity_score=velocity_zero, x0=X0.long()), TypeError, "x0"),
    ("nll-empty-batch", nll_bound, dict(cld=CLD_, velocity_score=velocity_zero, x0=torch.zeros(0, 2)), ValueError,
     "x0"),
    ("nll-str-offset", nll_bound, dict(cld=CLD_, velocity_score=velocity_zero, x0=X0, bits_offset="7"), TypeError,
     "bits_offset"),
    ("nll-numpy-v0", nll_bound, dict(cld=CLD_, velocity_score=velocity_zero, x0=X0, v0=np.zeros((4, 2))), TypeError,
     "v0"),
    ("nll-zero-rtol", nll_bound, dict(cld=CLD_, velocity_score=velocity_zero, x0=X0, rtol=0.0), ValueError, "rtol"),
    ("nll-prior-shape", nll_bound,
     dict(cld=CLD_, velocity_score=velocity_zero, x0=X0, prior_covariance=torch.eye(3)), ValueError,
     "prior_covariance"),
    ("nll-nan-score", nll_bound, dict(cld=CLD_, velocity_score=nan_velocity, x0=X0), ValueError, "score"),
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
