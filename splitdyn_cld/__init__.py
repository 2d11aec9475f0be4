"""splitdyn_cld: critically-damped Langevin diffusion score-based generative models on top of splitdyn."""

from .kernels import ell, forward_covariance, forward_mean_matrix, half_step_kernel, velocity_variance
from .likelihood import NLLBound, nll_bound
from .losses import dsm_loss, hsm_loss, sample_times
from .process import CLD
from .samplers import SAMPLER_NAMES, sample
from .score import MixedScore
from .kernels import (forward_covariance_determinant, forward_mean_coefficients, perturbation_cholesky,
                      reverse_linear_kernel)
from .losses import loss_weight, score_matching_objective
from .likelihood import velocity_entropy

__all__ = [
    "CLD",
    "MixedScore",
    "NLLBound",
    "SAMPLER_NAMES",
    "dsm_loss",
    "ell",
    "forward_covariance",
    "forward_mean_matrix",
    "half_step_kernel",
    "hsm_loss",
    "nll_bound",
    "sample",
    "sample_times",
    "velocity_variance",
    "forward_covariance_determinant",
    "forward_mean_coefficients",
    "loss_weight",
    "perturbation_cholesky",
    "reverse_linear_kernel",
    "score_matching_objective",
    "velocity_entropy",
]

from splitdyn.steps.base import REGISTRY  # noqa: E402

REGISTRY.include(__name__)  # list this package's steps (the test suite's order table checks every one)
