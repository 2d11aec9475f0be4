"""The EMA of :func:`splitdyn_cld.training.make_ema` (issue 22): the warm-up rule exactly, no module walk per
update, state compatible with ``AveragedModel`` and refreshed on load / move."""

import copy

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from splitdyn_cld.training import ExponentialMovingAverage, ema_rate, make_ema


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.norm = torch.nn.BatchNorm1d(4)  # float buffers and an integer one


def _perturb(model, seed, tensors=None):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in tensors if tensors is not None else [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
            else:
                t.add_(1)


def test_updates_follow_the_warmup_rule_in_float32_and_do_not_walk_the_modules(monkeypatch):
    model = _Net()
    ema = make_ema(model, decay=0.9)
    assert isinstance(ema, ExponentialMovingAverage) and isinstance(ema, AveragedModel)
    expected = None
    tensors = [*model.parameters(), *model.buffers()]
    for n in range(100):  # through the warm-up: (1 + n) / (10 + n) reaches the decay 0.9 at n = 80
        _perturb(model, n, tensors)
        current = {k: v.clone() for k, v in model.state_dict().items()}
        if n == 1:  # from now on the model's modules must not be walked
            monkeypatch.setattr(type(model), "parameters", lambda *a, **k: pytest.fail("walked the model"))
            monkeypatch.setattr(type(model), "buffers", lambda *a, **k: pytest.fail("walked the model"))
        ema.update_parameters(model)
        if expected is None:
            expected = current
        else:
            rate = min(0.9, (1 + n) / (10 + n))
            assert rate == ema_rate(n, 0.9)
            w = torch.tensor(1 - rate, dtype=torch.float32)
            expected = {k: torch.lerp(v, current[k], w) if v.is_floating_point() else current[k]
                        for k, v in expected.items()}
        got = ema.module.state_dict()
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7)
    assert int(ema.n_averaged) == 100


def test_state_is_the_averaged_models_and_loading_refreshes_the_count():
    model = _Net()
    ema = make_ema(model, decay=0.999)
    for n in range(3):
        _perturb(model, n)
        ema.update_parameters(model)
    state = copy.deepcopy(ema.state_dict())
    plain = AveragedModel(_Net(), use_buffers=True)
    assert set(plain.state_dict()) == set(state)
    plain.load_state_dict(state)  # and back: an AveragedModel checkpoint loads into the EMA
    other = make_ema(_Net(), decay=0.999)
    other.load_state_dict(plain.state_dict())
    _perturb(model, 7)
    ema.update_parameters(model)
    other.update_parameters(model)  # resumes at n_averaged = 3, not as a first (copying) update
    for a, b in zip(ema.module.state_dict().values(), other.module.state_dict().values()):
        assert torch.equal(a, b)
    # moving the average refreshes the kept tensors (the buffers are new objects)
    ema.double()
    model.double()
    ema.refresh()
    _perturb(model, 8)
    ema.update_parameters(model)
    assert ema.module.lin.weight.dtype == torch.float64 and int(ema.n_averaged) == 5
    copy.deepcopy(ema)  # the kept lists are not part of the copied state
    with pytest.raises(ValueError, match="parameters and buffers"):
        ema.update_parameters(torch.nn.Linear(3, 4))
