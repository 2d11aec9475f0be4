r"""CUDA-graph capture of a whole sampling loop from the same plan the eager loop runs.

A plan (:mod:`splitdyn.steps.base`) holds every per-step coefficient as a device tensor and does no host
work per step, so the ``n`` planned calls of a loop can be recorded once in a CUDA graph and replayed for
every new batch: the host then launches one graph instead of every kernel of every step (the network's
included). :class:`CapturedLoop` does that for any :class:`~splitdyn.steps.base.Step` and grid; on a device
without CUDA graphs it runs the same plan eagerly (same buffers, same results), so code written against it
runs everywhere. :func:`capture_graph` is the capture itself, for any other callable (e.g. a network
alone, timed without launch overhead).

Noise inside a graph comes from the device's default generator (seed it with ``torch.manual_seed``); each
replay draws fresh noise. The score is called at capture time with the plan's Python-float times, so any
host work it does per call (e.g. computing coefficients from ``t``) is baked into the graph once.
"""

from __future__ import annotations

import torch

from .checks import check_count, check_flag
from .grids import check_grid
from .integrate import plan_step
from .steps.base import Step, evaluation_count
from .steps.noise import GaussianNoise

__all__ = ["CapturedLoop", "capture_graph"]


class CapturedLoop:
    """The loop of ``step`` over ``grid`` for states like ``like``, captured in a CUDA graph when possible.

    Parameters
    ----------
    step:
        Any :class:`~splitdyn.steps.base.Step` (e.g. :func:`splitdyn.split_step` of a reverse SDE).
    grid:
        The grid in the step's own time (reverse time for samplers).
    like:
        A state of the shape, dtype and device to run (its values are not used).
    warmup:
        Eager runs on a side stream before capture (lazy initialisation, cuDNN autotuning).
    use_graph:
        ``None``: capture on CUDA, run eagerly elsewhere; ``True``: capture or raise; ``False``: eager.

    Attributes
    ----------
    graphed:
        Whether a graph was captured.
    nfe:
        Score evaluations per run (from the plan).
    """

    def __init__(self, step: Step, grid, like: torch.Tensor, *, warmup: int = 2, use_graph: bool | None = None) -> None:
        if not isinstance(like, torch.Tensor) or not like.is_floating_point():
            raise TypeError("like must be a floating state tensor (batch, k, *event)")
        warmup = check_count("warmup", warmup, minimum=0)
        if use_graph is None:
            use_graph = like.device.type == "cuda"
        check_flag("use_graph", use_graph)
        if use_graph and like.device.type != "cuda":
            raise RuntimeError(f"CUDA-graph capture needs a CUDA device, got a state on {like.device}")
        self.times = check_grid(grid)
        self.plan = plan_step(step, self.times, like)
        self.noise = GaussianNoise(None)  # the device's default generator (see the module docstring)
        self.static_input = like.detach().clone()
        self.static_output: torch.Tensor | None = None
        self.graph = None
        with torch.no_grad():
            before = evaluation_count(self.plan)
            self._body()
            self.nfe = evaluation_count(self.plan) - before
            if use_graph:
                self.graph = capture_graph(self._body, like.device, warmup=warmup)
        self.graphed = self.graph is not None

    def _body(self) -> None:
        u = self.static_input
        for i in range(len(self.times) - 1):
            u = self.plan(u, i, self.noise)
        if self.static_output is None or self.graph is None:
            self.static_output = u

    @torch.no_grad()
    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """Run the loop from ``u``; returns the final state (a buffer the next call overwrites)."""
        if u.shape != self.static_input.shape or u.dtype != self.static_input.dtype:
            raise ValueError(f"u must have shape {tuple(self.static_input.shape)} and dtype "
                             f"{self.static_input.dtype}, got {tuple(u.shape)} {u.dtype}")
        self.static_input.copy_(u)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._body()
        assert self.static_output is not None  # set by the first run in __init__
        return self.static_output


def capture_graph(body, device, *, warmup: int = 2) -> "torch.cuda.CUDAGraph":
    """Capture ``body()`` in a CUDA graph after ``warmup`` eager runs on a side stream.

    The building block of :class:`CapturedLoop`, public for capturing any other callable (e.g. a network
    alone, to time it without launch overhead). ``body`` must read and write tensors that outlive the graph
    (static buffers, or a closure that keeps its outputs): a replay reruns exactly the captured kernels on the
    same memory. The autocast weight cache is off during warm-up and capture, so that no cast weight is kept
    across the capture boundary. Call it under ``torch.no_grad()`` unless the graph should record autograd.

    Parameters
    ----------
    body:
        A callable of no arguments doing device work only (no host synchronisation).
    device:
        The CUDA device (``torch.device`` or string) the work runs on.
    warmup:
        Eager runs before capture (lazy initialisation, cuDNN autotuning).

    Returns
    -------
    torch.cuda.CUDAGraph
        The captured graph; ``graph.replay()`` reruns ``body``'s kernels.
    """
    if not callable(body):
        raise TypeError(f"body must be a callable of no arguments, got {type(body).__name__}")
    warmup = check_count("warmup", warmup, minimum=0)
    device = torch.device(device)
    if device.type != "cuda":
        raise RuntimeError(f"CUDA-graph capture needs a CUDA device, got {device}")
    cache = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                body()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
    finally:
        torch.set_autocast_cache_enabled(cache)
    return graph
