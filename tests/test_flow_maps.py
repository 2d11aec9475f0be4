"""splitdyn.flow_maps: encoding and decoding through the probability flow are inverse maps, slerp interpolates
latents on the sphere, and bad inputs are refused naming the argument."""

import pytest
import torch

from splitdyn import VPSDE
from splitdyn.flow_maps import decode, encode, flow, interpolate, slerp
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD

#: The cutoff of these tests: 1e-2 keeps the tight ODE solves cheap (the flow is stiffest as t -> 0).
EPS = 1e-2


def cld_with_exact_score():
    cld = CLD(mass=0.25, beta=4.0, gamma=0.04)
    oracle = DiffusedGaussianMixture(diamond_mixture(), cld, [[cld.gamma * cld.mass]])
    return cld, (lambda u, t: oracle.component_score(u, t, [1])), oracle


def test_decode_inverts_encode_with_the_exact_cld_score():
    cld, score, oracle = cld_with_exact_score()
    u = oracle.sample(8, EPS, torch.Generator().manual_seed(0))
    z = encode(cld, score, u, eps=EPS, rtol=1e-6, atol=1e-6)
    back = decode(cld, score, z, eps=EPS, rtol=1e-6, atol=1e-6)
    assert (z - u).abs().max() > 0.1  # the latent is somewhere else
    torch.testing.assert_close(back, u, rtol=0, atol=1e-4)


def test_encoded_data_looks_like_the_prior():
    cld, score, oracle = cld_with_exact_score()
    z = encode(cld, score, oracle.sample(400, EPS, torch.Generator().manual_seed(1)), eps=EPS, rtol=1e-5, atol=1e-5)
    std = z.std(dim=(0, 2))
    assert std[0].item() == pytest.approx(1.0, abs=0.15) and std[1].item() == pytest.approx(cld.mass ** 0.5, abs=0.1)


def test_flow_returns_the_state_at_every_requested_time():
    vp = VPSDE()
    u = torch.randn(3, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    path = flow(vp, lambda x, t: -x, u, [0.1, 0.5, 1.0])  # N(0, I) is the VP flow's fixed point: u stays put
    assert path.shape == (3, 3, 1, 2)
    torch.testing.assert_close(path, u.expand(3, -1, -1, -1), rtol=0, atol=1e-6)


def test_slerp_hits_both_ends_and_keeps_the_norm_of_equal_norm_latents():
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    z1 = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    z1 = z1 / z1.flatten(1).norm(dim=1)[:, None, None] * z0.flatten(1).norm(dim=1)[:, None, None]
    path = slerp(z0, z1, torch.linspace(0, 1, 7))
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    norms = path.flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, norms[:1].expand_as(norms))
    torch.testing.assert_close(slerp(z0, z0, [0.0, 0.3, 1.0]), z0.expand(3, -1, -1, -1))  # parallel: no NaN


def test_interpolate_decodes_the_endpoints_of_encoded_states():
    cld, score, oracle = cld_with_exact_score()
    u = oracle.sample(4, EPS, torch.Generator().manual_seed(4))
    z = encode(cld, score, u, eps=EPS, rtol=1e-7, atol=1e-7)
    lines = interpolate(cld, score, z[:2], z[2:], 4, eps=EPS, rtol=1e-7, atol=1e-7)
    assert lines.shape == (4, 2, 2, 2)
    torch.testing.assert_close(lines[0], u[:2], rtol=0, atol=1e-4)
    torch.testing.assert_close(lines[-1], u[2:], rtol=0, atol=1e-4)


@pytest.mark.parametrize("call, error, name", [
    (lambda: encode(VPSDE(), lambda u, t: -u, torch.zeros(2, 2)), ValueError, "u"),
    (lambda: encode(VPSDE(), lambda u, t: -u, [[0.0]]), TypeError, "u"),
    (lambda: encode(VPSDE(), lambda u, t: -u, torch.zeros(2, 1, 2), eps=2.0), ValueError, "eps"),
    (lambda: flow(VPSDE(), lambda u, t: -u, torch.zeros(2, 1, 2), [0.5, 0.2, 0.9]), ValueError, "times"),
    (lambda: flow(VPSDE(), "score", torch.zeros(2, 1, 2), [0.1, 0.2]), TypeError, "score"),
    (lambda: slerp(torch.zeros(2, 1, 2), torch.zeros(3, 1, 2), [0.5]), ValueError, "z0 and z1"),
    (lambda: interpolate(VPSDE(), lambda u, t: -u, torch.ones(2, 1, 2), torch.ones(2, 1, 2), 1), ValueError, "n"),
])
def test_bad_inputs_are_refused_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
