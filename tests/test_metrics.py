"""Sample distances (sliced Wasserstein, MMD), the mode-weight error, and the toy datasets."""

import math

import pytest
import torch

from splitdyn.metrics import mmd_rbf, mode_frequencies, mode_weight_error, wasserstein_sliced
from splitdyn.oracles import GaussianMixture, diamond_mixture, random_mixture
from splitdyn_cld.toy_data import (
    SWISS_ROLL_CENTRES,
    TOY_DATASETS,
    get_toy_dataset,
    sample_diamond,
    sample_multimodal_swiss_roll,
)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------------
# sliced Wasserstein
# --------------------------------------------------------------------------------------------------------
def test_sliced_wasserstein_is_small_for_one_law_and_large_for_a_shift():
    mix = diamond_mixture()
    a, b = mix.sample(4000, gen(1)), mix.sample(4000, gen(2))
    same = wasserstein_sliced(a, b, generator=gen(0))
    shifted = wasserstein_sliced(a, b + torch.tensor([0.3, 0.0]), generator=gen(0))
    assert same < 0.05  # finite-sample bias, O(n^-1/2)
    assert shifted > 5 * same and abs(shifted - 0.3 / math.sqrt(2)) < 0.03  # E[(theta . delta)^2] = |delta|^2 / 2


