"""The core's declared protocols: checked once where an object enters, with a message naming what is missing;
the step registry is opt-in for any package."""

from __future__ import annotations

import types

import pytest
import torch

import splitdyn
from splitdyn import LinearSDE, ReferenceSolver, UniformGrid, moment_kernels
from splitdyn.protocols import (ComposablePlan, ForwardProcess, LinearProcess, ReferenceSolverProtocol, ReverseDynamics,
                                missing_members, require)
from splitdyn.steps import REGISTRY, EulerDrift, Intervals, Step
from splitdyn_cld import CLD

F64 = torch.float64


class NoDiffusion:
    T = 1.0
    num_components = 1

    def drift(self, u, t):
        return -u


def test_require_names_the_argument_the_protocol_and_the_missing_members():
    with pytest.raises(TypeError, match=r"process must provide diffusion_matrix \(a forward process.*NoDiffusion lacks it"):
        require("process", NoDiffusion(), ForwardProcess)
    with pytest.raises(TypeError, match=r"process must provide diffusion_matrix"):
        splitdyn.sample(NoDiffusion(), lambda u, t: u, (2, 1), UniformGrid(3))
    with pytest.raises(TypeError, match=r"sde must provide .*drift_matrix") as info:
        moment_kernels(object(), 0.5)
    assert all(name in str(info.value) for name in ("T", "num_components", "drift", "diffusion_matrix"))
    with pytest.raises(TypeError, match=r"sde must provide diffusion_matrix \(an SDE"):
        splitdyn.EulerMaruyama(types.SimpleNamespace(drift=lambda u, t: u))
    assert missing_members(CLD(), LinearProcess) == []
    assert missing_members(CLD().reverse(lambda u, t: u[:, 1:]), ReverseDynamics) == []


def test_library_objects_satisfy_the_protocols():
    cld = CLD()
    reverse = cld.reverse(lambda u, t: -u[:, 1:])
    assert isinstance(cld, ForwardProcess) and isinstance(cld, LinearProcess)
    assert isinstance(reverse, ReverseDynamics)
    plan = EulerDrift(lambda u, t: u).plan(Intervals.single(0.0, 0.1), torch.zeros(2, 1, 1))
    assert isinstance(plan, ComposablePlan)
    assert isinstance(splitdyn.AdaptiveProbabilityFlow(), ReferenceSolverProtocol)
    assert isinstance(splitdyn.AdaptiveSampler(), ReferenceSolverProtocol)


class NoCutoff(ReferenceSolver):
    needs_grid = False

    def solve(self, reverse, u, times, eps, **kwargs):  # pragma: no cover - never reached
        raise AssertionError


def test_a_solver_that_picks_its_own_steps_must_declare_eps():
    assert ReferenceSolver.eps is None
    with pytest.raises(TypeError, match="sets no eps"):
        splitdyn.sample(CLD(), lambda u, t: -u[:, 1:], (2, 1), None, step=NoCutoff(), dtype=F64)


def test_the_step_registry_is_opt_in_for_any_package():
    module = types.ModuleType("thirdparty_steps.flows")
    namespace: dict = {}
    exec("from splitdyn.steps import Step\n"
         "class ThirdPartyStep(Step):\n"
         "    weak_order = 1.0\n"
         "    def plan(self, intervals, like):\n"
         "        raise NotImplementedError\n", namespace)
    cls = namespace["ThirdPartyStep"]
    cls.__module__ = module.__name__  # as if defined in that package
    assert issubclass(cls, Step)
    assert "ThirdPartyStep" not in REGISTRY  # defined, recorded, not listed
    REGISTRY.include("thirdparty_steps")
    try:
        assert REGISTRY["ThirdPartyStep"] is cls
    finally:
        REGISTRY.exclude("thirdparty_steps")
    assert {"EulerMaruyama", "ExactLinearFlow", "Composition"} <= set(REGISTRY)
    with pytest.raises(TypeError, match="package"):
        REGISTRY.include("")


def test_linear_sde_and_moments_need_no_cycle():
    # moment_kernels checks the protocol instead of importing the class that calls it
    sde = LinearSDE([[-1.0]], [[1.0]])
    Phi, Q = moment_kernels(sde, 0.5)
    assert torch.allclose(Phi, torch.exp(torch.tensor(-0.5, dtype=F64)).reshape(1, 1), atol=1e-9)
