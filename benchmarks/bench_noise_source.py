"""Cost per step of the noise sources: ``torch.randn`` with a generator (default) vs a torchsde Brownian path.

CLD reverse SDE with a cheap analytic (Gaussian) velocity score, so the figures expose the integrators' own
overhead; Euler-Maruyama and SSCS over 200 uniform steps; median wall time per step over interleaved rounds.
The Brownian path runs ``integrate(..., noise=BrownianNoise(bm))`` on a fresh ``torchsde.BrownianInterval``
(without and with the space-time Lévy area) per run. Output: ``benchmarks/results/noise_source_cpu.*``.

Command: ``python benchmarks/bench_noise_source.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchsde

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, median_time, write_results  # noqa: E402

from splitdyn import BrownianNoise, EulerMaruyama, ReverseSDE, apply_matrix, integrate, split_step  # noqa: E402
from splitdyn.grids import uniform_grid  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cld = CLD()
    S0 = torch.tensor([[0.3, 0.0], [0.0, cld.gamma * cld.mass]], dtype=torch.float64)
    cache = {}

    def score(u, t):
        key = float(t)
        if key not in cache:
            Phi, Q = cld.kernel(key)
            cache[key] = -torch.linalg.inv(Phi @ S0 @ Phi.T + Q)[1:]
        return apply_matrix(cache[key], u)

    reverse = ReverseSDE(cld, score, [1])
    grid = uniform_grid(args.steps, cld.T, 1e-3).tolist()
    rows, table = [], []
    for batch in args.batch_sizes:
        u0 = torch.randn(batch, 2, 2, generator=torch.Generator().manual_seed(0))
        for name, step in (("EM", EulerMaruyama(reverse)), ("SSCS", split_step(reverse))):
            def default():
                integrate(step, u0, grid, generator=torch.Generator().manual_seed(1))

            def path(levy):
                def run():
                    bm = torchsde.BrownianInterval(0.0, grid[-1] * (1 + 1e-12), size=(batch, 4), entropy=3,
                                                   levy_area_approximation=levy)
                    integrate(step, u0, grid, noise=BrownianNoise(bm, torch.Generator().manual_seed(1)))
                return run

            cpu = torch.device("cpu")
            times = {"generator": median_time(default, args.repeats, cpu),
                     "brownian": median_time(path("none"), args.repeats, cpu),
                     "brownian+levy": median_time(path("space-time"), args.repeats, cpu)}
            per_step = {k: 1e3 * v / args.steps for k, v in times.items()}
            rows.append({"batch": batch, "sampler": name, "ms_per_step": per_step})
            table.append([batch, name] + [f"{per_step[k]:.3f}" for k in ("generator", "brownian", "brownian+levy")])
            print(rows[-1], flush=True)
    markdown = (f"Command: `python benchmarks/bench_noise_source.py` ({args.steps} steps, 1 thread, CLD, d = 2).\n\n"
                + markdown_table(["batch", "sampler", "torch.randn (ms/step)", "Brownian path (ms/step)",
                                  "Brownian path + Lévy area (ms/step)"], table))
    write_results("noise_source_cpu", {"rows": rows, "steps": args.steps}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
