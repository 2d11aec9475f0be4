"""Gaussian perturbation kernels (:mod:`splitdyn.gaussian`): moments, scores, stabiliser, log densities."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from splitdyn import LinearBeta, LinearSDE, PerturbationKernel, gaussian_log_prob, psd_cholesky
from splitdyn_cld import CLD

F64 = torch.float64


def cld_like_sde():
    F = torch.tensor([[0.0, 4.0], [-1.0, -4.0]], dtype=F64)
    G = torch.tensor([[0.0, 0.0], [0.0, 2**0.5]], dtype=F64)
    return LinearSDE(F, G, LinearBeta(0.5, 4.0))


def gaussian_standard_errors(cov: torch.Tensor, n: int):
    """Standard errors of the sample mean and sample covariance of ``n`` Gaussian draws (Isserlis)."""
    var = torch.diagonal(cov)
    return (var / n).sqrt(), ((var[:, None] * var[None, :] + cov**2) / n).sqrt()


def test_samples_have_the_kernel_mean_and_covariance():
    sde = cld_like_sde()
    n = 20000
    mean0 = torch.tensor([1.5, -0.3], dtype=F64).reshape(1, 2, 1).expand(n, 2, 1).contiguous()
    S0 = torch.tensor([[0.2, 0.05], [0.05, 0.1]], dtype=F64)
    kernel = PerturbationKernel(sde, 0.3, mean0, S0)
    Phi, Q = sde.kernel(0.3)
    expected_cov = Phi @ S0 @ Phi.T + Q
    expected_mean = Phi @ torch.tensor([1.5, -0.3], dtype=F64)
    assert torch.allclose(kernel.covariance, expected_cov, rtol=1e-14, atol=0)
    assert torch.allclose(kernel.mean[0, :, 0], expected_mean, rtol=1e-14, atol=0)
    u, noise = kernel.sample(torch.Generator().manual_seed(0))
    x = u[:, :, 0]
    se_mean, se_cov = gaussian_standard_errors(expected_cov, n)
    sample_cov = torch.cov(x.T)
    assert ((x.mean(0) - expected_mean).abs() / se_mean).max() < 5
    assert ((sample_cov - expected_cov).abs() / se_cov).max() < 5
    # the reparametrisation is exact: u = mean + L noise
    assert torch.allclose(u, kernel.mean + torch.einsum("ij,bjn->bin", kernel.cholesky, noise), atol=1e-14)


def test_per_sample_times_use_each_samples_kernel():
    sde = cld_like_sde()
    t = torch.tensor([0.01, 0.2, 0.7, 1.0], dtype=F64)
    mean0 = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    kernel = PerturbationKernel(sde, t, mean0, eps_num=0.0)
    assert kernel.covariance.shape == (4, 2, 2) and kernel.cholesky.shape == (4, 2, 2)
    for i in range(4):
        Phi, Q = sde.kernel(t[i])
        assert torch.allclose(kernel.covariance[i], Q, rtol=1e-14, atol=0)
        assert torch.allclose(kernel.mean[i], Phi @ mean0[i], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("components", [None, [1], [0], [1, 0]])
def test_score_from_noise_equals_the_score_of_the_sample(components):
    sde = cld_like_sde()
    n = 64
    t = torch.linspace(0.05, 1.0, n, dtype=F64)
    mean0 = torch.randn(n, 2, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    kernel = PerturbationKernel(sde, t, mean0, torch.diag(torch.tensor([0.0, 0.01], dtype=F64)), eps_num=1e-6)
    u, noise = kernel.sample(torch.Generator().manual_seed(3))
    from_noise = kernel.score_from_noise(noise, components)
    direct = kernel.score(u, components)
    assert torch.allclose(from_noise, direct, rtol=1e-9, atol=1e-9 * direct.abs().max().item())
    # against an explicit -(Sigma + eps I)^{-1} (u - mean), row-selected
    precision = torch.linalg.inv(kernel.covariance + 1e-6 * torch.eye(2, dtype=F64))
    full = -torch.einsum("bij,bjn->bin", precision, u - kernel.mean)
    expected = full if components is None else full[:, components]
    assert torch.allclose(direct, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
    assert direct.shape == (n, 2 if components is None else len(components), 5)


def test_cld_velocity_score_is_minus_ell_times_the_velocity_noise():
    # paper eq. 51: with the lower Cholesky factor L, grad_v log p = -eps_v / L_vv = -ell_t eps_v
    cld = CLD()
    x0 = torch.randn(32, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    t = torch.rand(32, generator=torch.Generator().manual_seed(5), dtype=F64) * 0.99 + 0.01
    kernel = cld.perturbation_kernel(t, x0, kind="hsm")
    _, noise = kernel.sample(torch.Generator().manual_seed(6))
    ell = 1.0 / kernel.cholesky[:, 1, 1]
    velocity_score = kernel.score_from_noise(noise, components=[1])
    assert torch.allclose(velocity_score[:, 0], -ell[:, None] * noise[:, 1], rtol=1e-12, atol=1e-14)


def test_eps_num_is_added_to_the_factorised_covariance_only():
    sde = cld_like_sde()
    mean0 = torch.zeros(3, 2, 1, dtype=F64)
    t = torch.tensor([0.0, 1e-4, 0.5], dtype=F64)
    plain = PerturbationKernel(sde, t, mean0, eps_num=0.0)
    stabilised = PerturbationKernel(sde, t, mean0, eps_num=1e-3)
    assert torch.equal(plain.covariance, stabilised.covariance)
    LLt = stabilised.cholesky @ stabilised.cholesky.transpose(-1, -2)
    assert torch.allclose(LLt, plain.covariance + 1e-3 * torch.eye(2, dtype=F64), rtol=1e-12, atol=1e-15)
    assert torch.equal(stabilised.cholesky, torch.tril(stabilised.cholesky))  # positive definite: true Cholesky
    # without the stabiliser, the singular t = 0 covariance still gets a valid (zero) factor
    LLt0 = plain.cholesky @ plain.cholesky.transpose(-1, -2)
    assert torch.allclose(LLt0, plain.covariance, atol=1e-15)
    assert torch.equal(plain.cholesky[0], torch.zeros(2, 2, dtype=F64))
    # the stabiliser changes the log density accordingly
    u = torch.full((3, 2, 1), 0.01, dtype=F64)
    expected = MultivariateNormal(torch.zeros(2, dtype=F64), LLt[2]).log_prob(u[2, :, 0])
    assert torch.allclose(stabilised.log_prob(u)[2], expected, rtol=1e-12)


def test_psd_cholesky_handles_semidefinite_and_refuses_indefinite_matrices():
    pd = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=F64)
    L = psd_cholesky(torch.stack([pd, singular]))
    assert torch.allclose(L[0], torch.linalg.cholesky(pd), rtol=1e-15)
    assert torch.allclose(L[1] @ L[1].T, singular, atol=1e-14)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        psd_cholesky(torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match="non-finite"):
        psd_cholesky(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]], dtype=F64))


@pytest.mark.parametrize("batched", [False, True])
def test_gaussian_log_prob_matches_torch_multivariate_normal(batched):
    g = torch.Generator().manual_seed(7)
    batch, k, d = 6, 3, 4
    A = torch.randn(batch, k, k, generator=g, dtype=F64)
    covs = A @ A.transpose(-1, -2) + 0.3 * torch.eye(k, dtype=F64)
    cov = covs if batched else covs[0]
    mean = torch.randn(batch, k, d, generator=g, dtype=F64)
    u = torch.randn(batch, k, d, generator=g, dtype=F64)
    ours = gaussian_log_prob(u, cov, mean)
    eye = torch.eye(d, dtype=F64)
    # the flattened state (batch, k * d) has covariance Sigma kron I_d (component-major layout)
    full = torch.stack([torch.kron(covs[i] if batched else cov, eye) for i in range(batch)])
    reference = MultivariateNormal(mean.reshape(batch, -1), full).log_prob(u.reshape(batch, -1))
    assert ours.dtype == F64 and ours.shape == (batch,)
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-12)
    # float32 input is evaluated in float64
    ours32 = gaussian_log_prob(u.float(), cov, mean.float())
    assert ours32.dtype == F64
    assert torch.allclose(ours32, reference, rtol=1e-5)


def test_kernel_log_prob_matches_torch_multivariate_normal():
    sde = cld_like_sde()
    n, d = 5, 2
    t = torch.tensor([0.1, 0.3, 0.5, 0.8, 1.0], dtype=F64)
    g = torch.Generator().manual_seed(8)
    mean0 = torch.randn(n, 2, d, generator=g, dtype=F64)
    kernel = PerturbationKernel(sde, t, mean0, torch.diag(torch.tensor([0.0, 0.04], dtype=F64)), eps_num=1e-6)
    u, _ = kernel.sample(g)
    cov = kernel.covariance + 1e-6 * torch.eye(2, dtype=F64)
    full = torch.stack([torch.kron(cov[i], torch.eye(d, dtype=F64)) for i in range(n)])
    reference = MultivariateNormal(kernel.mean.reshape(n, -1), full).log_prob(u.reshape(n, -1))
    assert torch.allclose(kernel.log_prob(u), reference, rtol=1e-12)


def test_cld_hsm_and_dsm_kernels_condition_on_the_right_components():
    cld = CLD(gamma=0.04)
    x0 = torch.tensor([[0.7], [-1.2]], dtype=F64)
    t = 0.4
    Phi, Q = cld.kernel(t)
    hsm = cld.perturbation_kernel(t, x0, kind="hsm")
    S0 = torch.diag(torch.tensor([0.0, 0.04 * 0.25], dtype=F64))
    assert torch.allclose(hsm.covariance, Phi @ S0 @ Phi.T + Q, rtol=1e-14)
    assert torch.allclose(hsm.mean[:, :, 0], x0 * Phi[:, 0], rtol=1e-14)  # v0 = 0: mean = Phi (x0, 0)
    v0 = torch.tensor([[0.1], [0.2]], dtype=F64)
    dsm = cld.perturbation_kernel(t, x0, kind="dsm", v0=v0)
    assert torch.allclose(dsm.covariance, Q, rtol=1e-14)
    assert torch.allclose(dsm.mean[:, :, 0], torch.cat([x0, v0], 1) @ Phi.T, rtol=1e-14)
    assert dsm.eps_num == cld.eps_num


def test_float32_means_give_float32_samples_with_float64_coefficients():
    cld = CLD()
    x0 = torch.randn(8, 2, 2)
    kernel = cld.perturbation_kernel(0.5, x0)
    u, noise = kernel.sample(torch.Generator().manual_seed(0))
    assert u.dtype == torch.float32 and noise.dtype == torch.float32
    assert kernel.covariance.dtype == F64 and kernel.cholesky.dtype == F64
    assert kernel.score_from_noise(noise, [1]).dtype == torch.float32
    assert math.isfinite(kernel.log_prob(u).sum().item())


def test_sample_reuses_given_noise_and_checks_its_shape():
    kernel = PerturbationKernel(cld_like_sde(), 0.5, torch.zeros(4, 2, 3, dtype=F64))
    noise = torch.randn(4, 2, 3, dtype=F64)
    u, returned = kernel.sample(noise=noise)
    assert returned is noise
    with pytest.raises(ValueError, match="noise must have shape"):
        kernel.sample(noise=torch.randn(4, 2, dtype=F64))


def test_the_kernels_own_score_has_zero_score_matching_loss():
    from splitdyn.score_matching import kernel_score_matching_loss

    x0 = torch.randn(6, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    kernel = PerturbationKernel(cld_like_sde(), torch.linspace(0.1, 1.0, 6, dtype=F64), x0)
    noise = torch.randn(6, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    exact = kernel_score_matching_loss(lambda u, t: kernel.score(u), kernel, noise=noise)
    assert exact.shape == (6,) and exact.max().item() < 1e-18
    block = kernel_score_matching_loss(lambda u, t: kernel.score(u, [1]), kernel, components=[1], noise=noise,
                                       weight=torch.full((6,), 2.0))
    assert block.max().item() < 1e-18
    wrong = kernel_score_matching_loss(lambda u, t: torch.zeros_like(u), kernel, noise=noise)
    expected = kernel.score_from_noise(noise).pow(2).sum((1, 2))
    torch.testing.assert_close(wrong, expected, rtol=1e-12, atol=0)


def test_single_component_index_and_numpy_indices_select_the_same_block():
    import numpy as np

    kernel = PerturbationKernel(cld_like_sde(), 0.5, torch.zeros(2, 2, 1, dtype=F64))
    noise = torch.ones(2, 2, 1, dtype=F64)
    assert torch.equal(kernel.score_from_noise(noise, 1), kernel.score_from_noise(noise, [np.int64(1)]))
