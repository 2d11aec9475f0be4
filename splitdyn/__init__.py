"""splitdyn: stochastic dynamics and splitting integrators in PyTorch.

Linear SDEs with exact transition kernels, Gaussian perturbation kernels, propagators and their splitting
compositions planned once per grid, one sampling entry point, reverse-time SDEs and probability-flow ODEs, time grids, likelihoods and exact score oracles.
"""

from .gaussian import PerturbationKernel, gaussian_log_prob, psd_cholesky
from .grids import forward_times, make_grid, quadratic_grid, uniform_grid
from .integrate import DivergenceError, Solution, integrate
from .interop import AdaptiveProbabilityFlow, ReferenceSolver, TorchsdeSolver
from .likelihood import LikelihoodResult, divergence, log_likelihood
from .linear_sde import LinearSDE, LinearSDEBase, TimeVaryingLinearSDE, apply_matrix, stationary_covariance, van_loan_kernel
from .moments import moment_kernels
from .reverse import ProbabilityFlowODE, ReverseSDE, TorchsdeAdapter
from .sample import SAMPLERS, sample, split_step
from .schedules import ConstantBeta, CustomBeta, LinearBeta, ReversedRescaling, TimeRescaling
from .steps import (
    CallableDrift,
    Composition,
    Drift,
    EulerDrift,
    EulerMaruyama,
    ExactLinearFlow,
    Intervals,
    Plan,
    Step,
    palindromic,
    splitting,
    strang,
    trotter,
)

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
    "Plan",
    "Step",
    "Intervals",
    "Drift",
    "CallableDrift",
    "DivergenceError",
    "AdaptiveProbabilityFlow",
    "ReferenceSolver",
    "TorchsdeSolver",
    "SAMPLERS",
    "sample",
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
    "split_step",
]
