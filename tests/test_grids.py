"""Reverse-time grids (:mod:`splitdyn.grids`): endpoints, monotonicity, the defining spacings, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splitdyn import (
    GivenGrid,
    Grid,
    LogSNRGrid,
    PowerGrid,
    QuadraticGrid,
    SubVPSDE,
    UniformGrid,
    VESDE,
    VPSDE,
    make_grid,
    quadratic_grid,
    uniform_grid,
)
from splitdyn.grids import check_grid

F64 = torch.float64


def all_grids(n: int = 12, eps: float = 1e-3) -> list[Grid]:
    return [UniformGrid(n, eps), QuadraticGrid(n, eps), PowerGrid(n, 7.0, eps), PowerGrid(n, 0.5, eps),
            LogSNRGrid(n, VPSDE(T=2.0), eps)]


@pytest.mark.parametrize("index", range(5))
def test_endpoints_length_and_monotonicity(index):
    grid = all_grids()[index]
    T = 2.0
    tau = grid.reverse_times(T)
    assert tau.dtype == F64 and tau.device.type == "cpu" and tau.shape == (grid.n + 1,) == (len(grid),)
    assert tau[0].item() == 0.0 and tau[-1].item() == T - grid.eps
    assert bool((tau[1:] > tau[:-1]).all())
    assert check_grid(tau) == tau.tolist()


def test_uniform_and_quadratic_spacings():
    tau = UniformGrid(4, eps=0.2).reverse_times(1.0)
    torch.testing.assert_close(tau, torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8], dtype=F64), rtol=0, atol=1e-15)
    tau = QuadraticGrid(4, eps=0.0).reverse_times(2.0)
    torch.testing.assert_close(tau, 2.0 * torch.tensor([0.0, 7 / 16, 3 / 4, 15 / 16, 1.0], dtype=F64), rtol=0,
                               atol=1e-15)
    steps = tau.diff()
    assert bool((steps[1:] < steps[:-1]).all())  # steps shrink towards the data end
    torch.testing.assert_close(uniform_grid(5, 1.5, 0.01), UniformGrid(5, 0.01).reverse_times(1.5), rtol=0, atol=0)
    torch.testing.assert_close(quadratic_grid(5, 1.5, 0.01), QuadraticGrid(5, 0.01).reverse_times(1.5), rtol=0, atol=0)


def test_power_grid_rho_one_is_uniform_and_matches_the_formula():
    torch.testing.assert_close(PowerGrid(10, 1, eps=0.01).reverse_times(1.0), UniformGrid(10, 0.01).reverse_times(1.0),
                               rtol=0, atol=1e-15)
    n, rho, eps, T = 6, 7.0, 2e-3, 1.0
    expected = [T - (T ** (1 / rho) + k / n * (eps ** (1 / rho) - T ** (1 / rho))) ** rho for k in range(n + 1)]
    torch.testing.assert_close(PowerGrid(n, rho, eps).reverse_times(T), torch.tensor(expected, dtype=F64),
                               rtol=1e-14, atol=1e-15)
    # rho > 1 puts the short steps at the data end (small forward times)
    steps = PowerGrid(n, rho, eps).reverse_times(T).diff()
    assert bool((steps[1:] < steps[:-1]).all())


@pytest.mark.parametrize("process", [VPSDE(), SubVPSDE(), VESDE()], ids=repr)
def test_log_snr_grid_is_uniform_in_log_snr(process):
    grid = LogSNRGrid(16, process, eps=1e-3)
    tau = grid.reverse_times()
    lam = process.log_snr(process.T - tau)
    torch.testing.assert_close(lam[0], process.log_snr(process.T), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lam[-1], process.log_snr(1e-3), rtol=1e-12, atol=1e-12)
    steps = lam.diff()
    torch.testing.assert_close(steps, steps.mean().expand(16), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(make_grid("logsnr", 16, process.T, 1e-3, process=process), tau, rtol=0, atol=0)


def test_given_grid_keeps_the_times_and_sets_eps():
    grid = GivenGrid([0.0, 0.1, 0.5, 0.9], T=1.0)
    assert grid.n == 3 and grid.eps == pytest.approx(0.1)
    torch.testing.assert_close(grid.reverse_times(), torch.tensor([0.0, 0.1, 0.5, 0.9], dtype=F64), rtol=0, atol=0)
    assert GivenGrid(torch.tensor([0.0, 2.0]), T=2.0).eps == 0.0
    assert repr(grid) == "GivenGrid([0, 0.1, 0.5, 0.9], T=1.0)"
    assert repr(GivenGrid(torch.linspace(0, 0.99, 11), T=1.0)) == "GivenGrid([0, 0.099, 0.198, ..., 0.99], T=1.0)"


def test_make_grid_names_and_reprs():
    torch.testing.assert_close(make_grid("power", 8, 1.0, 1e-3, rho=3.0), PowerGrid(8, 3.0).reverse_times(1.0),
                               rtol=0, atol=0)
    torch.testing.assert_close(make_grid("uniform", 8), uniform_grid(8), rtol=0, atol=0)
    assert repr(UniformGrid(3)) == "UniformGrid(n=3, eps=0.001)"
    assert repr(PowerGrid(3, 7)) == "PowerGrid(n=3, rho=7.0, eps=0.001)"
    assert repr(LogSNRGrid(3, VPSDE())).startswith("LogSNRGrid(n=3, process=VPSDE(")


def test_counts_accept_numpy_integers():
    assert UniformGrid(np.int64(5)).n == 5
    assert uniform_grid(np.int32(3)).shape == (4,)
    assert PowerGrid(np.int16(2), np.float64(2.0)).rho == 2.0


def test_bad_input_is_refused_with_clear_messages():
    with pytest.raises(ValueError, match=r"n \(the number of steps\) must be an integer >= 1"):
        UniformGrid(0)
    with pytest.raises(TypeError, match=r"n \(the number of steps\) must be an integer"):
        QuadraticGrid(True)
    with pytest.raises(TypeError, match=r"n \(the number of steps\) must be an integer"):
        PowerGrid(1.5, 2.0)
    with pytest.raises(ValueError, match="rho must be a finite positive number"):
        PowerGrid(4, 0.0)
    with pytest.raises(ValueError, match="rho must be a finite positive number"):
        PowerGrid(4, -1.0)
    with pytest.raises(ValueError, match="eps must be a finite non-negative"):
        UniformGrid(4, eps=-1e-3)
    with pytest.raises(ValueError, match="eps must be smaller than T = 1.0"):
        UniformGrid(4, eps=1.0).reverse_times(1.0)
    with pytest.raises(ValueError, match="eps must be smaller than T = 0.5"):
        make_grid("quadratic", 4, T=0.5, eps=0.6)
    with pytest.raises(TypeError, match="T must be"):
        UniformGrid(4).reverse_times("1")
    with pytest.raises(ValueError, match="eps must be positive for a LogSNRGrid"):
        LogSNRGrid(4, VPSDE(), eps=0.0)
    with pytest.raises(TypeError, match="process must have log_snr"):
        LogSNRGrid(4, object())
    with pytest.raises(ValueError, match="T must equal the process's horizon"):
        LogSNRGrid(4, VPSDE()).reverse_times(2.0)
    with pytest.raises(ValueError, match="needs the process"):
        make_grid("logsnr", 4)
    with pytest.raises(ValueError, match="grid must be one of"):
        make_grid("cosine", 4)
    with pytest.raises(ValueError, match="reverse_times must be strictly increasing"):
        GivenGrid([0.0, 0.5, 0.4, 0.9])
    with pytest.raises(ValueError, match="reverse_times must be strictly increasing"):
        GivenGrid([0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="reverse_times must start at 0"):
        GivenGrid([0.1, 0.5])
    with pytest.raises(ValueError, match="reverse_times must be finite"):
        GivenGrid([0.0, float("inf")])
    with pytest.raises(ValueError, match="at least 2 times"):
        GivenGrid([0.0])
    with pytest.raises(ValueError, match="must end at or before T = 1.0"):
        GivenGrid([0.0, 1.5])
    with pytest.raises(ValueError, match="T must equal the grid's horizon"):
        GivenGrid([0.0, 0.5]).reverse_times(2.0)
    with pytest.raises(TypeError, match="call UniformGrid.reverse_times"):
        check_grid(UniformGrid(3))
    with pytest.raises(ValueError, match="UniformGrid times must be strictly increasing"):
        UniformGrid(10_000, eps=0.0).reverse_times(1e-320)  # more steps than float64 can separate
