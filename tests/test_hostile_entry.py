"""Hostile input at the entry points (``splitdyn.sample``, ``integrate``): refused before any work with an
error of the right type naming the argument (issue 20's generator/device/arity classes).

One table of ``(id, callable, exception type, name in the message)``; each row is a call that reached a deep
torch error, or was accepted silently, before these checks.
"""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pytest
import torch

import splitdyn
from splitdyn import EulerMaruyama, UniformGrid, integrate, split_step
from splitdyn_cld import CLD

F64 = torch.float64
CLD_ = CLD()


def velocity(u, t):
    return -u[:, 1:] / CLD_.mass


def run(**kwargs):
    options = dict(grid=UniformGrid(4), step="em", dtype=F64)
    options.update(kwargs)
    score = options.pop("score", velocity)
    initial = options.pop("initial", (8, 2))
    return lambda: splitdyn.sample(CLD_, score, initial, **options)


U = CLD_.prior_sample((8, 2), dtype=F64)
STEP = EulerMaruyama(CLD_.reverse(velocity))
GRID = [0.0, 0.1, 0.2]


def loop(**kwargs):
    return lambda: integrate(STEP, U, GRID, **kwargs)


class Elsewhere:
    """A score that returns its value on the 'meta' device (another device than the state's)."""

    def __call__(self, u, t):
        return torch.empty((u.shape[0], 1, *u.shape[2:]), dtype=u.dtype, device="meta")


CASES = [
    # generators
    ("sample generator int", run(generator=0), TypeError, "generator"),
    ("sample generator str", run(generator="seed"), TypeError, "generator"),
    ("sample generator numpy", run(generator=np.random.default_rng(0)), TypeError, "generator"),
    ("sample generator numpy, state given", run(initial=U, generator=np.random.default_rng(0)), TypeError,
     "generator"),
    ("sample generator sscs", run(step="sscs", generator=0), TypeError, "generator"),
    ("sample generator torchsde", run(step="torchsde-euler", generator="x"), TypeError, "generator"),
    ("sample generator adaptive", run(step="adaptive-em", grid=None, generator=1.5), TypeError, "generator"),
    ("integrate generator int", loop(generator=0), TypeError, "generator"),
    ("integrate generator numpy", loop(generator=np.random.default_rng(0)), TypeError, "generator"),
    # devices
    ("sample device nonsense", run(device="nonsense"), ValueError, "device"),
    ("sample device int-like", run(device=3.5), TypeError, "device"),
    *([("sample device cuda", run(device="cuda"), ValueError, "device")] if not torch.cuda.is_available() else []),
    ("score on another device", run(score=Elsewhere()), ValueError, "device"),
    ("score on another device sscs", run(step="sscs", score=Elsewhere()), ValueError, "device"),
    # switches
    ("sample progress int", run(progress=5), TypeError, "progress"),
    ("sample compile str", run(compile="yes"), TypeError, "compile"),
    ("sample compile int", run(compile=1), TypeError, "compile"),
    ("integrate progress int", loop(progress=5), TypeError, "progress"),
    ("integrate compile str", loop(compile="yes"), TypeError, "compile"),
    ("integrate compile dict of non-strings", loop(compile={1: 2}), TypeError, "compile"),
    # arity
    ("score of one argument", run(score=lambda u: u[:, 1:]), TypeError, "score"),
    ("score of three arguments", run(score=lambda u, t, c: u[:, 1:]), TypeError, "score"),
    ("sample callback of one argument", run(callback=lambda u: None), TypeError, "callback"),
    ("integrate callback of two arguments", loop(callback=lambda i, u: None), TypeError, "callback"),
    ("drift of one argument", lambda: splitdyn.EulerDrift(lambda u: u), TypeError, "drift"),
    # shapes
    ("initial with 3 components", run(initial=torch.zeros(8, 3, 2, dtype=F64)), ValueError, "initial"),
    ("initial with 1 component", run(initial=torch.zeros(8, 1, 2, dtype=F64)), ValueError, "initial"),
    # unknown keywords to sampler factories
    ("factory unknown keyword", run(step=partial(split_step, bogus=1)), TypeError, "bogus"),
    ("named factory unknown keyword", run(step=partial(splitdyn.SAMPLERS["ei-ode-2"], bogus=1)), TypeError,
     "bogus"),
    ("reference solver unknown keyword", run(step=partial(splitdyn.SAMPLERS["torchsde-euler"], bogus=1)),
     TypeError, "bogus"),
    # tolerances that ask for no accuracy
    ("adaptive rtol 1e300", lambda: splitdyn.AdaptiveSampler(rtol=1e300, atol=1e300), ValueError, "rtol"),
    ("adaptive rtol 1", lambda: splitdyn.AdaptiveSampler(rtol=1.0), ValueError, "rtol"),
    ("adaptive max_step negative", lambda: splitdyn.AdaptiveSampler(max_step=-1.0), ValueError, "max_step"),
]


@pytest.mark.parametrize("name, call, error, word", CASES, ids=[c[0] for c in CASES])
def test_hostile_entry_input_is_refused_by_name(name, call, error, word):
    with pytest.raises(error, match=re.escape(word)):
        call()


def test_valid_switches_and_devices_still_pass():
    out = run(progress=False, compile=False, device="cpu", generator=torch.Generator().manual_seed(0))()
    assert out.state.shape == (8, 2, 2)
    out = run(progress="label", device=torch.device("cpu"), callback=lambda i, tau, u: None)()
    assert bool(torch.isfinite(out.state).all())
    out = run(score=lambda u, t, *rest: velocity(u, t))()  # extra optional parameters are fine
    assert bool(torch.isfinite(out.state).all())


def test_the_adaptive_sampler_caps_its_steps_at_max_step():
    taken = []
    solver = splitdyn.AdaptiveSampler(rtol=0.5, atol=0.5, max_step=0.1, eps=1e-2)
    out = splitdyn.sample(CLD_, velocity, (8, 2), None, step=solver, dtype=F64, generator=torch.Generator().manual_seed(0),
                          callback=lambda i, tau, u: taken.append(tau))
    steps = [b - a for a, b in zip([0.0] + taken[:-1], taken)]
    assert bool(torch.isfinite(out.state).all()) and max(steps) <= 0.1 + 1e-12 and len(steps) >= 10


def test_cld_score_components_are_not_a_shared_mutable_list():
    assert CLD().score_components == (1,)
    with pytest.raises((TypeError, AttributeError)):
        CLD().score_components.append(0)  # a tuple: no instance can change what every other one uses
