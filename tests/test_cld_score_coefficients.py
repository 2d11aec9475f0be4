"""The mixed score's coefficients at sampling speed (issue 22): ``score_coefficients`` against the host oracle
(``ell`` / ``velocity_variance``), ``MixedScore`` without the host oracle per call, and traceable without graph
breaks for a tensor time."""

import math

import pytest
import torch

import splitdyn_cld.score as score_module
from splitdyn.schedules import CustomBeta, LinearBeta
from splitdyn_cld import CLD, MixedScore, ell, velocity_variance
from splitdyn_cld.kernels import SERIES_SWITCH, score_coefficients

TIMES = torch.logspace(-6, 0, 301, dtype=torch.float64)
DEEP = torch.logspace(-8, -6, 21, dtype=torch.float64)
PROCESSES = {
    "paper-toy": CLD(),
    "eps-1e-9": CLD(eps_num=1e-9),
    "eps-0": CLD(eps_num=0.0),
    "linear-beta": CLD(beta=LinearBeta(0.1, 20.0)),
    "other-mass": CLD(mass=1.0, gamma=0.5, beta=8.0),
}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


def _switch_times(cld: CLD) -> torch.Tensor:
    """Times around the series/direct switch z = 4 B(t) / Gamma = SERIES_SWITCH (constant beta)."""
    t_switch = SERIES_SWITCH * cld.friction / (4.0 * cld.rescaling.value)
    return t_switch * (1.0 + torch.tensor([-1e-9, -1e-15, 0.0, 1e-15, 1e-9], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(PROCESSES))
@pytest.mark.parametrize("kind", ["hsm", "dsm"])
def test_tensor_and_float_paths_equal_the_stabilised_oracle(name, kind):
    cld = PROCESSES[name]
    times = torch.cat([DEEP, TIMES] + ([_switch_times(cld)] if name == "paper-toy" else []))
    oracle_ell, oracle_var = ell(cld, times, kind), velocity_variance(cld, times)
    tensor_ell, tensor_var = score_coefficients(cld, times, kind)
    assert tensor_ell.dtype == torch.float64 and tensor_ell.shape == times.shape
    assert _relative(tensor_ell, oracle_ell) <= 1e-12 and _relative(tensor_var, oracle_var) <= 1e-12
    pairs = [score_coefficients(cld, float(t), kind) for t in times]
    assert all(isinstance(v, float) for pair in pairs for v in pair)
    scalar_ell = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    scalar_var = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    assert _relative(scalar_ell, oracle_ell) <= 1e-12 and _relative(scalar_var, oracle_var) <= 1e-12
    # a float32 tensor time is the same time read in float64
    f32 = times[::37].float()
    assert _relative(score_coefficients(cld, f32, kind)[0], ell(cld, f32.double(), kind)) <= 1e-12


def test_fallbacks_give_the_oracle_for_other_frictions_and_rates():
    with pytest.warns(UserWarning, match="critically damped"):
        under = CLD(mass=0.25, friction=2.0)
    custom = CLD(beta=CustomBeta(lambda t: 4.0 + 0 * t, lambda t: 4.0 * t))
    t = torch.tensor([1e-4, 0.3, 1.0], dtype=torch.float64)
    for cld in (under, custom):
        for kind in ("hsm", "dsm"):
            lt, vt = score_coefficients(cld, t, kind)
            assert _relative(lt, ell(cld, t, kind)) <= 1e-12 and _relative(vt, velocity_variance(cld, t)) <= 1e-12
            ls, vs = score_coefficients(cld, 0.3, kind)
            assert math.isclose(ls, float(ell(cld, 0.3, kind)), rel_tol=1e-12)
            assert math.isclose(vs, float(velocity_variance(cld, 0.3)), rel_tol=1e-12)


def test_bad_times_are_refused_on_the_host():
    cld = CLD()
    for bad in (1.5, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="t must"):
            score_coefficients(cld, bad)
        with pytest.raises(ValueError, match="t must"):
            score_coefficients(cld, torch.tensor([0.5, bad], dtype=torch.float64))
    with pytest.raises(TypeError, match="t must"):
        score_coefficients(cld, True)
    with pytest.raises(ValueError, match="kind"):
        score_coefficients(cld, 0.5, "ism")
    # B(t) = 0 with eps_num = 0: ell is infinite, refused as by ell()
    with pytest.raises(ValueError, match="singular"):
        score_coefficients(CLD(eps_num=0.0), 0.0)
    with pytest.raises(ValueError, match="singular"):
        score_coefficients(CLD(eps_num=0.0), torch.zeros(2, dtype=torch.float64))
    assert score_coefficients(cld, 1.0 + 1e-13)[0] > 0  # the usual 1e-12 slack above T


@pytest.mark.parametrize("mixed", [True, False])
def test_mixed_score_does_not_call_the_host_oracle_and_matches_it(monkeypatch, mixed):
    cld = CLD()
    net = lambda u, t: torch.sin(u[:, :1]) * (1 + t.reshape(-1, 1, 1))
    u = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1e-5, 0.01, 0.2, 0.7, 1.0], dtype=torch.float64)
    model = MixedScore(net, cld, mixed=mixed)
    lt, var = (c.reshape(-1, 1, 1) for c in model.coefficients(t))  # the host oracle
    expected = -lt * net(u, t) - (u[:, 1:] / var if mixed else 0.0)
    expected_alpha = net(u, t) + (u[:, 1:] / (lt * var) if mixed else 0.0)

    def refuse(*args, **kwargs):
        raise AssertionError("the forward pass must not use the host oracle")

    monkeypatch.setattr(score_module, "ell", refuse)
    monkeypatch.setattr(score_module, "velocity_variance", refuse)
    torch.testing.assert_close(model(u, t), expected, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(model.alpha(u, t), expected_alpha, rtol=1e-12, atol=0.0)
    for i in range(5):  # a float, a 0-d tensor and one time expanded over the batch give the same
        one = expected_alpha[i:i + 1]
        ti = float(t[i])
        for form in (ti, torch.tensor(ti, dtype=torch.float64), torch.tensor([ti], dtype=torch.float64).expand(1)):
            torch.testing.assert_close(model.alpha(u[i:i + 1], form), one, rtol=1e-12, atol=0.0)
        torch.testing.assert_close(model(u, torch.tensor(ti, dtype=torch.float64).expand(5)), model(u, ti),
                                   rtol=1e-12, atol=0.0)
    # float32 states get the coefficients cast at use
    out = model(u.float(), 0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(u, 0.3).float())


def test_mixed_score_traces_without_graph_breaks_for_tensor_times():
    cld = CLD()
    model = MixedScore(lambda u, t: torch.tanh(u[:, 1:]) * t.reshape(-1, 1, 1), cld)
    u = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1))
    traced = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    with torch.no_grad():
        for t in (torch.tensor(0.25, dtype=torch.float64), torch.tensor([1e-5, 0.5, 1.0], dtype=torch.float64)):
            torch.testing.assert_close(traced(u, t), model(u, t))


def test_compiled_sampling_with_the_mixed_score_has_no_graph_break_and_equals_eager():
    """``sample(..., compile=True)`` passes the time as a 0-d tensor: the mixed score traces in one piece
    (``fullgraph``), the graphs are compiled a bounded number of times over the grid (a counting backend), and
    the draws equal the eager run's."""
    import splitdyn

    cld = CLD()
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 2)
    model = MixedScore(lambda u, t: lin(torch.cat([u.flatten(1), t[:, None].expand(-1, 2)], 1))[:, None], cld)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    for step in ("em", "sscs"):
        graphs.clear()
        options = {"backend": counting_backend, "fullgraph": True}
        with torch.no_grad():
            compiled = splitdyn.sample(cld, model, (8, 2), splitdyn.QuadraticGrid(12), step=step,
                                       generator=torch.Generator().manual_seed(1), compile=options)
            eager = splitdyn.sample(cld, model, (8, 2), splitdyn.QuadraticGrid(12), step=step,
                                    generator=torch.Generator().manual_seed(1))
        assert 1 <= len(graphs) <= 4, (step, len(graphs))  # one per compiled function, not one per step
        torch.testing.assert_close(compiled.state, eager.state, rtol=1e-6, atol=1e-6)
