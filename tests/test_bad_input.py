"""Bad input gets a clear error naming the argument and what was expected."""

import pytest
import torch

from splitdyn import (
    Composition,
    EulerDrift,
    ExactLinearFlow,
    LinearBeta,
    LinearSDE,
    PerturbationKernel,
    ReverseSDE,
    integrate,
    make_grid,
    uniform_grid,
)
from splitdyn_cld import CLD, hsm_loss


def sde():
    return LinearSDE([[-0.5]], [[1.0]], LinearBeta(0.1, 20.0))


def test_times_outside_the_horizon_are_refused():
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        sde().kernel(1.5)
    with pytest.raises(ValueError, match="t >= s"):
        sde().kernel(0.2, 0.5)
    with pytest.raises(ValueError, match="finite"):
        sde().kernel(float("nan"))


def test_wrong_state_shapes_are_refused():
    with pytest.raises(ValueError, match=r"shape \(batch, 1, \*event_shape\)"):
        sde().drift(torch.zeros(4, 2, 3), 0.5)
    with pytest.raises(TypeError, match="floating dtype"):
        sde().drift(torch.zeros(4, 1, 3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        sde().drift(torch.zeros(4, 1, 3), torch.full((3,), 0.5))


def test_bad_matrices_and_hyper_parameters_are_refused():
    with pytest.raises(ValueError, match="drift_matrix must be a square"):
        LinearSDE([[1.0, 2.0]], [[1.0]])
    with pytest.raises(ValueError, match="diffusion_matrix must have shape"):
        LinearSDE([[1.0]], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="beta"):
        LinearSDE([[1.0]], [[1.0]], beta=-2.0)
    with pytest.raises(ValueError, match="no stationary distribution"):
        LinearSDE([[0.5]], [[1.0]]).stationary_covariance()
    with pytest.raises(ValueError, match="friction"):
        CLD(friction=0.0)


def test_non_positive_steps_and_bad_grids_are_refused():
    step = ExactLinearFlow(sde())
    with pytest.raises(ValueError, match="strictly increasing"):
        integrate(step, torch.zeros(2, 1, 1), [0.0, 0.5, 0.5, 0.9])
    with pytest.raises(ValueError, match="n \\(the number of steps\\)"):
        uniform_grid(0)
    with pytest.raises(ValueError, match="eps must be smaller"):
        uniform_grid(10, T=1.0, eps=1.0)
    with pytest.raises(ValueError, match="grid must be one of"):
        make_grid("cosine", 10)


def test_non_finite_values_are_detected():
    x0 = torch.tensor([[float("nan"), 0.0]])
    with pytest.raises(ValueError, match="non-finite"):
        PerturbationKernel(sde(), 0.5, x0[:, None])
    with pytest.raises(ValueError, match="diverged"):
        integrate(EulerDrift(lambda u, t: u * float("inf"), nfe=0), torch.ones(2, 1, 1), [0.0, 0.1])
    with pytest.raises(ValueError, match="non-finite"):
        hsm_loss(lambda u, t: u[:, 1:], x0, CLD())


def test_score_with_the_wrong_shape_is_reported():
    reverse = ReverseSDE(sde(), lambda u, t: torch.zeros(u.shape[0], 2, *u.shape[2:]))
    with pytest.raises(ValueError, match="score returned shape"):
        reverse.drift(torch.zeros(3, 1, 2), 0.5)


def test_bad_torchsde_noise_type_and_score_components_are_refused():
    with pytest.raises(ValueError, match="noise_type"):
        ReverseSDE(sde(), lambda u, t: u).as_torchsde((2,), noise_type="scalar")
    with pytest.raises(ValueError, match="score_components"):
        ReverseSDE(CLD(), lambda u, t: u, score_components=[2])
    with pytest.raises(ValueError, match="weighting"):
        hsm_loss(lambda u, t: u[:, 1:], torch.zeros(4, 2), CLD(), weighting="uniform")
    with pytest.raises(ValueError, match="fraction"):
        Composition([(ExactLinearFlow(sde()), -1.0)])
