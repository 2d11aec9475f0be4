"""A minimal CLD-SGM training loop on the 9-mode toy mixture, then sampling with SSCS.

examples/toy_train.py is the complete pipeline (VPSDE baseline, three samplers, metrics, NLL
bound, plots); this file shows the four pieces a training loop needs.
``python docs/tutorials/toy_training_loop.py`` trains for 2000 steps (a few minutes on 2 CPU
cores); tests/test_docs.py runs it for a few steps.
"""

from __future__ import annotations

import argparse

import torch

from splitdyn.metrics import wasserstein_sliced
from splitdyn_cld import CLD, hsm_loss, sample
from splitdyn_cld.toy_data import sample_diamond
from splitdyn_cld.toy_models import cld_toy_score
from splitdyn_cld.training import make_ema


def train(steps: int = 2000, batch_size: int = 512, lr: float = 2e-3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cld = CLD()  # M = 0.25, Gamma = 1 (critical), beta = 4, gamma = 0.04, eps_num = 1e-6
    model = cld_toy_score(cld, event_shape=2)  # MixedScore around a small residual MLP
    ema = make_ema(model, decay=0.999)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x0 = sample_diamond(batch_size, generator)  # (batch, 2)
        loss = hsm_loss(model, x0, cld, generator=generator)  # eq. 9 with lambda = ell_t^-2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update_parameters(model)
        losses.append(loss.item())
    return cld, ema.module, losses


def evaluate(cld, score_model, n_samples: int = 5000, n_steps: int = 49, seed: int = 1) -> float:
    """Sliced Wasserstein-2 distance between SSCS samples (n_steps + 1 NFE) and fresh data."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        samples = sample(cld, score_model, (n_samples, 2), n_steps, "sscs", generator=generator).components()[0]
    data = sample_diamond(n_samples, torch.Generator().manual_seed(seed + 1))
    return wasserstein_sliced(samples, data, generator=torch.Generator().manual_seed(seed + 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    cld, model, losses = train(args.steps)
    k = min(100, len(losses))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    print(f"loss: first {k} steps {first:.3f}, last {k} steps {last:.3f}")
    print(f"sliced W2 of 5000 SSCS samples (50 NFE) to the data: {evaluate(cld, model):.3f}")


if __name__ == "__main__":
    main()
