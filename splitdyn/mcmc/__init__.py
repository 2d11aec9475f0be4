r"""Markov chain Monte Carlo with Langevin dynamics for a user's potential (the Langevin family).

- :mod:`~splitdyn.mcmc.targets`: a potential :math:`U` (or a log-density) with its gradient, a temperature,
  stochastic gradients;
- :mod:`~splitdyn.mcmc.overdamped`: ULA and SGLD;
- :mod:`~splitdyn.mcmc.annealed`: annealed Langevin dynamics (NCSN) with a VE score;
- :mod:`~splitdyn.mcmc.underdamped`: kinetic Langevin parts A, B, O and their splittings (BAOAB, OBABO, ...);
- :mod:`~splitdyn.mcmc.metropolis` and :mod:`~splitdyn.mcmc.hamiltonian`: MALA, HMC and generalized HMC;
- :mod:`~splitdyn.mcmc.state` and :mod:`~splitdyn.mcmc.metric`: the explicit chain state (position, energy,
  gradient) and the mass matrix;
- :mod:`~splitdyn.mcmc.adaptation`: warm-up (dual averaging, windowed mass matrix, jitter/ChEES, energy-error
  tuning of kinetic Langevin);
- :mod:`~splitdyn.mcmc.run`: :func:`run_chain` (no horizon, acceptance bookkeeping);
- :mod:`~splitdyn.mcmc.diagnostics`: ESS, R-hat (optional ``arviz-stats``), trace plots.

Every sampler is a :class:`~splitdyn.steps.base.Step`, so :func:`splitdyn.integrate` runs it too.
"""

from .adaptation import TARGET_ACCEPTANCE, WarmupResult, tuned_step, warmup
from .annealed import AnnealedLangevin, annealed_langevin, geometric_noise_levels
from .diagnostics import THRESHOLDS, MCMCWarning, effective_sample_size, plot_chains, plot_ranks, rhat, summarize
from .hamiltonian import GHMC, HMC, hamiltonian, leapfrog
from .metric import MassMatrix
from .metropolis import MALA, MetropolisPlan
from .overdamped import SGLD, ULA, sgld_grid
from .run import ChainResult, run_chain, with_momentum
from .state import ChainState, CountedPotential, TransitionInfo
from .stochastic_gradient import minibatch_gradient, noisy_potential
from .targets import LogDensity, Potential, StochasticGradient, as_potential
from .underdamped import (ForceDrift, KineticLangevin, MomentumOU, PositionDrift, kinetic_langevin, langevin_parts,
                          refresh_momentum)

__all__ = [
    "AnnealedLangevin",
    "ChainResult",
    "ChainState",
    "CountedPotential",
    "ForceDrift",
    "GHMC",
    "HMC",
    "KineticLangevin",
    "LogDensity",
    "MALA",
    "MCMCWarning",
    "MassMatrix",
    "MetropolisPlan",
    "MomentumOU",
    "PositionDrift",
    "Potential",
    "SGLD",
    "TARGET_ACCEPTANCE",
    "THRESHOLDS",
    "StochasticGradient",
    "TransitionInfo",
    "ULA",
    "WarmupResult",
    "annealed_langevin",
    "as_potential",
    "effective_sample_size",
    "geometric_noise_levels",
    "hamiltonian",
    "kinetic_langevin",
    "langevin_parts",
    "leapfrog",
    "minibatch_gradient",
    "noisy_potential",
    "plot_chains",
    "plot_ranks",
    "refresh_momentum",
    "rhat",
    "run_chain",
    "sgld_grid",
    "tuned_step",
    "warmup",
    "summarize",
    "with_momentum",
]
