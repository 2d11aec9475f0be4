"""Steps of the sampler core: the protocol, drifts, exact flows, Euler-type steps, compositions, exponential
integrators (UniPC included) and fixed-grid Runge-Kutta steps of the probability flow.

See :mod:`splitdyn.steps.base` for the protocol every step follows (declared ``nfe`` and orders, plans).
"""

from .base import REGISTRY, AffineMap, Intervals, Plan, Step
from .composition import Composition, palindromic, splitting, strang, trotter
from .drift import CallableDrift, Drift, DriftPlan
from .euler import EulerDrift, EulerMaruyama
from .exact_flow import ExactLinearFlow
from .exponential import ExponentialODE, ExponentialSDE, NoiseExponentialODE
from .unipc import UniPC
from .runge_kutta import ProbabilityFlowHeun, ProbabilityFlowRK4
from .noise import BrownianNoise, GaussianNoise, NoiseSource, as_noise_source
from .predictor_corrector import LangevinCorrector, ReverseDiffusion, predictor_corrector

__all__ = [
    "AffineMap",
    "BrownianNoise",
    "GaussianNoise",
    "as_noise_source",
    "LangevinCorrector",
    "NoiseSource",
    "ReverseDiffusion",
    "predictor_corrector",
    "CallableDrift",
    "Composition",
    "Drift",
    "DriftPlan",
    "EulerDrift",
    "EulerMaruyama",
    "ExactLinearFlow",
    "ExponentialODE",
    "ExponentialSDE",
    "NoiseExponentialODE",
    "ProbabilityFlowHeun",
    "ProbabilityFlowRK4",
    "Intervals",
    "Plan",
    "REGISTRY",
    "Step",
    "palindromic",
    "splitting",
    "strang",
    "trotter",
    "UniPC",
]
