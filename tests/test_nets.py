"""NCSN++ / DDPM++ score networks (splitdyn_cld.nets): shapes, parameter counts, FIR filters, embeddings."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from splitdyn_cld.nets import CONFIGS, ScoreUNet, UNetConfig, config_names, count_parameters, get_config
from splitdyn_cld.nets import blocks, layers


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These small networks gain nothing from intra-op threads, and a busy machine makes threads slow (x10)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Small image sizes each named config still supports (divisible by 2**(levels-1), attention level kept).
SMALL_SIZES = {"cifar10": 16, "cifar10_ablation": 16, "celebahq256": 64, "digits": 8, "tiny": 8}


def small(name: str, **overrides) -> UNetConfig:
    return get_config(name, channels=16, num_res_blocks=1, image_size=SMALL_SIZES[name], **overrides)


def test_every_named_config_has_a_small_size():
    assert set(config_names()) == set(SMALL_SIZES) == set(CONFIGS)


@pytest.mark.parametrize("name", sorted(SMALL_SIZES))
def test_output_shape_of_every_named_config_at_small_width(name, generator):
    torch.manual_seed(0)
    cfg = small(name)
    net = ScoreUNet(cfg).eval()
    c, s = cfg.image_channels, cfg.image_size
    u = torch.randn(2, 2 * c, s, s, generator=generator)
    out = net(u, torch.tensor([1e-5, 1.0]))
    assert out.shape == (2, c, s, s)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "overrides",
    [
        dict(resblock="ddpm", fir=False, progressive_input="none"),
        dict(resblock="ddpm", fir=True, progressive_input="residual", resample_with_conv=False),
        dict(resblock="ddpm", conv_shortcut=True, embedding="positional", skip_rescale=False),
        dict(progressive_input="input_skip"),
        dict(progressive_input="input_skip", fir=False),
        dict(fir=False, embedding="positional"),
        dict(fir_kernel=(1, 1), attention_resolutions=(8, 4)),
        dict(channel_multipliers=(1, 2, 2), init_scale=1.0),
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_architecture_variants(overrides, generator):
    torch.manual_seed(0)
    cfg = get_config("tiny", **overrides)
    net = ScoreUNet(cfg)
    u = torch.randn(3, 2, 8, 8, generator=generator)
    out = net(u, torch.rand(3, generator=generator) + 1e-3)
    assert out.shape == (3, 1, 8, 8) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name, target", [("cifar10", 108e6), ("cifar10_ablation", 39e6), ("celebahq256", 68e6)])
def test_parameter_counts_match_the_paper_within_5_percent(name, target):
    n = count_parameters(get_config(name))
    assert abs(n - target) / target < 0.05, f"{name}: {n:,} parameters, paper ~{target:,.0f}"


def test_parameter_counts_of_small_configs():
    assert count_parameters(get_config("tiny")) < 200_000
    assert 1e6 <= count_parameters(get_config("digits")) <= 3e6


def test_models_build_on_the_meta_device():
    with torch.device("meta"):
        model = ScoreUNet(get_config("cifar10"))
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.is_meta for t in tensors)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(get_config("cifar10"))
    # the NCSN++ CIFAR-10 model is the paper's ~107.6M
    assert abs(count_parameters(get_config("cifar10")) - 107.6e6) < 0.1e6


def test_count_parameters_matches_a_real_model():
    cfg = get_config("tiny")
    assert count_parameters(cfg) == sum(p.numel() for p in ScoreUNet(cfg).parameters())


# ---------------------------------------------------------------------------------------------------------------
# FIR resampling
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 4, 6, 4, 1)])
def test_fir_resampling_preserves_constants(kernel):
    k = layers.fir_kernel_2d(kernel)
    assert torch.isclose(k.sum(), torch.tensor(1.0))
    x = torch.full((2, 3, 8, 8), 0.7)
    down = layers.fir_downsample(x, k)
    up = layers.fir_upsample(x, k)
    assert down.shape == (2, 3, 4, 4) and up.shape == (2, 3, 16, 16)
    torch.testing.assert_close(down, torch.full_like(down, 0.7))
    torch.testing.assert_close(up, torch.full_like(up, 0.7))
    round_trip = layers.fir_upsample(layers.fir_downsample(x, k), k)
    torch.testing.assert_close(round_trip, x)


def test_fir_filters_match_zero_insertion_and_decimation_away_from_the_border(generator):
    k = layers.fir_kernel_2d((1, 3, 3, 1))
    x = torch.randn(1, 1, 12, 12, generator=generator)
    # upsampling = zero insertion followed by filtering with gain 4
    zeros = torch.zeros(1, 1, 24, 24)
    zeros[..., ::2, ::2] = x
    ref_up = F.conv2d(F.pad(zeros, (2, 1, 2, 1)), (4 * k)[None, None])
    torch.testing.assert_close(layers.fir_upsample(x, k)[..., 2:-2, 2:-2], ref_up[..., 2:-2, 2:-2])
    # downsampling = filtering followed by keeping every second pixel
    ref_down = F.conv2d(F.pad(x, (1, 1, 1, 1)), k[None, None], stride=2)
    torch.testing.assert_close(layers.fir_downsample(x, k)[..., 1:-1, 1:-1], ref_down[..., 1:-1, 1:-1])
    # [1, 3, 3, 1] upsampling is bilinear interpolation at half-pixel offsets
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(layers.fir_upsample(x, k), bilinear)


@pytest.mark.parametrize("fir", [True, False])
@pytest.mark.parametrize("with_conv", [True, False])
def test_resampling_modules(fir, with_conv, generator):
    x = torch.randn(2, 8, 8, 8, generator=generator)
    down = layers.Downsample(8, 16 if with_conv else None, with_conv=with_conv, fir=fir)
    up = layers.Upsample(8, 16 if with_conv else None, with_conv=with_conv, fir=fir)
    c = 16 if with_conv else 8
    assert down(x).shape == (2, c, 4, 4)
    assert up(x).shape == (2, c, 16, 16)
    assert "kernel2d" not in down.state_dict()  # the FIR filter is not a saved parameter


def test_biggan_blocks_resample_and_blocks_start_close_to_their_skip_path(generator):
    x = torch.randn(2, 16, 8, 8, generator=generator)
    temb = torch.randn(2, 32, generator=generator)
    for kwargs, size in [(dict(up=True), 16), (dict(down=True), 4), ({}, 8)]:
        block = blocks.BigGANResBlock(16, 32, temb_dim=32, fir=True, **kwargs)
        assert block(x, temb).shape == (2, 32, size, size)
    same = blocks.BigGANResBlock(16, 16, temb_dim=32)
    torch.testing.assert_close(same(x, temb), x / 2 ** 0.5, atol=1e-3, rtol=0)
    attn = blocks.AttentionBlock(16, skip_rescale=False)
    torch.testing.assert_close(attn(x), x, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="both"):
        blocks.BigGANResBlock(16, up=True, down=True)


def test_group_norm_groups():
    assert layers.group_norm(256).num_groups == 32
    assert layers.group_norm(64).num_groups == 16
    assert layers.group_norm(2).num_groups == 1
    assert 130 % layers.group_norm(130).num_groups == 0


# ---------------------------------------------------------------------------------------------------------------
# Time embedding and training
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["fourier", "positional"])
def test_time_embedding_distinguishes_times(embedding):
    torch.manual_seed(0)
    net = ScoreUNet(get_config("tiny", embedding=embedding))
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 0.5 + 1e-3, 1.0])
    emb = net.embed_time(t)
    assert emb.shape == (6, 4 * 16)
    dist = torch.cdist(emb, emb)
    off_diagonal = dist[~torch.eye(6, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3
    # and the network output depends on t (with a non-vanishing output layer)
    net = ScoreUNet(get_config("tiny", embedding=embedding, init_scale=1.0)).eval()
    u = torch.randn(1, 2, 8, 8).expand(2, -1, -1, -1)
    out = net(u, torch.tensor([0.1, 0.9]))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_raw_embeddings():
    fourier = layers.GaussianFourierEmbedding(8, scale=16.0)
    assert fourier(torch.zeros(3)).shape == (3, 16)
    torch.testing.assert_close(fourier(torch.zeros(1))[0, 8:], torch.ones(8))  # cos(0) = 1
    assert "W" in fourier.state_dict() and not list(fourier.parameters())
    emb = layers.sinusoidal_embedding(torch.tensor([0.0, 999.0]), 7)
    assert emb.shape == (2, 7) and torch.all(emb[:, -1] == 0)


def test_output_starts_close_to_zero_and_state_dict_round_trips(generator):
    torch.manual_seed(0)
    cfg = get_config("tiny")
    net = ScoreUNet(cfg)
    u = torch.randn(4, 2, 8, 8, generator=generator)
    t = torch.rand(4, generator=generator)
    out = net(u, t)
    assert out.abs().max() < 1e-3
    torch.manual_seed(1)
    other = ScoreUNet(cfg)
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other(u, t), out)


def test_one_adam_step_lowers_a_regression_loss(generator):
    torch.manual_seed(0)
    net = ScoreUNet(get_config("tiny"))
    u = torch.randn(8, 2, 8, 8, generator=generator)
    t = torch.rand(8, generator=generator) * 0.99 + 0.01
    target = torch.randn(8, 1, 8, 8, generator=generator)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def loss_fn():
        return (net(u, t) - target).square().mean()

    before = loss_fn()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn()
    assert after < before - 1e-4


def test_autocast_bf16_forward():
    torch.manual_seed(0)
    net = ScoreUNet(get_config("tiny", init_scale=1.0))
    u = torch.randn(2, 2, 8, 8)
    t = torch.tensor([0.3, 0.7])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(u, t)
    ref = net(u, t)
    assert out.shape == ref.shape
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_scalar_time_is_broadcast():
    torch.manual_seed(0)
    net = ScoreUNet(get_config("tiny", init_scale=1.0)).eval()
    u = torch.randn(3, 2, 8, 8)
    torch.testing.assert_close(net(u, 0.5), net(u, torch.full((3,), 0.5)))


# ---------------------------------------------------------------------------------------------------------------
# Configuration checks
# ---------------------------------------------------------------------------------------------------------------


def test_bad_inputs_and_configs_raise_clear_errors():
    net = ScoreUNet(get_config("tiny"))
    with pytest.raises(ValueError, match="u must have shape"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.randn(2, 2, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="divisible"):
        get_config("cifar10", image_size=20)
    with pytest.raises(ValueError, match="embedding"):
        get_config("tiny", embedding="learned")
    with pytest.raises(ValueError, match="progressive_output"):
        get_config("tiny", progressive_output="output_skip")
    with pytest.raises(ValueError, match="progressive_input"):
        get_config("tiny", progressive_input="skip")
    with pytest.raises(KeyError, match="known"):
        get_config("imagenet")
    with pytest.raises(TypeError, match="unknown UNetConfig field"):
        get_config("tiny", width=3)
    with pytest.raises(TypeError):
        ScoreUNet({"channels": 16})


def test_configs_are_frozen_and_get_config_returns_copies():
    cfg = get_config("cifar10", channels=16)
    assert CONFIGS["cifar10"].channels == 128
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.channels = 32
    assert cfg.replace(channels=32).channels == 32
    assert get_config("cifar10").resolutions == (32, 16, 8, 4)
    assert get_config("celebahq256").input_shape == (6, 256, 256)
    assert get_config("digits").data_shape == (1, 8, 8)
    assert UNetConfig(channel_multipliers=[1, 2], attention_resolutions=16).attention_resolutions == (16,)


def test_replicate_pad_by_indexing_equals_torch_replicate_padding():
    from splitdyn_cld.nets.layers import _replicate_pad

    x = torch.randn(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    for before, after in [(1, 1), (2, 1), (0, 2)]:
        expected = torch.nn.functional.pad(x, (before, after, before, after), mode="replicate")
        assert torch.equal(_replicate_pad(x, before, after), expected)


@pytest.mark.slow
def test_fir_resampling_compiles_forward_and_backward():
    # inductor (torch 2.13, CPU) failed on replication_pad2d_backward, which broke train(compile=True)
    from splitdyn_cld.nets.layers import fir_downsample, fir_kernel_2d, fir_upsample

    kernel = fir_kernel_2d((1, 3, 3, 1))

    def loss(x):
        return fir_upsample(fir_downsample(x, kernel), kernel).square().sum()

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    torch.compile(loss)(x).backward()
    x_eager = x.detach().clone().requires_grad_(True)
    loss(x_eager).backward()
    assert torch.allclose(x.grad, x_eager.grad, rtol=1e-5, atol=1e-5)
