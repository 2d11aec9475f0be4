r"""GPU figures for the image CLD-SGMs: training throughput, sampling cost, sampler overhead, fp16 stability.

One script, one run on a GPU machine; each part can be chosen with ``--parts`` and writes
``<out>/gpu_<part>_<device>.json`` and ``.md`` (``_quick`` is appended in ``--quick`` mode) through
``benchmarks/_common.py``; every file records the machine line and ``torch.cuda.get_device_name()``. Parts
run in the order sampling, overhead, fp16, throughput (cheapest and most predictable first, so that a long
``torch.compile`` cannot starve the others) and share a time budget (``--budget``, default 480 s): each part
gets its share of what is left when it starts (time a part does not use goes to the later ones) and stops
measuring, or skips a measurement, with a message when its share runs out. Results are written as they
come, so a run that is killed keeps what it finished.

Parts
-----
sampling
    Wall time per NFE of the ``cifar10`` UNet at batch 128 for SSCS and Euler-Maruyama
    (``splitdyn_cld.samplers.sscs`` / ``euler_maruyama``, the network as velocity score through the library's
    ``MixedScore`` exactly as ``generate_images`` uses it, bf16 autocast, quadratic grid, denoising step
    included: ``--sample-steps`` steps + 1 NFE), median of ``--repeats`` full sampler calls.
overhead
    Fraction of a sampling step spent outside the network, same model and batch: the network alone
    (``UNetVelocityNet``, same inputs), the velocity score (``MixedScore``, host-side coefficients), one step of
    the library's sampler loop (``integrate`` with the SSCS / EM propagator, warm caches) and the full sampler
    call per NFE; fraction = 1 - t_network / t_step. Then the same step written for CUDA-graph capture
    (exact linear half-steps + network + Euler score step for SSCS; the Euler-Maruyama step for EM), all
    per-step coefficients precomputed into device tables read through a device step counter, noise drawn
    inside the graph from the default CUDA generator, static input/output buffer; one step is captured
    with ``torch.cuda.graph`` and replayed for all steps. It reports the graphed step time, the graphed
    network time and the outside-network fraction with graphs. Before that, the capturable step is run
    eagerly with a seeded generator and compared with the library's sampler (fp32 network): the relative
    difference is in the results. On the CPU the graph measurements are skipped with a message.
fp16
    Stability run: ``--fp16-steps`` (2,000) training steps of ``cifar10_ablation`` at ``--fp16-batch``
    (128) on synthetic CIFAR-shaped data (uniform in [-1, 1], fresh each step) with the library's
    ``precision="fp16"`` (fp16 autocast + ``GradScaler``) through ``train_step``, Adam at the preset's
    learning rate after a ``--fp16-warmup``-step linear warm-up (100 instead of the preset's 100k, so the run
    is at the full learning rate, the harder test, for most of its steps). The loss is logged every 50 steps
    (interval mean and the step's own loss); checks: every loss finite (``train_step`` stops on a non-finite
    loss) and mean of the last 200 losses < mean of the first 200. Loss curve to JSON and PNG. If the run
    does not fit in its share of the budget it stops early, says so, and suggests ``--fp16-steps`` /
    ``--fp16-batch`` values that fit.
throughput
    Training images/s and achieved TFLOP/s of the ``cifar10`` and ``cifar10_ablation`` UNets at global batch
    128 in bf16 autocast, eager and with ``torch.compile`` (of the ``UNetVelocityNet``, as ``train`` compiles
    it), through the library's training step (``train_step``: HSM loss, finite check, backward, gradient
    clipping, Adam) plus the EMA update of the training loop, on synthetic CIFAR-shaped batches already on
    the device (the data pipeline is not timed). FLOPs: the UNet forward of one batch counted once with
    ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (a multiply-add is 2 FLOPs), times 3 for
    forward + backward, divided by the median step time. The compile time (first step) is reported; a
    compile that outlasts the remaining budget is interrupted and reported as such.

``--quick`` is a smoke mode for the CPU (the ``tiny`` network, batch 4, 3 timed steps, no ``torch.compile``
on the CPU, 60 s budget); it runs in well under a minute.

Command for the device machine (H100/H200, 10-minute limit per command), from the repository root; the
script puts the root on ``sys.path`` and needs no torchsde (where the torchsde wheel is carried in ``.whl``
anyway, the optional first line installs it as usual). The results come back as one archive, since ``$OUT``
returns at most 8 files; the inner ``timeout`` leaves time for the archive even if the run overruns::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site;                                                   # optional
    PYTHONUNBUFFERED=1 timeout 560 python3 benchmarks/bench_gpu.py --out /tmp/gpu_results 2>&1 \
        | tee $OUT/bench_gpu.log; tar czf $OUT/gpu_results.tgz -C /tmp/gpu_results .

Unpack the archive into ``benchmarks/results/``. One part alone: ``--parts fp16``. If the default run
skipped or interrupted a compiled measurement, a second command gives ``torch.compile`` all its time and,
writing into ``benchmarks/results/`` (where the unpacked first results travel with the working tree), keeps
the first run's eager rows (throughput merges rows it does not remeasure)::

    PYTHONUNBUFFERED=1 timeout 560 python3 benchmarks/bench_gpu.py --parts throughput --variants compiled \
        --budget 520 --out benchmarks/results 2>&1 | tee $OUT/bench_gpu_compiled.log;
    tar czf $OUT/gpu_throughput.tgz benchmarks/results/gpu_throughput_cuda.*

The smoke test on the CPU: ``python benchmarks/bench_gpu.py --quick --device cpu --out /tmp/smoke``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
if str(_HERE.parent) not in sys.path:  # the repository root, for a run without an installed package
    sys.path.insert(1, str(_HERE.parent))
from _common import RESULTS, machine, markdown_table, median_time, write_results  # noqa: E402

from splitdyn import EulerMaruyama, integrate, make_grid, split_step  # noqa: E402
from splitdyn.grids import check_grid  # noqa: E402
from splitdyn.propagators import ExactLinearFlow  # noqa: E402
from splitdyn_cld.image_training import (  # noqa: E402
    SyntheticImages,
    build_cld,
    build_score_model,
    resolve_precision,
    settings_for,
    train_step,
)
from splitdyn_cld.nets import get_config  # noqa: E402
from splitdyn_cld.samplers import euler_maruyama, sscs  # noqa: E402

#: The parts, in the order they run.
PARTS = ("sampling", "overhead", "fp16", "throughput")
#: Relative shares of the time budget (a part gets its share of what is left when it starts).
SHARES = {"sampling": 1.0, "overhead": 1.0, "fp16": 3.0, "throughput": 4.0}
SAMPLERS = {"sscs": sscs, "em": euler_maruyama}

#: Settings of a full run and of ``--quick``; explicit command-line values override either.
FULL = dict(train_configs=["cifar10", "cifar10_ablation"], sample_config="cifar10", batch=128, precision="bf16",
            train_steps=20, train_warmup=3, variants=["eager", "compiled"], sample_steps=10, repeats=5,
            fp16_config="cifar10_ablation", fp16_batch=128, fp16_steps=2000, fp16_log_every=50, fp16_warmup=100,
            fp16_window=200, budget=480.0)
QUICK = dict(train_configs=["tiny"], sample_config="tiny", batch=4, precision="bf16", train_steps=3, train_warmup=1,
             variants=["eager", "compiled"], sample_steps=3, repeats=2, fp16_config="tiny", fp16_batch=4,
             fp16_steps=20, fp16_log_every=5, fp16_warmup=5, fp16_window=200, budget=60.0)


# ---------------------------------------------------------------------------------------------------------------
# Budget and timing helpers
# ---------------------------------------------------------------------------------------------------------------


class OutOfTime(BaseException):
    """Raised by :func:`time_limit` (a ``BaseException``, so that no library ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Interrupt the block with :class:`OutOfTime` after ``seconds`` (POSIX main thread only, else no limit).

    Parameters
    ----------
    seconds:
        Wall-clock limit; ``None`` for none.
    """
    usable = (seconds is not None and hasattr(signal, "SIGALRM")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def handler(signum, frame):
        raise OutOfTime(f"over the time limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Budget:
    """The run's deadline and the shares of the parts still to run.

    Parameters
    ----------
    seconds:
        Total wall-clock budget of the run.
    parts:
        The parts that will run, in order.
    """

    def __init__(self, seconds: float, parts: list[str]) -> None:
        self.deadline = time.perf_counter() + float(seconds)
        self.pending = list(parts)

    def remaining(self) -> float:
        """Seconds left in the whole run."""
        return self.deadline - time.perf_counter()

    def start_part(self, part: str) -> float:
        """Deadline (``perf_counter`` time) of ``part``: its share of what is left."""
        shares = sum(SHARES[p] for p in self.pending)
        seconds = max(0.0, self.remaining()) * SHARES[part] / shares
        self.pending.remove(part)
        return time.perf_counter() + seconds


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (a ``perf_counter`` time)."""
    return deadline - time.perf_counter()


def synchronize(device: torch.device) -> None:
    """Wait for the device (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def budgeted_median(fn, repeats: int, device: torch.device, seconds: float) -> tuple[float, int]:
    """Median time of ``fn`` after one timed warm-up run, with as many of ``repeats`` runs as fit in ``seconds``.

    Returns
    -------
    (median seconds, number of timed runs)
    """
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    first = time.perf_counter() - start
    n = max(1, min(int(repeats), int(max(seconds - first, 0.0) / max(first, 1e-9))))
    return median_time(fn, n, device, warmup=0), n


def device_name(device: torch.device) -> str:
    """``torch.cuda.get_device_name()`` on CUDA, else ``"cpu"``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def image_shape_of(config: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images of a network configuration."""
    net_config = get_config(config)
    return int(net_config.image_channels), int(net_config.image_size), int(net_config.image_size)


def sampling_model(config: str, device: torch.device, precision: str, seed: int = 0):
    """A randomly initialised velocity score model in eval mode, as ``generate_images`` receives a trained one.

    Returns
    -------
    (settings, cld, score_model, net)
        ``score_model`` is the :class:`~splitdyn_cld.score.MixedScore` (the velocity score), ``net`` its
        :class:`~splitdyn_cld.image_training.UNetVelocityNet` (autocast inside).
    """
    settings = settings_for(config, precision=precision, device=str(device))
    _, autocast_dtype = resolve_precision(settings.precision, device)
    cld = build_cld(settings)
    torch.manual_seed(seed)
    score_model, net = build_score_model(get_config(config), cld, settings.mixed, autocast_dtype)
    net.to(device).eval()
    return settings, cld, score_model.eval(), net


def forward_flops(config: str, batch: int, device: torch.device) -> tuple[int, str]:
    """FLOPs of one UNet forward pass on ``batch`` images (a multiply-add counts 2), and where they were counted.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (no memory, no compute);
    if the network cannot run there, with a real fp32 forward pass on ``device``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from splitdyn_cld.nets import ScoreUNet

    c, h, w = image_shape_of(config)
    for where in ("meta", device.type):
        try:
            with torch.device(where if where == "meta" else device):
                net = ScoreUNet(get_config(config))
                x = torch.zeros(batch, 2 * c, h, w)
                t = torch.full((batch,), 0.5)
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                net(x, t)
            return int(counter.get_total_flops()), where
        except Exception:  # noqa: BLE001 - fall back to counting on the real device
            if where != "meta":
                raise
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------
# A sampler step written for CUDA-graph capture
# ---------------------------------------------------------------------------------------------------------------


def step_coefficients(cld, score_model, grid, sampler: str, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    r"""Every time-dependent coefficient of an SSCS or EM sampler over ``grid``, stacked per step on ``device``.

    The values are those the library's samplers compute on the host at each step (in float64, then cast to
    ``dtype``): for SSCS the two exact half-steps :math:`(\Phi, L)` of ``cld.reverse_linear_part()``, the
    score step's :math:`GG^\top P` and :math:`GG^\top` restricted to the velocity; for EM :math:`-F(t)`,
    :math:`GG^\top` and :math:`G`; for both the network time ``t``, :math:`\ell_t`, :math:`\Sigma^{vv}_t` of the
    :class:`~splitdyn_cld.score.MixedScore` and the step size ``h``.

    Parameters
    ----------
    cld:
        The process.
    score_model:
        The :class:`~splitdyn_cld.score.MixedScore` (for :math:`\ell_t`, :math:`\Sigma^{vv}_t`).
    grid:
        Reverse-time grid of the sampler (``make_grid``).
    sampler:
        ``"sscs"`` or ``"em"``.
    device, dtype:
        Where and in which precision the tables live.

    Returns
    -------
    dict
        Name -> tensor of shape ``(n_steps, ...)``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    times = check_grid(grid)
    reverse = cld.reverse(score_model)
    flow = ExactLinearFlow(cld.reverse_linear_part())
    P = cld.reference_precision()
    rows: dict[str, list[torch.Tensor]] = {}

    def add(name, value):
        rows.setdefault(name, []).append(torch.as_tensor(value, dtype=torch.float64))

    for i in range(len(times) - 1):
        tau, h = times[i], times[i + 1] - times[i]
        t = cld.T - tau  # the score is evaluated at the step's start (Algorithm 1; EM likewise)
        ell_t, var_vv = score_model.coefficients(t)
        add("t", t)
        add("ell", ell_t)
        add("var", var_vv)
        add("h", h)
        add("ggt", cld.diffusion_covariance(t)[..., [1]])  # GG^T on the velocity score's column
        if sampler == "sscs":  # sub-steps as splitdyn.splitting.Composition places them: A(h/2) S(h) A(h/2)
            phi1, l1 = flow.coefficients(tau, 0.5 * h)
            phi2, l2 = flow.coefficients(tau + 0.5 * h, 0.5 * h)
            G = cld.diffusion_matrix(float(t))
            add("phi1", phi1)
            add("l1", l1)
            add("phi2", phi2)
            add("l2", l2)
            add("m", G @ G.T @ P)
        else:
            add("neg_f", -cld.drift_matrix(t))
            add("g", reverse.diffusion_matrix(tau))
            add("sqrt_h", h**0.5)
    return {name: torch.stack(values).to(dtype=dtype, device=device) for name, values in rows.items()}


def _apply(matrix: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(k, m)`` matrix on the component axis of ``u`` ``(batch, m, *event)``."""
    return torch.einsum("ij,bj...->bi...", matrix, u)


def make_sampler_step(sampler: str, net, coefficients: dict[str, torch.Tensor], mixed: bool = True):
    r"""One full sampler step as a function of device tensors only, so that it can be captured in a CUDA graph.

    ``step(u, index, generator)`` reads row ``index`` (a ``(1,)`` int64 tensor on ``u``'s device) of the
    tables of :func:`step_coefficients` and returns the next state. SSCS: exact half-step of the linear part,
    Euler step of the score part with the network at the step's start, exact half-step (Algorithm 1); EM: an
    Euler-Maruyama step of the reverse SDE. The arithmetic is the library's (``splitdyn.split_step`` /
    ``EulerMaruyama`` with a :class:`~splitdyn_cld.score.MixedScore`), with the same noise draws in the same
    order, but no host work, no host synchronisation and no Python-float constants.

    Parameters
    ----------
    sampler:
        ``"sscs"`` or ``"em"``.
    net:
        The :class:`~splitdyn_cld.image_training.UNetVelocityNet` (``net(u, t) -> (B, 1, C, H, W)``).
    coefficients:
        The tables of :func:`step_coefficients` for the same sampler.
    mixed:
        The score model's mixed parametrisation.
    """

    def score(u, c):
        out = net(u, c["t"].expand(u.shape[0]))
        s = -c["ell"] * out
        return s - u[:, 1:2] / c["var"] if mixed else s

    def noise(shape, u, generator):
        return torch.randn(shape, generator=generator, dtype=u.dtype, device=u.device)

    def sscs_step(u, index, generator=None):
        c = {name: table.index_select(0, index)[0] for name, table in coefficients.items()}
        u = _apply(c["phi1"], u) + _apply(c["l1"], noise(u.shape, u, generator))
        u = u + c["h"] * (_apply(c["ggt"], score(u, c)) + _apply(c["m"], u))
        return _apply(c["phi2"], u) + _apply(c["l2"], noise(u.shape, u, generator))

    def em_step(u, index, generator=None):
        c = {name: table.index_select(0, index)[0] for name, table in coefficients.items()}
        xi = noise((u.shape[0], c["g"].shape[-1], *u.shape[2:]), u, generator)
        drift = _apply(c["neg_f"], u) + _apply(c["ggt"], score(u, c))
        return u + c["h"] * drift + c["sqrt_h"] * _apply(c["g"], xi)

    return {"sscs": sscs_step, "em": em_step}[sampler]


def library_propagator(cld, score_model, sampler: str):
    """The library's step propagator: ``split_step`` (SSCS) or ``EulerMaruyama`` of the reverse SDE."""
    reverse = cld.reverse(score_model)
    return split_step(reverse) if sampler == "sscs" else EulerMaruyama(reverse)


@torch.no_grad()
def compare_with_library(cld, score_model, net, sampler: str, u0: torch.Tensor, grid, seed: int = 0) -> float:
    """Relative max difference between :func:`make_sampler_step` run eagerly and the library's sampler loop.

    Both start from ``u0`` with a generator seeded ``seed`` and see the same noise; the result should be at
    rounding level. The network runs in fp32 (autocast switched off for the comparison) plus a fixed
    non-linear term in ``(u, t)``: a freshly initialised UNet outputs almost exactly zero, which would leave
    the network's time input and the score scaling untested.
    """
    from splitdyn_cld.score import MixedScore

    device = u0.device
    autocast_dtype, net.autocast_dtype = net.autocast_dtype, None

    def probe(u, t):
        return net(u, t) + torch.sin(3.0 * u[:, :1] - u[:, 1:2]) * t.reshape(-1, *([1] * (u.ndim - 1)))

    try:
        model = MixedScore(probe, cld, mixed=score_model.mixed, kind=score_model.kind)
        generator = torch.Generator(device).manual_seed(seed)
        # the captured step is one whole Strang step (both half-flows): compare with the unfused library loop
        reference = integrate(library_propagator(cld, model, sampler), u0, grid, generator=generator,
                              check_finite=False, fuse_exact_flows=False).state
        table = step_coefficients(cld, model, grid, sampler, device, u0.dtype)
        step = make_sampler_step(sampler, probe, table, model.mixed)
        generator = torch.Generator(device).manual_seed(seed)
        u = u0
        for i in range(len(check_grid(grid)) - 1):
            u = step(u, torch.tensor([i], device=device), generator)
    finally:
        net.autocast_dtype = autocast_dtype
    return float((u - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def capture_sampler_loop(step, u0: torch.Tensor, n_steps: int, warmup: int = 3, use_graph: bool | None = None):
    """Capture one sampler step in a CUDA graph and return ``run(u)``, which replays it ``n_steps`` times.

    The step reads and writes one static state buffer, advances a device step counter (so each replay uses
    the next row of the coefficient tables) and draws its noise from the device's default generator (seed it
    with ``torch.manual_seed``; every replay draws fresh noise). ``run(u)`` copies ``u`` into the buffer,
    resets the counter, replays ``n_steps`` times and returns the buffer (overwritten by the next ``run``);
    ``run.graphed`` says whether a graph was captured.

    Parameters
    ----------
    step:
        ``step(u, index, generator)`` from :func:`make_sampler_step`.
    u0:
        A state of the shape, dtype and device to sample.
    n_steps:
        Steps per sampler run (rows of the coefficient tables).
    warmup:
        Eager runs on a side stream before the capture (cuDNN autotuning, lazy initialisation).
    use_graph:
        ``None``: capture on CUDA, and elsewhere fall back to running the same step eagerly (same buffers,
        same counter, same results); ``True``: capture or raise ``RuntimeError``; ``False``: eager.
    """
    if use_graph is None:
        use_graph = u0.device.type == "cuda"
    if use_graph and u0.device.type != "cuda":
        raise RuntimeError(f"CUDA-graph capture needs a CUDA device, got a state on {u0.device}")
    state = u0.clone()
    index = torch.zeros(1, dtype=torch.long, device=u0.device)

    def body():
        state.copy_(step(state, index, None))
        index.copy_(torch.remainder(index + 1, n_steps))

    graph = _capture(body, u0.device, warmup) if use_graph else None

    @torch.no_grad()
    def run(u: torch.Tensor) -> torch.Tensor:
        state.copy_(u)
        index.zero_()
        for _ in range(n_steps):
            if graph is not None:
                graph.replay()
            else:
                body()
        return state

    run.graphed = graph is not None
    return run


def capture_network(net, u0: torch.Tensor, t: float, warmup: int = 3):
    """Capture the network alone (``net(u, t)`` into a static output) in a CUDA graph; returns ``replay()``."""
    times = torch.full((u0.shape[0],), t, dtype=u0.dtype, device=u0.device)
    out = {}

    def body():
        out["y"] = net(u0, times)

    graph = _capture(body, u0.device, warmup)

    def replay():
        graph.replay()
        return out["y"]  # the closure keeps the graph's static output alive

    return replay


def _capture(body, device: torch.device, warmup: int):
    """Warm ``body`` up on a side stream, then capture it (no grad, autocast weight cache off) in a CUDA graph.

    The network enters and leaves autocast inside ``body``; with the autocast cache off no cast weight is kept
    across the capture boundary (the cache would save nothing within one forward pass anyway).
    """
    cache = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(warmup):
                body()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            body()
    finally:
        torch.set_autocast_cache_enabled(cache)
    return graph


# ---------------------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------------------


def _name(args, part: str) -> str:
    return f"gpu_{part}_{args.device_obj.type}{'_quick' if args.quick else ''}"


def _write(args, part: str, payload: dict, markdown: str) -> None:
    payload = {"device_name": device_name(args.device_obj), "command": args.command, **payload}
    write_results(_name(args, part), payload, f"Command: `{args.command}`\n\n{markdown}", args.out)


def earlier_throughput(args, keys: set) -> list[dict]:
    """Throughput records of an earlier run in the same results folder that this run does not remeasure.

    Only records from the same GPU model, batch and precision are kept (marked ``"earlier_run": True``), so
    that e.g. ``--parts throughput --variants compiled`` completes an earlier default run instead of
    replacing its eager figures.
    """
    path = Path(args.out or RESULTS) / f"{_name(args, 'throughput')}.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    settings = old.get("settings", {})
    if (old.get("device_name") != device_name(args.device_obj) or settings.get("batch") != args.batch
            or settings.get("precision") != args.precision):
        return []
    return [dict(r, earlier_run=True) for r in old.get("results", []) if (r["config"], r["variant"]) not in keys]


def _models(args, cache: dict, config: str):
    key = (config, args.precision)
    if key not in cache:
        cache.clear()  # one big eval model at a time
        if args.device_obj.type == "cuda":
            torch.cuda.empty_cache()
        cache[key] = sampling_model(config, args.device_obj, args.precision, args.seed)
    return cache[key]


@torch.no_grad()
def part_sampling(args, deadline: float, cache: dict) -> dict:
    """Wall time per NFE of SSCS and EM with the network as velocity score (see the module docstring)."""
    device = args.device_obj
    settings, cld, score_model, net = _models(args, cache, args.sample_config)
    shape = (args.batch, *image_shape_of(args.sample_config))
    records, rows, notes = [], [], []
    for name, sampler in SAMPLERS.items():
        seconds = left(deadline) / (len(SAMPLERS) - len(records))
        if seconds <= 0:
            notes.append(f"{name}: skipped, the part's time budget ran out")
            print(f"  {notes[-1]}", flush=True)
            continue
        generator = torch.Generator(device).manual_seed(args.seed)
        nfe = {}

        def run():
            nfe["n"] = sampler(cld, score_model, shape, args.sample_steps, grid="quadratic", eps=1e-3, denoise=True,
                               generator=generator, device=device).nfe

        total, repeats = budgeted_median(run, args.repeats, device, seconds)
        record = {"sampler": name, "steps": args.sample_steps, "nfe": nfe["n"], "batch": args.batch,
                  "seconds_per_call": total, "seconds_per_nfe": total / nfe["n"],
                  "images_per_s": args.batch / total, "repeats": repeats}
        records.append(record)
        rows.append([name, args.sample_steps, nfe["n"], total * 1e3, total / nfe["n"] * 1e3, args.batch / total,
                     repeats])
        print(f"  {name}: {total / nfe['n'] * 1e3:.2f} ms/NFE ({nfe['n']} NFE, {repeats} repeats)", flush=True)
    if len(records) == 2:
        ratio = records[0]["seconds_per_nfe"] / records[1]["seconds_per_nfe"]
        notes.append(f"SSCS / EM time per NFE: {ratio:.3f}")
    table = markdown_table(["sampler", "steps", "NFE", "ms / call", "ms / NFE", "images / s", "repeats"], rows)
    text = (f"Sampling cost, `{args.sample_config}` UNet (random weights), batch {args.batch}, "
            f"{args.precision} autocast for the network, quadratic grid, denoising step included.\n\n{table}\n\n"
            + "\n".join(f"- {n}" for n in notes))
    print(table, flush=True)
    payload = {"settings": {"config": args.sample_config, "batch": args.batch, "precision": args.precision,
                            "steps": args.sample_steps, "grid": "quadratic",
                            "cudnn_benchmark": torch.backends.cudnn.benchmark},
               "results": records, "notes": notes}
    _write(args, "sampling", payload, text)
    return payload


@torch.no_grad()
def part_overhead(args, deadline: float, cache: dict) -> dict:
    """Share of a sampler step spent outside the network, eager and with CUDA graphs (see the module docstring)."""
    device = args.device_obj
    settings, cld, score_model, net = _models(args, cache, args.sample_config)
    shape = (args.batch, *image_shape_of(args.sample_config))
    n = args.sample_steps
    grid = make_grid("quadratic", n, cld.T, 1e-3)
    generator = torch.Generator(device).manual_seed(args.seed)
    u0 = cld.prior_sample(shape, generator=generator, dtype=torch.float32, device=device)
    t_mid = 0.5
    times = torch.full((args.batch,), t_mid, dtype=u0.dtype, device=device)
    per = max(left(deadline), 0.0) / 14.0  # 14 timed measurements at most
    results: dict = {"batch": args.batch, "steps": n}
    notes: list[str] = []

    t_net, _ = budgeted_median(lambda: net(u0, times), args.repeats, device, per)
    t_score, _ = budgeted_median(lambda: score_model(u0, t_mid), args.repeats, device, per)
    results.update(network_s=t_net, score_s=t_score)
    rows = []
    for name in SAMPLERS:
        propagator = library_propagator(cld, score_model, name)
        loop = lambda: integrate(propagator, u0, grid, generator=generator, check_finite=False)  # noqa: E731
        t_loop = budgeted_median(loop, args.repeats, device, 2 * per)[0] / n
        full = lambda: SAMPLERS[name](cld, score_model, shape, n, grid="quadratic", generator=generator,  # noqa: E731
                                      device=device)
        t_full = budgeted_median(full, args.repeats, device, 2 * per)[0] / (n + 1)
        diff = compare_with_library(cld, score_model, net, name, u0, make_grid("quadratic", min(n, 3), cld.T, 1e-3),
                                    seed=args.seed)
        record = {"loop_step_s": t_loop, "sampler_per_nfe_s": t_full,
                  "outside_network_fraction_loop": 1.0 - t_net / t_loop,
                  "outside_network_fraction_sampler": 1.0 - t_net / t_full,
                  "graph_step_vs_library_rel_diff": diff}
        if device.type == "cuda" and left(deadline) > 0:
            try:
                table = step_coefficients(cld, score_model, grid, name, device, u0.dtype)
                torch.cuda.manual_seed(args.seed)
                run = capture_sampler_loop(make_sampler_step(name, net, table, score_model.mixed), u0, n,
                                           use_graph=True)
                t_graph = budgeted_median(lambda: run(u0), args.repeats, device, per)[0] / n
                if "network_graph_s" not in results:
                    replay = capture_network(net, u0, t_mid)
                    results["network_graph_s"] = budgeted_median(replay, args.repeats, device, per)[0]
                finite = bool(torch.isfinite(run(u0)).all())
                record.update(graph_step_s=t_graph, graph_speedup_vs_loop=t_loop / t_graph,
                              outside_network_fraction_graph=1.0 - results["network_graph_s"] / t_graph,
                              graph_sample_finite=finite)
            except Exception as exc:  # noqa: BLE001 - report and go on
                notes.append(f"{name}: CUDA-graph capture failed: {type(exc).__name__}: {exc}")
                print(f"  {notes[-1]}", flush=True)
        results[name] = record
        graph = record.get("graph_step_s")
        rows.append([name, t_net * 1e3, t_score * 1e3, t_loop * 1e3, record["outside_network_fraction_loop"],
                     t_full * 1e3, record["outside_network_fraction_sampler"],
                     "-" if graph is None else graph * 1e3,
                     "-" if graph is None else record["outside_network_fraction_graph"], diff])
        print(f"  {name}: step {t_loop * 1e3:.2f} ms, network {t_net * 1e3:.2f} ms, outside the network "
              f"{record['outside_network_fraction_loop']:.1%}" + ("" if graph is None else
              f"; CUDA graph: step {graph * 1e3:.2f} ms, outside {record['outside_network_fraction_graph']:.1%}"),
              flush=True)
    if device.type != "cuda":
        notes.append("CUDA-graph measurements skipped: they need a CUDA device (this run is on "
                     f"{device.type}); the capturable step was still checked against the library's sampler.")
        print(f"  {notes[-1]}", flush=True)
    headers = ["sampler", "network ms", "score ms", "loop step ms", "outside net (loop)", "sampler ms/NFE",
               "outside net (sampler)", "graph step ms", "outside net (graph)", "graph step vs library"]
    table = markdown_table(headers, rows)
    graph_net = results.get("network_graph_s")
    text = (f"Sampler overhead, `{args.sample_config}` UNet (random weights), batch {args.batch}, {args.precision} "
            f"autocast, {n}-step quadratic grid. Network: `UNetVelocityNet` alone; score: `MixedScore` (host-side "
            "coefficients); loop step: one step of `integrate` with the library's propagator; sampler: the full "
            "`sscs` / `euler_maruyama` call per NFE; graph: one captured step replayed for every step. "
            "Outside-network fraction = 1 - t_network / t_step."
            + ("" if graph_net is None else f" Network replayed as a CUDA graph: {graph_net * 1e3:.3f} ms.")
            + f"\n\n{table}\n\n" + "\n".join(f"- {x}" for x in notes))
    print(table, flush=True)
    payload = {"settings": {"config": args.sample_config, "batch": args.batch, "precision": args.precision,
                            "steps": n, "grid": "quadratic", "cudnn_benchmark": torch.backends.cudnn.benchmark},
               "results": results, "notes": notes}
    _write(args, "overhead", payload, text)
    return payload


def part_fp16(args, deadline: float, cache: dict) -> dict:
    """fp16 + GradScaler stability run of the ablation UNet (see the module docstring)."""
    from splitdyn_cld.training import NonFiniteLossError, warmup_lr

    cache.clear()
    device = args.device_obj
    if device.type == "cuda":
        torch.cuda.empty_cache()
    s = settings_for(args.fp16_config, batch_size=args.fp16_batch, precision="fp16", device=str(device))
    precision, autocast_dtype = resolve_precision(s.precision, device)
    cld = build_cld(s)
    torch.manual_seed(args.seed)
    score_model, net = build_score_model(get_config(args.fp16_config), cld, s.mixed, autocast_dtype)
    net.to(device).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=s.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=True)
    generator = torch.Generator(device).manual_seed(args.seed * 65_537 + 1)
    data = torch.Generator(device).manual_seed(args.seed + 7)
    shape = (args.fp16_batch, *image_shape_of(args.fp16_config))
    losses, log, notes = [], [], []
    failure, skipped, interval, interval_skipped = None, 0, [], 0
    start = time.perf_counter()
    mark = None
    for step in range(args.fp16_steps):
        lr = warmup_lr(step, s.lr, args.fp16_warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x0 = torch.rand(shape, generator=data, device=device) * 2 - 1
        scale = scaler.get_scale()
        try:
            stats = train_step(score_model, optimizer, x0, cld, parameters=parameters, grad_clip=s.grad_clip,
                               scaler=scaler, weighting=s.weighting, t_min=s.t_min, generator=generator, step=step + 1)
        except NonFiniteLossError as exc:
            failure = str(exc)
            print(f"  non-finite loss: {exc}", flush=True)
            break
        skip = scaler.get_scale() < scale  # the scaler lowers its scale exactly when it skips a step
        skipped += skip
        interval_skipped += skip
        losses.append(stats["loss"])
        interval.append(stats["loss"])
        done = step + 1
        if done == 10:  # estimate the run's length from steps 10..30 (the first ones include cuDNN autotuning)
            mark = time.perf_counter()
        if done == 30:
            per_step = (time.perf_counter() - mark) / 20
            need = per_step * (args.fp16_steps - done)
            if need > left(deadline):
                fit = int(0.9 * (left(deadline) + time.perf_counter() - start) / per_step)
                notes.append(f"at {per_step * 1e3:.0f} ms/step the {args.fp16_steps} steps need about "
                             f"{need + time.perf_counter() - start:.0f} s, more than this part's budget: the run stops "
                             f"early; rerun with --fp16-steps {fit} or a smaller --fp16-batch (or a larger --budget)")
                print(f"  {notes[-1]}", flush=True)
        out_of_time = left(deadline) <= 0 and done < args.fp16_steps
        if done % args.fp16_log_every == 0 or done == args.fp16_steps or out_of_time:
            # an overflowing fp16 step has an infinite gradient norm (the scaler skips it): logged as None
            grad_norm = stats["grad_norm"] if math.isfinite(stats["grad_norm"]) else None
            row = {"step": done, "loss": sum(interval) / len(interval), "loss_at_step": stats["loss"],
                   "grad_norm": grad_norm, "skipped_in_interval": int(interval_skipped), "lr": lr,
                   "scale": scaler.get_scale(), "elapsed_s": time.perf_counter() - start}
            log.append(row)
            interval, interval_skipped = [], 0
            print(f"  step {done:5d}  loss {row['loss']:.4f}  scale {row['scale']:.0f}  "
                  f"{row['elapsed_s']:.0f} s", flush=True)
        if out_of_time:
            notes.append(f"stopped after {done} of {args.fp16_steps} steps: the part's time budget ran out")
            print(f"  {notes[-1]}", flush=True)
            break
    elapsed = time.perf_counter() - start
    window = min(args.fp16_window, len(losses) // 2)
    first = statistics.fmean(losses[:window]) if window else None
    last = statistics.fmean(losses[-window:]) if window else None
    finite = failure is None and all(math.isfinite(v) for v in losses)
    decreased = bool(window) and last < first
    if window < args.fp16_window:
        notes.append(f"windows of {window} losses instead of {args.fp16_window} ({len(losses)} steps ran)")
    if args.quick:
        notes.append("--quick: a few steps of the tiny network check that the part runs; the loss-decrease check "
                     "is meaningful only for the full run")
    summary = {"steps_completed": len(losses), "steps_requested": args.fp16_steps, "all_finite": finite,
               "failure": failure, "window": window, "mean_first_window": first, "mean_last_window": last,
               "loss_decreased": decreased, "skipped_steps": int(skipped), "final_scale": scaler.get_scale(),
               "seconds": elapsed, "seconds_per_step": elapsed / max(len(losses), 1)}
    name = f"gpu_fp16_{device.type}{'_quick' if args.quick else ''}"
    png = _plot_losses(losses, log, Path(args.out or RESULTS) / f"{name}.png",
                       f"{args.fp16_config}, fp16 + GradScaler, batch {args.fp16_batch}, {device_name(device)}")
    verdict = "PASS" if finite and decreased else "FAIL"
    text = (f"fp16 stability, `{args.fp16_config}` UNet, batch {args.fp16_batch}, synthetic data, lr {s.lr:g} after "
            f"a {args.fp16_warmup}-step warm-up, grad clip {s.grad_clip:g}: **{verdict}** "
            f"(all finite: {finite}; mean of the last {window} losses {last if last is None else f'{last:.4f}'} vs "
            f"first {window} {first if first is None else f'{first:.4f}'}). {len(losses)} steps in {elapsed:.0f} s, "
            f"{int(skipped)} steps skipped by the scaler.\n\n"
            + markdown_table(["step", "loss (interval mean)", "loss", "grad norm", "skipped", "scale"],
                             [[r["step"], r["loss"], r["loss_at_step"],
                               "-" if r["grad_norm"] is None else r["grad_norm"], r["skipped_in_interval"], r["scale"]]
                              for r in log])
            + (f"\n\n![loss curve]({png.name})" if png else "") + "\n\n" + "\n".join(f"- {x}" for x in notes))
    print(f"  fp16: {verdict} ({summary})", flush=True)
    payload = {"settings": {"config": args.fp16_config, "batch": args.fp16_batch, "steps": args.fp16_steps,
                            "log_every": args.fp16_log_every, "lr": s.lr, "warmup": args.fp16_warmup,
                            "grad_clip": s.grad_clip, "precision": precision},
               "summary": summary, "log": log, "losses": losses, "notes": notes}
    _write(args, "fp16", payload, text)
    return payload


def _plot_losses(losses, log, path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.5, alpha=0.4, label="loss per step")
    if log:
        ax.plot([r["step"] for r in log], [r["loss"] for r in log], "o-", ms=3, label="interval mean")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("HSM loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def measure_training(args, config: str, compiled: bool, flops: int, seconds: float) -> dict:
    """Images/s and TFLOP/s of ``train_step`` (+ EMA update) for one configuration, eager or compiled.

    Parameters
    ----------
    args:
        The parsed command line.
    config:
        Network / preset name.
    compiled:
        ``torch.compile`` the ``UNetVelocityNet`` (as :func:`splitdyn_cld.image_training.train` does).
    flops:
        Forward FLOPs of one batch (:func:`forward_flops`).
    seconds:
        Time limit of the whole measurement (model build and compilation included).
    """
    from splitdyn_cld.score import MixedScore
    from splitdyn_cld.training import make_ema

    begin = time.perf_counter()
    device = args.device_obj
    s = settings_for(config, batch_size=args.batch, precision=args.precision, device=str(device))
    precision, autocast_dtype = resolve_precision(s.precision, device)
    cld = build_cld(s)
    torch.manual_seed(args.seed)
    _, net = build_score_model(get_config(config), cld, s.mixed, autocast_dtype)
    net.to(device).train()
    ema = make_ema(net, s.ema_decay, warmup=True)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=s.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model = MixedScore(torch.compile(net) if compiled else net, cld, mixed=s.mixed)
    images = SyntheticImages(image_shape_of(config), length=4 * args.batch, seed=args.seed)
    pool = torch.stack([images[i] for i in range(len(images))]).to(device).split(args.batch)
    generator = torch.Generator(device).manual_seed(args.seed * 65_537 + 1)
    counter = {"step": 0}

    def step():
        x0 = pool[counter["step"] % len(pool)]
        counter["step"] += 1
        train_step(model, optimizer, x0, cld, parameters=parameters, grad_clip=s.grad_clip,
                   scaler=scaler if precision == "fp16" else None, weighting=s.weighting, t_min=s.t_min,
                   generator=generator, step=counter["step"])
        ema.update_parameters(net)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    step()  # compilation (fwd and bwd) happens here
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(max(args.train_warmup - 1, 0)):
        step()
    synchronize(device)
    warm = (time.perf_counter() - start - first) / max(args.train_warmup - 1, 1)
    remaining = 0.9 * seconds - (time.perf_counter() - begin)  # a margin, so the time limit does not strike
    repeats = max(1, min(args.train_steps, int(remaining / max(warm, 1e-9)) - 1))
    t = median_time(step, repeats, device, warmup=0)
    record = {"config": config, "variant": "compiled" if compiled else "eager", "batch": args.batch,
              "precision": precision, "seconds_per_step": t, "images_per_s": args.batch / t,
              "forward_flops_per_batch": flops, "tflops_per_s": 3 * flops / t / 1e12,
              "first_step_s": first, "timed_steps": repeats,
              "parameters_millions": sum(p.numel() for p in parameters) / 1e6}
    if device.type == "cuda":
        record["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return record


def part_throughput(args, deadline: float, cache: dict) -> dict:
    """Training throughput, eager and compiled (see the module docstring)."""
    cache.clear()
    device = args.device_obj
    variants = list(args.variants)
    notes: list[str] = []
    if device.type == "cpu" and args.quick and "compiled" in variants and not args.variants_given:
        variants.remove("compiled")
        notes.append("torch.compile skipped in --quick on the CPU (pass --variants eager compiled to force it)")
        print(f"  {notes[-1]}", flush=True)
    flops = {}
    for config in args.train_configs:
        count, where = forward_flops(config, args.batch, device)
        flops[config] = count
        print(f"  {config}: {count / 1e12:.4g} TFLOP per forward of {args.batch} images (counted on {where})",
              flush=True)
    # eager runs first (predictable), then compiled ones, cheapest configuration first
    plan = [(c, v) for v in variants for c in sorted(args.train_configs, key=flops.get)]
    records = earlier_throughput(args, set(plan))
    if records:
        notes.append(f"{len(records)} row(s) marked * come from an earlier run in the same folder (same GPU model, "
                     "batch and precision)")
    headers = ["config", "variant", "ms / step", "images / s", "TFLOP/s", "first step s", "steps", "memory GiB"]

    def row(record):
        return [record["config"], record["variant"] + ("*" if record.get("earlier_run") else ""),
                record["seconds_per_step"] * 1e3, record["images_per_s"], record["tflops_per_s"],
                record["first_step_s"], record["timed_steps"], record.get("max_memory_gib", "-")]

    rows = [row(r) for r in records]

    def write():
        table = markdown_table(headers, rows)
        text = (f"Training throughput through `train_step` + EMA update, global batch {args.batch}, {args.precision} "
                "autocast, synthetic CIFAR-shaped batches on the device. TFLOP/s = 3 x forward FLOPs "
                "(FlopCounterMode, multiply-add = 2) / median step time; 'first step' includes torch.compile."
                f"\n\n{table}\n\n" + "\n".join(f"- {x}" for x in notes))
        _write(args, "throughput", {"settings": {"configs": args.train_configs, "batch": args.batch,
                                                 "precision": args.precision, "timed_steps": args.train_steps,
                                                 "variants": variants},
                                    "forward_flops_per_batch": flops, "results": records, "notes": notes}, text)
        return table

    for i, (config, variant) in enumerate(plan):
        seconds = left(deadline) if variant == "compiled" else left(deadline) / (len(plan) - i)
        if seconds < (20 if variant == "compiled" and device.type == "cuda" else 1):
            notes.append(f"{config} {variant}: skipped, {max(seconds, 0):.0f} s of the budget left")
            print(f"  {notes[-1]}", flush=True)
            continue
        try:
            with time_limit(seconds):
                record = measure_training(args, config, variant == "compiled", flops[config], seconds)
        except OutOfTime:
            notes.append(f"{config} {variant}: not finished within its {seconds:.0f} s"
                         + (" (torch.compile still compiling?)" if variant == "compiled" else ""))
            print(f"  {notes[-1]}", flush=True)
            record = None
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory or a compile error: report, go on
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            notes.append(f"{config} {variant}: failed: {type(exc).__name__}: {first_line}")
            print(traceback.format_exc(), flush=True)
            record = None
        finally:
            if variant == "compiled":
                torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if record is None:
            continue
        records.append(record)
        rows.append(row(record))
        print(f"  {config} {variant}: {record['images_per_s']:.1f} images/s, {record['tflops_per_s']:.2f} TFLOP/s",
              flush=True)
        write()
    table = write()
    print(table, flush=True)
    return {"results": records, "notes": notes}


PART_FUNCTIONS = {"sampling": part_sampling, "overhead": part_overhead, "fp16": part_fp16,
                  "throughput": part_throughput}


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line; values left unset come from :data:`FULL` or, with ``--quick``, :data:`QUICK`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="parts to run (they always run in the order %(choices)s)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--quick", action="store_true", help="CPU smoke mode: tiny network, batch 4, 3 steps, ...")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--budget", type=float, help="total seconds for all parts (default 480; --quick 60)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, help="batch of throughput/sampling/overhead (default 128)")
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"],
                        help="autocast of throughput/sampling/overhead (default bf16)")
    parser.add_argument("--train-configs", nargs="+", help="throughput configs (default cifar10 cifar10_ablation)")
    parser.add_argument("--train-steps", type=int, help="timed training steps per measurement (default 20)")
    parser.add_argument("--train-warmup", type=int, help="untimed steps first, the compiling one included (default 3)")
    parser.add_argument("--variants", nargs="+", choices=["eager", "compiled"], help="default: both")
    parser.add_argument("--sample-config", help="sampling/overhead config (default cifar10)")
    parser.add_argument("--sample-steps", type=int, help="sampler steps (default 10)")
    parser.add_argument("--repeats", type=int, help="timed repeats of each sampling measurement (default 5)")
    parser.add_argument("--fp16-config", help="default cifar10_ablation")
    parser.add_argument("--fp16-batch", type=int, help="default 128")
    parser.add_argument("--fp16-steps", type=int, help="default 2000")
    parser.add_argument("--fp16-log-every", type=int, help="default 50")
    parser.add_argument("--fp16-warmup", type=int, help="learning-rate warm-up steps (default 100)")
    parser.add_argument("--fp16-window", type=int, help="losses averaged at each end for the check (default 200)")
    args = parser.parse_args(argv)
    args.variants_given = args.variants is not None
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device_obj = torch.device(args.device)
    if args.device_obj.type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda requested but CUDA is not available")
        if args.device_obj.index is None:  # torch.cuda.set_device needs an index
            args.device_obj = torch.device("cuda", torch.cuda.current_device())
    words = sys.argv[1:] if argv is None else argv
    args.command = "python benchmarks/bench_gpu.py " + " ".join(str(a) for a in words)
    return args


def main(argv=None) -> dict:
    """Run the chosen parts; returns ``{part: payload}`` (a failed part: ``{"error": traceback}``)."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device_obj.type == "cuda":
        torch.cuda.set_device(args.device_obj)
    parts = [p for p in PARTS if p in args.parts]
    print(f"machine: {machine()}\ndevice: {device_name(args.device_obj)}; parts {parts}; budget {args.budget:.0f} s",
          flush=True)
    budget = Budget(args.budget, parts)
    cache: dict = {}
    results = {}
    for part in parts:
        deadline = budget.start_part(part)
        print(f"\n== {part} ({max(left(deadline), 0):.0f} s of {max(budget.remaining(), 0):.0f} s left) ==",
              flush=True)
        start = time.perf_counter()
        try:
            results[part] = PART_FUNCTIONS[part](args, deadline, cache)
        except Exception:  # noqa: BLE001 - one failing part must not lose the others
            error = traceback.format_exc()
            print(error, flush=True)
            results[part] = {"error": error}
            _write(args, part, {"error": error}, f"**failed**\n\n```\n{error}\n```")
        print(f"== {part}: {time.perf_counter() - start:.1f} s ==", flush=True)
    cache.clear()
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if any("error" in r for r in outcome.values()) else 0)
