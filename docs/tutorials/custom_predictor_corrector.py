"""Compose custom predictor-corrector samplers from steps (the page ``custom_predictor_corrector.rst``).

CLD with the exact score of the paper's 2-D diamond mixture; samplers compared by the sliced Wasserstein-2
distance of their (denoised) samples to fresh data samples, at equal NFE.

Run: ``python docs/tutorials/custom_predictor_corrector.py`` (about a minute on two cores).
"""

from __future__ import annotations

import torch

from splitdyn import (
    Composition,
    EulerMaruyama,
    LangevinCorrector,
    ReverseDiffusion,
    ReverseSDE,
    predictor_corrector,
    sample,
    split_step,
    uniform_grid,
)
from splitdyn.metrics import wasserstein_sliced
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD


def setup():
    """The data, CLD, and its reverse SDE with the exact velocity score."""
    mixture = diamond_mixture()
    cld = CLD()
    score = DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]]).score_fn([1])
    return mixture, cld, ReverseSDE(cld, score, score_components=[1])


def samplers(reverse):
    """name -> step factory; every step is a Step, so sample() / integrate() run them unchanged."""
    return {
        # the paper's splitting sampler alone
        "SSCS": lambda r: split_step(r),
        # Song et al.'s recipe: a predictor, then one Langevin move (signal-to-noise rule, r = 0.16); for CLD
        # the move acts on the velocity given the position
        "SSCS + Langevin": lambda r: predictor_corrector(split_step(r), LangevinCorrector(r, snr=0.16)),
        # any Step is a predictor: here the ancestral (reverse-diffusion) step
        "ancestral + Langevin": lambda r: predictor_corrector(ReverseDiffusion(r), LangevinCorrector(r, snr=0.16)),
        # a hand-written composition: the predictor, then two correctors with different rules; the rate rule
        # (epsilon proportional to h) keeps the sampler convergent as h -> 0
        "EM + 2 correctors": lambda r: Composition([
            (EulerMaruyama(r), 1.0),
            (LangevinCorrector(r, snr=0.1), 1.0),
            (LangevinCorrector(r, rate=1.0), 1.0),
        ]),
    }


def compare(nfe: int = 100, samples: int = 4000, seed: int = 0) -> dict[str, tuple[int, float]]:
    """name -> (NFE, sliced W2 to data) with about ``nfe`` score evaluations each (denoising included)."""
    mixture, cld, reverse = setup()
    data = mixture.sample(samples, torch.Generator().manual_seed(123), dtype=torch.float64)
    out = {}
    for name, factory in samplers(reverse).items():
        per_step = factory(reverse).nfe
        steps = max(1, (nfe - 1) // per_step)
        solution = sample(cld, reverse.score, (samples, 2), uniform_grid(steps, cld.T, 1e-3), step=factory,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = solution.components()[0]
        out[name] = (solution.nfe, wasserstein_sliced(x, data, generator=torch.Generator().manual_seed(0)))
    floor = wasserstein_sliced(mixture.sample(samples, torch.Generator().manual_seed(7), dtype=torch.float64), data,
                               generator=torch.Generator().manual_seed(0))
    out["fresh data sample"] = (0, floor)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    for budget in (50, 200):
        for name, (nfe, sw2) in compare(budget).items():
            print(f"NFE budget {budget:4d}  {name:22s} NFE {nfe:4d}  SW2 {sw2:.4f}")
