"""The MCMC benchmark measures what it says: closed-form gradients equal autograd's, and each hand loop (the
per-step cost floor) is the same algorithm as the library's sampler, draw for draw."""

import math

import pytest
import torch

from _scripts import load_script
from splitdyn.mcmc import HMC, MALA, ULA, Potential, kinetic_langevin, run_chain

targets = load_script("benchmarks/_mcmc_targets.py", "bench_mcmc_targets")
F64 = torch.float64


@pytest.mark.parametrize("name", sorted(targets.SETTINGS))
def test_closed_form_gradients_equal_autograd(name):
    energy, grad = targets.torch_target(name, F64)
    x = torch.randn(7, targets.SETTINGS[name]["dim"], generator=torch.Generator().manual_seed(0), dtype=F64)
    y = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(energy(y).sum(), y)
    assert torch.allclose(grad(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(targets.SETTINGS))
def test_hand_loops_are_the_library_samplers_draw_for_draw(name):
    energy, grad = targets.torch_target(name, F64)
    U = Potential(energy, grad)
    s = targets.SETTINGS[name]
    x = s["init"] * torch.randn(5, s["dim"], generator=torch.Generator().manual_seed(0), dtype=F64)

    def gen():
        return torch.Generator().manual_seed(1)

    n, L = 30, s["leapfrog"]
    pairs = [
        (run_chain(ULA(U), x[:, None], n, s["ula"], generator=gen()).state[:, 0], targets.hand_ula(grad, x, n, s["ula"], gen())),
        (run_chain(MALA(U), x[:, None], n, s["mala"], generator=gen()).state[:, 0],
         targets.hand_mala(energy, grad, x, n, s["mala"], gen())),
        (run_chain(HMC(U, L, jitter=0.0), x[:, None], n, s["hmc"], generator=gen()).state[:, 0],
         targets.hand_hmc(energy, grad, x, n, s["hmc"], L, gen())),
        (run_chain(kinetic_langevin(U, "BAOAB"), torch.stack((x, torch.zeros_like(x)), 1), n, s["baoab"],
                   generator=gen()).state[:, 0], targets.hand_baoab(grad, x, torch.zeros_like(x), n, s["baoab"], gen())[0]),
    ]
    for ours, hand in pairs:
        assert torch.allclose(ours, hand, rtol=1e-10, atol=1e-12)
    assert math.isfinite(pairs[0][0].sum().item())
