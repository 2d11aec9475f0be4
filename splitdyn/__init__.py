"""splitdyn: stochastic dynamics and splitting integrators in PyTorch.

Linear SDEs with exact transition kernels, Gaussian perturbation kernels, propagators and their splitting
compositions, reverse-time SDEs and probability-flow ODEs, time grids, likelihoods and exact score oracles.
"""

from .gaussian import PerturbationKernel, gaussian_log_prob, psd_cholesky
from .grids import forward_times, make_grid, quadratic_grid, uniform_grid
from .integrate import Solution, integrate
from .likelihood import LikelihoodResult, divergence, log_likelihood
from .linear_sde import LinearSDE, LinearSDEBase, TimeVaryingLinearSDE, apply_matrix, stationary_covariance, van_loan_kernel
from .moments import moment_kernels
from .propagators import EulerDrift, EulerMaruyama, ExactLinearFlow, Propagator
from .reverse import ProbabilityFlowODE, ReverseSDE, TorchsdeAdapter
from .schedules import ConstantBeta, CustomBeta, LinearBeta, ReversedRescaling, TimeRescaling
from .splitting import Composition, palindromic, splitting, strang, trotter
from .samplers import sample_euler_maruyama, sample_probability_flow, sample_split, sample_torchsde, split_step

__version__ = "0.1.0"

__all__ = [
    "ConstantBeta",
    "Composition",
    "CustomBeta",
    "EulerDrift",
    "EulerMaruyama",
    "ExactLinearFlow",
    "LikelihoodResult",
    "LinearBeta",
    "LinearSDE",
    "LinearSDEBase",
    "PerturbationKernel",
    "ProbabilityFlowODE",
    "Propagator",
    "ReverseSDE",
    "ReversedRescaling",
    "Solution",
    "TimeRescaling",
    "TimeVaryingLinearSDE",
    "TorchsdeAdapter",
    "apply_matrix",
    "divergence",
    "forward_times",
    "gaussian_log_prob",
    "integrate",
    "log_likelihood",
    "make_grid",
    "moment_kernels",
    "palindromic",
    "psd_cholesky",
    "quadratic_grid",
    "splitting",
    "stationary_covariance",
    "strang",
    "trotter",
    "uniform_grid",
    "van_loan_kernel",
    "sample_euler_maruyama",
    "sample_probability_flow",
    "sample_split",
    "sample_torchsde",
    "split_step",
]
