"""splitdyn: stochastic dynamics and splitting integrators in PyTorch.

Linear SDEs with exact transition kernels, Gaussian perturbation kernels, propagators and their splitting
compositions planned once per grid, one sampling entry point, reverse-time SDEs and probability-flow ODEs, time grids, likelihoods and exact score oracles.
"""

from .gaussian import PerturbationKernel, gaussian_log_prob, psd_cholesky
from .grids import GivenGrid, Grid, LogSNRGrid, PowerGrid, QuadraticGrid, UniformGrid, make_grid, quadratic_grid, uniform_grid
from .graphs import CapturedLoop
from .integrate import DivergenceError, Solution, integrate
from .interop import AdaptiveProbabilityFlow, ReferenceSolver, TorchsdeSolver
from .likelihood import LikelihoodResult, divergence, log_likelihood
from .linalg import apply_matrix
from .linear_sde import LinearSDE, LinearSDEBase, TimeVaryingLinearSDE, stationary_covariance, van_loan_kernel
from .moments import moment_kernels
from .processes import DiffusionProcess, SubVPSDE, VESDE, VPSDE, log_snr_bisection
from .reverse import ProbabilityFlowODE, ReverseSDE, TorchsdeAdapter
from .adaptive import AdaptiveSampler
from .final_step import score_free_denoise, tweedie_denoise
from .plan_cache import SAMPLE_PLANS, PlanCache
from .sample import SAMPLERS, sample
from .steps.predictor_corrector import pc_step
from .steps.split import split_step
from .schedules import (ConstantBeta, CosineSchedule, CustomBeta, DiscreteSchedule, GeometricSigma, LinearBeta,
                        LinearSigma, ReversedRescaling, Schedule, TimeRescaling)
from .score_matching import NoisePredictionScore, score_from_noise_prediction
from .steps import (
    BrownianNoise,
    GaussianNoise,
    CallableDrift,
    LangevinCorrector,
    NoiseSource,
    ReverseDiffusion,
    predictor_corrector,
    Composition,
    Drift,
    EulerDrift,
    EulerMaruyama,
    ExactLinearFlow,
    ExponentialODE,
    ExponentialSDE,
    Intervals,
    NoiseExponentialODE,
    ProbabilityFlowHeun,
    ProbabilityFlowRK4,
    Plan,
    Step,
    palindromic,
    splitting,
    strang,
    trotter,
)
from .steps.unipc import UniPC

__version__ = "0.1.0"

__all__ = [
    "ConstantBeta",
    "Composition",
    "CustomBeta",
    "DiffusionProcess",
    "EulerDrift",
    "EulerMaruyama",
    "ExactLinearFlow",
    "ExponentialODE",
    "ExponentialSDE",
    "NoiseExponentialODE",
    "ProbabilityFlowHeun",
    "ProbabilityFlowRK4",
    "GeometricSigma",
    "GivenGrid",
    "Grid",
    "LikelihoodResult",
    "LinearBeta",
    "LinearSigma",
    "CosineSchedule",
    "DiscreteSchedule",
    "Schedule",
    "LinearSDE",
    "LinearSDEBase",
    "LogSNRGrid",
    "NoisePredictionScore",
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
    "score_free_denoise",
    "tweedie_denoise",
    "UniPC",
    "CapturedLoop",
    "PowerGrid",
    "QuadraticGrid",
    "ReverseSDE",
    "ReversedRescaling",
    "Solution",
    "SubVPSDE",
    "TimeRescaling",
    "TimeVaryingLinearSDE",
    "TorchsdeAdapter",
    "UniformGrid",
    "VESDE",
    "VPSDE",
    "apply_matrix",
    "divergence",
    "gaussian_log_prob",
    "integrate",
    "log_likelihood",
    "log_snr_bisection",
    "make_grid",
    "moment_kernels",
    "palindromic",
    "psd_cholesky",
    "quadratic_grid",
    "score_from_noise_prediction",
    "splitting",
    "stationary_covariance",
    "strang",
    "trotter",
    "uniform_grid",
    "van_loan_kernel",
    "split_step",
    "pc_step",
    "AdaptiveSampler",
    "BrownianNoise",
    "GaussianNoise",
    "PlanCache",
    "SAMPLE_PLANS",
    "NoiseSource",
    "LangevinCorrector",
    "ReverseDiffusion",
    "predictor_corrector",
]

from .steps.base import REGISTRY  # noqa: E402

REGISTRY.include(__name__)  # list this package's steps (the test suite's order table checks every one)
