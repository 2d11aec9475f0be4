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
    Wall time per NFE of the ``cifar10`` UNet at batch 128 for SSCS and Euler-Maruyama through the library's
    CLD preset ``splitdyn_cld.samplers.sample(cld, score, shape, n, sampler="sscs" | "em", grid="quadratic")``
    (the network as velocity score through the library's ``MixedScore`` exactly as ``generate_images`` uses
    it, bf16 autocast, denoising step included: ``--sample-steps`` steps + 1 NFE), median of ``--repeats``
    full sampler calls.
overhead
    Fraction of a sampling step spent outside the network, same model and batch, all through the library's
    own sampler: the network alone (``UNetVelocityNet``, same inputs), the velocity score (``MixedScore``,
    host-side coefficients), the library step (the SSCS / EM step of ``splitdyn.SAMPLERS`` planned once for
    the grid with ``plan_step(step, times, u0)``, then ``plan(u, i)`` per interval, as ``integrate`` runs it),
    and the full ``splitdyn_cld.samplers.sample`` call per NFE; fraction = 1 - t_network / t_step. On CUDA the
    same step is captured with ``splitdyn.CapturedLoop`` (the whole loop in one CUDA graph, from the same
    plan, noise from the default CUDA generator) and the network alone with ``splitdyn.graphs.capture_graph``:
    the graphed step time and the outside-network fraction with graphs. With the ``compiled`` variant (the
    default; not in ``--quick`` on the CPU unless ``--variants`` asks for it) the same plan is compiled
    (``plan.compile()``, what ``splitdyn.sample(..., compile=True)`` does; once per plan, never per time):
    compile time and compiled step time, each in the part's remaining time (a compilation that outlasts it
    is reported as interrupted, one that fails as failed). On the CPU the graph measurements are skipped with
    a message (``CapturedLoop`` would run the same plan eagerly).
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
on the CPU, no time budget: fixed step and repeat counts, so what it runs never depends on how busy the
machine is); it runs in well under a minute.

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

The overhead part's compiled steps likewise, by rerunning that part alone (it remeasures its eager rows
in seconds and gives the rest of its budget to ``torch.compile``)::

    PYTHONUNBUFFERED=1 timeout 400 python3 benchmarks/bench_gpu.py --parts overhead --budget 360 \
        --out benchmarks/results 2>&1 | tee $OUT/bench_gpu_overhead.log;
    tar czf $OUT/gpu_overhead.tgz benchmarks/results/gpu_overhead_cuda.*

The smoke test on the CPU: ``python benchmarks/bench_gpu.py --quick --device cpu --out /tmp/smoke``.

The parts live in the package ``benchmarks/gpu/`` (``common``: budget, timing, models, result files;
``sampling``, ``overhead``, ``fp16``, ``throughput``: one part each; ``cli``: command line and run); this
script is its entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
if str(_HERE.parent) not in sys.path:  # the repository root, for a run without an installed package
    sys.path.insert(1, str(_HERE.parent))

from gpu import cli  # noqa: E402
from gpu.common import forward_flops, image_shape_of, sampling_model  # noqa: E402
from gpu.overhead import library_step, reverse_times, run_plan  # noqa: E402

# the package's pieces that tests and users reach through the script
__all__ = ["PARTS", "main", "forward_flops", "image_shape_of", "sampling_model", "library_step", "reverse_times",
           "run_plan"]

PARTS = cli.PARTS


def main(argv=None) -> dict:
    """Run the chosen parts (see the module docstring); returns ``{part: payload}``."""
    return cli.main(argv, description=__doc__)


if __name__ == "__main__":
    outcome = main()
    sys.exit(1 if any("error" in r for r in outcome.values()) else 0)
