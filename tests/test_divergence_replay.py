"""The divergence replay draws the same noise whatever the generator: with ``generator=None`` it rewinds the
device's default generator, so it names the same step as a run with an explicit generator of the same seed."""

from __future__ import annotations

import pytest
import torch

from splitdyn import EulerMaruyama, LinearSDE, integrate
from splitdyn.integrate import DivergenceError

F64 = torch.float64


def brownian_run(generator, factor):
    """Brownian motion from 0 over 40 unit steps: the final state's scale is random, so whether the replay sees
    the crossing (and where) depends on drawing the same noise again."""
    sde = LinearSDE([[0.0]], [[1.0]], T=1e9)
    return integrate(EulerMaruyama(sde), torch.zeros(200, 1, 1, dtype=F64), [float(i) for i in range(41)],
                     generator=generator, divergence_factor=factor)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_replay_with_the_default_generator_names_the_step_an_explicit_generator_names(seed):
    final = brownian_run(torch.Generator().manual_seed(seed), None).state.abs().amax().item()
    factor = 0.999 * final  # the final state is just beyond the bound: only the same path crosses it
    with pytest.raises(DivergenceError) as explicit:
        brownian_run(torch.Generator().manual_seed(seed), factor)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        with pytest.raises(DivergenceError) as default:
            brownian_run(None, factor)
    finally:
        torch.random.set_rng_state(state)
    assert "at step" in str(explicit.value)
    assert str(default.value) == str(explicit.value)