def test_sliced_wasserstein_of_a_translate_is_exact():
    x = random_mixture(8, 4, gen(0)).sample(500, gen(1), dtype=F64)
    delta = torch.linspace(-0.2, 0.3, 8, dtype=F64)
    theta = torch.randn(8, 64, generator=gen(5), dtype=F64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    expected = ((delta @ theta) ** 2).mean().sqrt().item()
    assert abs(wasserstein_sliced(x, x + delta, 64, gen(5)) - expected) < 1e-12
    assert wasserstein_sliced(x, x, generator=gen(0)) == 0.0
    assert wasserstein_sliced(x, x.flip(0), generator=gen(0)) < 1e-15  # order does not matter


def test_sliced_wasserstein_with_unequal_sample_sizes_is_exact():
    x = torch.randn(300, 3, dtype=F64, generator=gen(0))
    # a duplicated sample is the same empirical measure
    assert wasserstein_sliced(x, x.repeat(3, 1), generator=gen(1)) < 1e-12
    # 1-D: compare with the quantile functions on the common grid of n * m cells
    a = torch.tensor([[0.0], [1.0], [5.0]], dtype=F64)
    b = torch.tensor([[0.5], [0.7], [2.0], [3.0], [10.0]], dtype=F64)
    q = (torch.arange(15, dtype=F64) + 0.5) / 15
    qa = a[:, 0].sort().values[(q * 3).floor().long()]
    qb = b[:, 0].sort().values[(q * 5).floor().long()]
    expected = ((qa - qb) ** 2).mean().sqrt().item()
    assert abs(wasserstein_sliced(a, b, 4, gen(0)) - expected) < 1e-12
    assert abs(wasserstein_sliced(b, a, 4, gen(0)) - expected) < 1e-12


def test_sliced_wasserstein_flattens_event_shapes():
    x = torch.randn(200, 2, 3, generator=gen(0))
    flat = x.reshape(200, 6)
    assert wasserstein_sliced(x, x + 1.0, 16, gen(1)) == pytest.approx(wasserstein_sliced(flat, flat + 1.0, 16, gen(1)))


# --------------------------------------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------------------------------------
def test_distances_separate_equal_and_shifted_laws_in_eight_dimensions():
    mix = random_mixture(8, 4, gen(0))
    a, b = mix.sample(3000, gen(1)), mix.sample(3000, gen(2))
    assert wasserstein_sliced(a, b) < 0.3 * wasserstein_sliced(a, b + 0.3)
    assert mmd_rbf(a, b) < 0.1 * mmd_rbf(a, b + 0.3)


def test_mmd_is_near_zero_for_one_law_and_large_for_a_shift():
    mix = random_mixture(8, 4, gen(0))
    a, b = mix.sample(1000, gen(1)), mix.sample(1000, gen(2))
    same = mmd_rbf(a, b)
    shifted = mmd_rbf(a, b + 0.3)
    assert abs(same) < 0.1 * shifted
    diamond = diamond_mixture()
    a, b = diamond.sample(1000, gen(3)), diamond.sample(1000, gen(4))
    assert abs(mmd_rbf(a, b)) < 0.05 * mmd_rbf(a, b + torch.tensor([0.25, 0.0]))


def test_mmd_closed_form_for_point_masses():
    x = torch.zeros(2, 1, dtype=F64)
    y = torch.ones(3, 1, dtype=F64)
    s = 0.7
    expected = 2.0 - 2.0 * math.exp(-1.0 / (2 * s * s))
    assert mmd_rbf(x, y, bandwidths=s) == pytest.approx(expected, rel=1e-12)
    assert mmd_rbf(x, y, bandwidths=[s, s]) == pytest.approx(2 * expected, rel=1e-12)


def test_mmd_uses_at_most_max_samples_rows():
    x = torch.randn(50, 2, generator=gen(0))
    y = torch.randn(50, 2, generator=gen(1))
    assert mmd_rbf(x, y, max_samples=20) == pytest.approx(mmd_rbf(x[:20], y[:20]))


# --------------------------------------------------------------------------------------------------------
# mode weights
# --------------------------------------------------------------------------------------------------------
def test_mode_weight_error_is_small_for_exact_samples_and_large_for_one_mode():
    mix = diamond_mixture()
    n = 9000
    err = mode_weight_error(mix.sample(n, gen(0)), mix)
    assert err < 3 * math.sqrt(mix.num_components / n) and err < 0.03
    one_mode = mix.means[4].float() + 0.02 * torch.randn(500, 2, generator=gen(1))
    assert mode_weight_error(one_mode, mix) == pytest.approx(1 - 1 / 9)
    freq = mode_frequencies(one_mode, mix)
    assert freq.shape == (9,) and freq[4] == 1.0
    corner = mix.means[0].float() + 0.01 * torch.randn(500, 2, generator=gen(2))  # a vertex of the diamond
    assert mode_weight_error(corner, mix) > 0.8


def test_mode_weight_error_sees_wrong_weights():
    unequal = GaussianMixture(diamond_mixture().means, 0.04, torch.arange(1.0, 10.0))
    equal = diamond_mixture()
    x = equal.sample(20_000, gen(0))
    tv = 0.5 * (unequal.weights - equal.weights).abs().sum().item()
    assert mode_weight_error(x, unequal) == pytest.approx(tv, abs=0.02)
    assert mode_weight_error(unequal.sample(20_000, gen(1)), unequal) < 0.02
    assert abs(mode_frequencies(x, equal).sum().item() - 1.0) < 1e-12


# --------------------------------------------------------------------------------------------------------
# toy datasets
# --------------------------------------------------------------------------------------------------------
def test_toy_datasets_shapes_dtypes_and_seeds():
    assert sorted(TOY_DATASETS) == ["diamond", "swissroll"]
    for name, sampler in TOY_DATASETS.items():
        assert get_toy_dataset(name) is sampler
        x = sampler(1000, gen(0))
        assert x.shape == (1000, 2) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
        assert torch.equal(x, sampler(1000, gen(0)))
        assert sampler(10, gen(0), dtype=F64).dtype == F64
    mix = diamond_mixture()
    assert mode_weight_error(sample_diamond(9000, gen(2)), mix) < 0.03


def test_swiss_rolls_are_five_equal_clusters_at_the_right_places():
    n = 20_000
    x = sample_multimodal_swiss_roll(n, gen(0), dtype=F64)
    centres = SWISS_ROLL_CENTRES.to(F64)
    expected = torch.tensor([[0.0, 0.0], [0.8, 0.8], [0.8, -0.8], [-0.8, 0.8], [-0.8, -0.8]], dtype=F64)
    assert torch.allclose(centres, expected)
    dist = torch.cdist(x, centres)
    nearest = dist.argmin(1)
    radius = dist.min(1).values
    freq = torch.bincount(nearest, minlength=5).to(F64) / n
    assert ((freq - 0.2).abs() < 5 * math.sqrt(0.2 * 0.8 / n)).all()
    # each roll: radius s * 0.01 with s in [1.5 pi, 4.5 pi], blurred by 0.01 * 0.2 noise
    assert radius.min() > 0.01 * 1.5 * math.pi - 0.012 and radius.max() < 0.01 * 4.5 * math.pi + 0.012
    # a spiral, not a blob: the angle about the centre winds with the radius (s cos s, s sin s)
    roll = (x - centres[nearest]) / 0.01
    s = roll.norm(dim=1)
    phase = torch.atan2(roll[:, 1], roll[:, 0]) - s
    angle_error = torch.atan2(torch.sin(phase), torch.cos(phase))
    assert (angle_error.abs() < 0.6).float().mean() > 0.95  # a blob would give 0.6 / pi = 0.19


def test_bad_input_is_refused_with_clear_messages():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"unknown toy dataset 'moons'; valid names: diamond, swissroll"):
        get_toy_dataset("moons")
    with pytest.raises(TypeError, match=r"name must be a str"):
        get_toy_dataset(3)
    with pytest.raises(ValueError, match=r"n must be a positive int"):
        sample_diamond(0)
    with pytest.raises(TypeError, match=r"n must be a positive int"):
        sample_multimodal_swiss_roll(2.5)
    with pytest.raises(ValueError, match=r"same event size"):
        wasserstein_sliced(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(n, \*event_shape\)"):
        wasserstein_sliced(torch.randn(10), x)
    with pytest.raises(TypeError, match=r"y must be a torch.Tensor"):
        mmd_rbf(x, [[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"y contains 1 non-finite"):
        mmd_rbf(x, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"num_projections must be an integer >= 1"):
        wasserstein_sliced(x, x, num_projections=0)
    with pytest.raises(ValueError, match=r"bandwidths must be a finite positive number"):
        mmd_rbf(x, x, bandwidths=[0.1, -1.0])
    with pytest.raises(ValueError, match=r"x needs at least 2 samples"):
        mmd_rbf(x[:1], x)
    with pytest.raises(TypeError, match=r"mixture must be a splitdyn.oracles.GaussianMixture"):
        mode_weight_error(x, "diamond")
    with pytest.raises(ValueError, match=r"samples must have shape \(n, \*event_shape\) = \(n, 2\)"):
        mode_weight_error(torch.randn(10, 3), diamond_mixture())
