"""Few-step CLD with exact scores: what limits accuracy at NFE 5, 8 and 10 (issue 21).

Problem: the paper's 2-D diamond mixture, CLD (M = 0.25, Gamma = 1, beta = 4, gamma = 0.04, T = 1) with the
exact velocity score of the diffused mixture (float64). Every sampler takes NFE steps and ends with the
score-free data update of eq. 109 (``denoise="score-free"``: no evaluation), so NFE = steps.

Protocol (as ``bench_accuracy.py``): per seed, the SW2 of the samples to a fresh data draw of the same size
(ratio to the floor, the SW2 between two fresh data draws, mean of ``--floor-draws`` pairs) and the
-log p_data gap (mean -log p_data of the samples minus that of the seed's data draw); mean +- s.e. over seeds
(the ratio's s.e. includes the floor's). A target is met only when mean + 2 s.e. is inside it.

Stages
------
1. **Scan** (choice seeds, default 0-2): ``--samplers`` x ``--grids`` at the cutoff 1e-3, and grids searched by
   :func:`splitdyn.grid_search.search_grid` (calibration seed 1000) at every ``--cutoffs`` for the
   ``--cutoff-samplers`` (the accuracy benchmark's searched grids at 1e-3 for the others; the full lists
   are :data:`SAMPLERS`, :data:`GRIDS`, :data:`CUTOFFS`), at each NFE. Each cell
   also gets the *discretisation error* ``rms``: the RMS distance of the samples to the converged solution of
   the same ODE from the same prior draws (``--reference-steps`` power-3 steps of ``ei-ode-3``; no sampling
   noise, so it ranks configurations that the SW2 cannot separate at this sample size).
2. **Confirm** (fresh seeds, default 3-14, never used to choose): the best configurations of the scan (by
   SW2 ratio, and by ``rms``) and the baseline ``unipc-3`` on the power-3 grid.
3. **Decompose** the error of the chosen configurations (choice seeds): the prior mismatch at T (the
   converged ODE from the prior N(0, diag(1, M)) against the converged ODE from exact draws of p_T), the
   cutoff (the converged ODE to eps with the score-free map), and the error by step: the first ``k`` steps
   of the few-step sampler followed by the converged ODE for the rest (mean-square distance to the converged
   solution, and SW2 ratio, as ``k`` grows).

A full run does not fit a busy 2-core machine in one go, so the stages run piecewise: ``--tag`` names the
output of a part (``cld_fewstep<tag>``), ``--confirm-only`` and ``--decompose`` run one stage for given
configurations, ``--second-target`` checks the choices on the 64-D mixture of ``bench_accuracy.py``, and
``--merge`` combines the parts (the commands are in ``docs/concepts/exponential_integrators.rst``).

Output: ``benchmarks/results/cld_fewstep.{json,md}`` (``cld_fewstep_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SlicedW2, markdown_table, mean_se, verdict_at_most, write_results  # noqa: E402

from splitdyn import PowerGrid, QuadraticGrid, score_free_denoise  # noqa: E402
from splitdyn.grids import GivenGrid, InformationLogSNR, LogSNRGrid  # noqa: E402
from splitdyn.integrate import integrate  # noqa: E402
from splitdyn.grid_search import search_grid  # noqa: E402
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture, random_mixture  # noqa: E402
from splitdyn.reverse import ReverseSDE  # noqa: E402
from splitdyn.sample import sampler_step  # noqa: E402
from splitdyn.steps.base import Intervals  # noqa: E402
from splitdyn.steps.exponential import ExponentialODE  # noqa: E402
from splitdyn.steps.exponential_weights import DiffusionGeometry  # noqa: E402
from splitdyn.steps.unipc import UniPC  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402

F64 = torch.float64
FLOOR_SEEDS = 7000  # fresh data pairs of the floor: seeds 7000 + i and 8000 + i (as bench_accuracy.py)
REFERENCE_SEEDS = 5000  # the fresh data draw each evaluation seed is compared with
NOISE_SEEDS = 1000  # + seed: the SDE samplers' noise
CALIBRATION_SEED = 1000  # the searched grids' prior draws (as bench_accuracy.py)

#: Samplers of the scan: a name in splitdyn.SAMPLERS, or "<name>@lsnr" for UniPC / EI-ODE with polynomials in
#: CLD's information log-SNR (splitdyn.grids.InformationLogSNR) instead of t.
SAMPLERS = ("unipc-2", "unipc-3", "unipc-2-bh1", "unipc-3-bh1", "unipc-2-bh1-lof", "unipc-3-bh1-lof",
            "unipc-2-bh2-lof", "unipc-3-bh2-lof", "ei-ode-2", "ei-ode-3", "ei-sde-2", "unipc-2@lsnr",
            "unipc-3@lsnr", "ei-ode-3@lsnr")
GRIDS = ("power-2", "power-3", "power-4", "power-5", "power-6", "power-7", "quadratic", "log-snr")
CUTOFFS = (1e-4, 3e-4, 1e-3, 2e-3, 5e-3)
#: The default run: the leaders of the full scan (SAMPLERS x GRIDS, recorded in cld_fewstep_scan.md), so that
#: a run fits a 2-core machine; pass --samplers/--grids/--cutoffs for the full scan.
DEFAULT_SAMPLERS = ("unipc-2", "unipc-3", "ei-ode-3")
DEFAULT_GRIDS = ("power-3", "power-5", "power-7")
BASELINE = ("unipc-3", "power-3", 1e-3)


class Bench:
    """The oracle, the data draws and the metrics of one run (float64, samples vectorised over seeds)."""

    def __init__(self, n: int, floor_draws: int, projections: int, reference_steps: int, mixture=None):
        self.mixture = diamond_mixture() if mixture is None else mixture
        self.d = self.mixture.dimension
        self.cld = CLD()
        self.oracle = DiffusedGaussianMixture(self.mixture, self.cld,
                                              initial_covariance=[[self.cld.gamma * self.cld.mass]])
        self.score = self.oracle.score_fn([1])
        self.reverse = ReverseSDE(self.cld, self.score, [1])
        self.snr = InformationLogSNR(self.cld)
        self.cld_lsnr = CLD()  # the same process with the information log-SNR as its log_snr
        self.cld_lsnr.log_snr = self.snr.log_snr
        self.reverse_lsnr = ReverseSDE(self.cld_lsnr, self.score, [1])
        self.n, self.projections, self.reference_steps = n, projections, reference_steps
        self.floor_draws = floor_draws
        pairs = [(self.data(FLOOR_SEEDS + i), self.data(FLOOR_SEEDS + 1000 + i)) for i in range(floor_draws)]
        self.floor_sw2 = [SlicedW2(b, projections)(a) for a, b in pairs]
        self.floor = mean_se(self.floor_sw2)
        self.data_nll = mean_se([(-self.mixture.log_prob(a)).mean().item() for a, _ in pairs])
        self._distance: dict[int, SlicedW2] = {}
        self._reference_nll: dict[int, float] = {}
        self._converged: dict[tuple, torch.Tensor] = {}
        self.optimised: dict[str, list[float]] = {}

    def data(self, seed: int) -> torch.Tensor:
        return self.mixture.sample(self.n, torch.Generator().manual_seed(seed), dtype=F64)

    def prior(self, seeds) -> torch.Tensor:
        return torch.cat([self.cld.prior_sample((self.n, self.d), torch.Generator().manual_seed(s), dtype=F64)
                          for s in seeds])

    def grid(self, kind: str, steps: int, eps: float, sampler: str = ""):
        if kind.startswith("power-"):
            return PowerGrid(steps, float(kind.split("-")[1]), eps)
        if kind == "quadratic":
            return QuadraticGrid(steps, eps)
        if kind == "log-snr":
            return LogSNRGrid(steps, self.snr, eps)
        if kind == "optimised":
            key = f"CLD {sampler} {steps}" + ("" if eps == 1e-3 else f" eps {eps:g}")
            grid = GivenGrid(self.optimised[key])
            if abs(grid.eps - eps) > 1e-9 * eps:
                raise ValueError(f"the optimised grid {key!r} ends at eps {grid.eps:g}, not {eps:g}")
            return grid
        raise ValueError(f"unknown grid {kind!r}")

    def step(self, sampler: str):
        if sampler.endswith("@lsnr"):
            name = sampler[:-5]
            order = int(name.rsplit("-", 1)[1])
            if name.startswith("unipc"):
                return UniPC(self.reverse_lsnr, order, "bh2", interpolation="log_snr")
            return ExponentialODE(self.reverse_lsnr, order=order, interpolation="log_snr")
        return sampler_step(sampler, self.reverse)

    def search(self, sampler: str, nfe: int, eps: float, batch: int = 500) -> str:
        """Calibrate a grid with :func:`splitdyn.grid_search.search_grid` (the accuracy benchmark's settings:
        calibration seed 1000, never an evaluation seed) and store it under its key."""
        key = f"CLD {sampler} {nfe}" + ("" if eps == 1e-3 else f" eps {eps:g}")
        if key not in self.optimised:
            result = search_grid(self.cld, self.score, self.step(sampler), nfe, event_shape=(self.d,), eps=eps,
                                 finish=partial(self.finish, eps=eps), seed=CALIBRATION_SEED, batch=batch,
                                 sweeps=2, evaluations_per_point=8)
            self.optimised[key] = result.grid.times.tolist()
        return key

    def finish(self, u: torch.Tensor, eps: float) -> torch.Tensor:
        return score_free_denoise(self.cld, u, eps)[:, 0]

    def run(self, sampler: str, grid: str, eps: float, nfe: int, seeds, u=None) -> torch.Tensor:
        """Samples ``(len(seeds) * n, d)`` of ``sampler`` at ``nfe`` evaluations (= steps)."""
        u = self.prior(seeds) if u is None else u
        g = self.grid(grid, nfe, eps, sampler)
        times = g.reverse_times(self.cld.T)
        noise = torch.Generator().manual_seed(NOISE_SEEDS + 97 * int(seeds[0]) + len(seeds))
        solution = integrate(self.step(sampler), u, times, generator=noise)
        if solution.nfe != nfe:
            raise RuntimeError(f"{sampler}: {solution.nfe} evaluations on {nfe} steps")
        return self.finish(solution.state, float(self.cld.T - times[-1]))

    def fine(self, u: torch.Tensor, t_from: float, eps: float, steps: int | None = None) -> torch.Tensor:
        """The converged ODE (ei-ode-3, power-3 steps in forward time from ``t_from`` to ``eps``) and the
        score-free map."""
        steps = self.reference_steps if steps is None else steps
        k = torch.arange(steps + 1, dtype=F64)
        t = (t_from ** (1 / 3) + k / steps * (eps ** (1 / 3) - t_from ** (1 / 3))) ** 3
        state = integrate(self.step("ei-ode-3"), u, self.cld.T - t).state
        return self.finish(state, eps)

    def converged(self, seeds, eps: float = 1e-3) -> torch.Tensor:
        key = (tuple(seeds), eps)
        if key not in self._converged:
            self._converged[key] = self.fine(self.prior(seeds), float(self.cld.T), eps)
        return self._converged[key]

    def metrics(self, x: torch.Tensor, seeds, eps_reference: float | None = 1e-3) -> dict:
        """Per-seed SW2 ratio and -log p gap, and (with ``eps_reference``) the RMS distance to the converged
        solution of the same prior draws."""
        out = {"sw2": [], "ratio": [], "nll_gap": []}
        for j, seed in enumerate(seeds):
            if seed not in self._distance:
                reference = self.data(REFERENCE_SEEDS + seed)
                self._distance[seed] = SlicedW2(reference, self.projections)
                self._reference_nll[seed] = (-self.mixture.log_prob(reference)).mean().item()
            xs = x[j * self.n: (j + 1) * self.n]
            sw2 = self._distance[seed](xs)
            out["sw2"].append(sw2)
            out["ratio"].append(sw2 / self.floor[0])
            out["nll_gap"].append((-self.mixture.log_prob(xs)).mean().item() - self._reference_nll[seed])
        if eps_reference is not None:
            out["rms"] = (x - self.converged(seeds, eps_reference)).square().sum(-1).mean().sqrt().item()
        return out

    def summary(self, per_seed: dict) -> dict:
        ratio, ratio_se = mean_se(per_seed["ratio"])
        ratio_se = math.hypot(ratio_se, ratio * self.floor[1] / self.floor[0])  # the floor's s.e. too
        gap, gap_se = mean_se(per_seed["nll_gap"])
        row = {"ratio": ratio, "ratio_se": ratio_se, "nll_gap": gap, "nll_gap_se": gap_se}
        if "rms" in per_seed:
            row["rms"] = per_seed["rms"]
        return row


def scan(bench: Bench, configs, budgets, seeds, rms: bool = True) -> list[dict]:
    rows = []
    for nfe in budgets:
        for sampler, grid, eps in configs:
            start = time.perf_counter()
            try:
                x = bench.run(sampler, grid, eps, nfe, seeds)
                if not bool(torch.isfinite(x).all()):
                    raise FloatingPointError("non-finite samples")
            except (RuntimeError, ValueError, FloatingPointError, KeyError) as error:
                print(f"  NFE {nfe:>2} {sampler:<18} {grid:<10} eps {eps:<7g} failed: {error}", flush=True)
                continue
            per_seed = bench.metrics(x, seeds, 1e-3 if rms else None)
            row = {"nfe": nfe, "sampler": sampler, "grid": grid, "eps": eps, "seeds": list(seeds),
                   **bench.summary(per_seed), "per_seed": per_seed}
            rows.append(row)
            print(f"  NFE {nfe:>2} {sampler:<18} {grid:<10} eps {eps:<7g} SW2/floor {row['ratio']:.2f} +- "
                  f"{row['ratio_se']:.2f}  gap {row['nll_gap']:+.3f}  rms {row.get('rms', math.nan):.4f}  "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
    return rows


def node_state(step, u: torch.Tensor, times: torch.Tensor, k: int) -> torch.Tensor:
    """The state the full run carries at node ``k``: after ``k`` steps, and for UniPC after the corrector
    that the evaluation at node ``k`` applies (so the corrector's work is not counted as an error of step
    ``k``)."""
    plan = step.plan(Intervals.from_grid(times), u)
    generator = torch.Generator().manual_seed(NOISE_SEEDS)
    for i in range(k):
        u = plan(u, i, generator)
    if k < len(times) - 1 and hasattr(plan, "corrected"):
        plan(u, k, generator)
        return plan.corrected
    return u


def decompose(bench: Bench, sampler: str, grid: str, eps: float, nfe: int, seeds, fine_steps: int) -> dict:
    """The error of one configuration by source (see the module docstring)."""
    T = float(bench.cld.T)
    u = bench.prior(seeds)
    converged = bench.converged(seeds, eps)
    out: dict = {"config": [sampler, grid, eps, nfe], "seeds": list(seeds)}
    # prior mismatch: the converged ODE from exact draws of p_T instead of the prior
    exact_T = torch.cat([bench.oracle.sample(bench.n, T, torch.Generator().manual_seed(9000 + s)) for s in seeds])
    from_exact = bench.fine(exact_T, T, eps)
    out["converged_from_prior"] = bench.summary(bench.metrics(converged, seeds, None))
    out["converged_from_exact_pT"] = bench.summary(bench.metrics(from_exact, seeds, None))
    phi_T, sigma_T = DiffusionGeometry(bench.cld, bench.cld.initial_covariance()).marginal(
        torch.tensor([T], dtype=F64))
    out["phi_T"], out["Sigma_T"] = phi_T[0].tolist(), sigma_T[0].tolist()
    # the cutoff: the converged ODE to a smaller cutoff
    out["converged_eps_1e-5"] = bench.summary(bench.metrics(bench.fine(u, T, 1e-5), seeds, None))
    # the error by step: k few-step steps, then the converged ODE
    times = bench.grid(grid, nfe, eps, sampler).reverse_times(T)
    step = bench.step(sampler)
    prefix = []
    for k in range(nfe + 1):
        if k == 0:
            x = converged
        else:
            state = node_state(step, u, times, k)
            t_k = T - float(times[k])
            x = bench.fine(state, t_k, eps, fine_steps) if k < nfe else bench.finish(state, eps)
        ms = (x - converged).square().sum(-1).mean().item()
        row = {"k": k, "t_k": T - float(times[k]), "ms": ms, **bench.summary(bench.metrics(x, seeds, None))}
        prefix.append(row)
        print(f"    first {k:>2} steps (to t {row['t_k']:.4g}): MS to converged {ms:.2e}, SW2/floor "
              f"{row['ratio']:.2f}, gap {row['nll_gap']:+.3f}", flush=True)
    out["prefix"] = prefix
    return out


def second_target(args, grids: dict) -> list[dict]:
    """The 64-D mixture of ``bench_accuracy.py`` (10,000 samples): does the cutoff chosen on the diamond hurt
    there? Each of ``--samplers-64d`` on the power-3 grid and on grids searched on the 64-D model at each
    cutoff."""
    mixture = random_mixture(64, 16, torch.Generator().manual_seed(0), std=0.1, scale=1.0)
    bench = Bench(args.samples_64d, args.floor_draws, args.projections, args.reference_steps, mixture)
    print(f"64-D: floor SW2 {bench.floor[0]:.4g} +- {bench.floor[1]:.2g}", flush=True)
    rows = []
    for nfe in args.nfe_64d:
        configs = [(sampler, "power-3", 1e-3) for sampler in args.samplers_64d]
        for sampler in args.samplers_64d:
            for eps in args.cutoffs_64d:
                key = bench.search(sampler, nfe, eps, batch=256)
                grids[f"64d {key}"] = bench.optimised[key]
                configs.append((sampler, "optimised", eps))
        for sampler, grid, eps in configs:
            x = bench.run(sampler, grid, eps, nfe, args.confirm_seeds[:3])
            row = {"problem": "mixture64d", "nfe": nfe, "sampler": sampler, "grid": grid, "eps": eps,
                   "seeds": args.confirm_seeds[:3], **bench.summary(bench.metrics(x, args.confirm_seeds[:3], None))}
            rows.append(row)
            print(f"  64-D NFE {nfe} {sampler} {grid} eps {eps:g}: SW2/floor {row['ratio']:.2f} +- "
                  f"{row['ratio_se']:.2f}, gap {row['nll_gap']:+.3f} +- {row['nll_gap_se']:.3f}", flush=True)
    return rows


def best(rows, nfe, key="ratio", exclude=()):
    candidates = [r for r in rows if r["nfe"] == nfe and (r["sampler"], r["grid"], r["eps"]) not in exclude]
    return min(candidates, key=lambda r: r[key]) if candidates else None


def main(argv=None) -> dict:
    """Run the benchmark (``--help``); float64 is the default dtype while it runs, restored afterwards."""
    default = torch.get_default_dtype()
    try:
        return _main(argv)
    finally:
        torch.set_default_dtype(default)  # an in-process caller (the smoke test) keeps its own default


def _main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small samples, few configurations")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10])
    parser.add_argument("--choose-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--confirm-seeds", type=int, nargs="+", default=list(range(3, 11)))
    parser.add_argument("--floor-draws", type=int, default=10)
    parser.add_argument("--projections", type=int, default=256)
    parser.add_argument("--reference-steps", type=int, default=200)
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS))
    parser.add_argument("--grids", nargs="+", default=list(DEFAULT_GRIDS))
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[3e-4, 1e-3, 2e-3, 5e-3],
                        help="cutoffs of the searched grids (power grids end at 1e-3)")
    parser.add_argument("--cutoff-samplers", nargs="+", default=["unipc-2"],
                        help="samplers whose grids are searched at every cutoff (others: the accuracy benchmark's)")
    parser.add_argument("--second-target", action="store_true", help="only the 64-D check of the cutoffs")
    parser.add_argument("--samples-64d", type=int, default=10000)
    parser.add_argument("--nfe-64d", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--samplers-64d", nargs="+", default=["unipc-2"])
    parser.add_argument("--cutoffs-64d", type=float, nargs="+", default=[1e-3, 2e-3])
    parser.add_argument("--merge", nargs="+", default=None, help="merge the JSON of tagged runs into cld_fewstep")
    parser.add_argument("--grids-from", default=str(RESULTS / "accuracy_mixture2d.json"),
                        help="optimised grids (h2's search_grid, calibrated on seed 1000) to evaluate too")
    parser.add_argument("--decompose", nargs="+", default=None, metavar="SAMPLER,GRID,EPS,NFE",
                        help="only decompose the error of these configurations (choice seeds)")
    parser.add_argument("--confirm-only", nargs="+", default=None, metavar="SAMPLER,GRID,EPS,NFE",
                        help="only confirm these configurations on --confirm-seeds (no RMS, no scan)")
    parser.add_argument("--searched", nargs="+", default=[],
                        help="grids searched by search_grid at other cutoffs (keys 'CLD <sampler> <nfe> eps <eps>')")
    parser.add_argument("--no-decompose", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.nfe, args.choose_seeds, args.confirm_seeds = 2000, [5], [0, 1], [3, 4]
        args.floor_draws, args.projections, args.reference_steps = 3, 64, 40
        args.samplers, args.grids, args.cutoffs = ["unipc-3", "ei-ode-3"], ["power-3", "power-5"], [1e-3]
    torch.set_default_dtype(F64)
    start = time.perf_counter()
    if args.merge:
        return merge(args)
    if args.second_target:
        grids: dict = {}
        rows = second_target(args, grids)
        payload = {"settings": vars(args), "second_target": rows, "grids": grids}
        write_results("cld_fewstep" + (args.tag or "_64d"), payload, report_64d(rows), Path(args.out) if args.out else None)
        return payload
    bench = Bench(args.samples, args.floor_draws, args.projections, args.reference_steps)
    print(f"floor SW2 {bench.floor[0]:.4g} +- {bench.floor[1]:.2g} ({args.floor_draws} pairs of {args.samples}); "
          f"data -log p {bench.data_nll[0]:.4f}", flush=True)
    grids_file = Path(args.grids_from) if args.grids_from else None
    grids = list(args.grids)
    if grids_file is not None and grids_file.exists() and not args.quick:
        bench.optimised.update(json.loads(grids_file.read_text()).get("optimised_grids", {}))
        grids.append("optimised")
    for searched in map(Path, args.searched):
        bench.optimised.update(json.loads(searched.read_text())["grids"])
    if args.decompose:
        parts = []
        for spec in args.decompose:
            sampler, grid, eps, nfe = spec.split(",")
            if grid == "optimised":
                bench.search(sampler, int(nfe), float(eps))
            print(f"  decompose {spec}", flush=True)
            parts.append(decompose(bench, sampler, grid, float(eps), int(nfe), args.choose_seeds,
                                   max(20, args.reference_steps // 5)))
        payload = {"settings": vars(args), "decomposition": parts}
        text = report({**payload, "scan": [], "confirm": [], "targets": [],
                       "floor": {"samples": args.samples, "draws": args.floor_draws, "sw2": bench.floor,
                                 "data_nll": bench.data_nll}}, args)
        write_results("cld_fewstep" + args.tag, payload, text, Path(args.out) if args.out else None)
        print(text)
        return payload
    if args.confirm_only:
        rows = []
        for spec in args.confirm_only:
            sampler, grid, eps, nfe = spec.split(",")
            if grid == "optimised":
                bench.search(sampler, int(nfe), float(eps))
            rows += scan(bench, [(sampler, grid, float(eps))], [int(nfe)], args.confirm_seeds, rms=False)
        payload = {"settings": vars(args), "floor": {"sw2": bench.floor, "sw2_draws": bench.floor_sw2,
                   "samples": args.samples, "draws": args.floor_draws, "data_nll": bench.data_nll},
                   "confirm_only": rows, "targets": targets(rows)}
        text = report({**payload, "scan": [], "confirm": rows, "decomposition": []}, args)
        write_results("cld_fewstep" + args.tag, payload, text, Path(args.out) if args.out else None)
        print(text)
        return payload
    configs = [(s, g, 1e-3) for s in args.samplers for g in args.grids]
    for sampler in args.samplers:
        for eps in args.cutoffs:
            if sampler in args.cutoff_samplers and not args.quick:
                for nfe in args.nfe:
                    bench.search(sampler, nfe, eps)
            key = f"CLD {sampler} {min(args.nfe)}" + ("" if eps == 1e-3 else f" eps {eps:g}")
            if key in bench.optimised:
                configs.append((sampler, "optimised", eps))
    if BASELINE not in configs and not args.quick:
        configs.append(BASELINE)
    print(f"scan: {len(configs)} configurations x NFE {args.nfe} on seeds {args.choose_seeds}", flush=True)
    rows = scan(bench, configs, args.nfe, args.choose_seeds)
    chosen = {}
    for nfe in args.nfe:
        picks = [best(rows, nfe, "ratio"), best(rows, nfe, "rms")]
        base = [r for r in rows if r["nfe"] == nfe and (r["sampler"], r["grid"], r["eps"]) == BASELINE]
        chosen[nfe] = [(r["sampler"], r["grid"], r["eps"]) for r in picks + base if r is not None]
        chosen[nfe] = list(dict.fromkeys(chosen[nfe]))
    print(f"confirm on seeds {args.confirm_seeds}: {chosen}", flush=True)
    confirmed = []
    for nfe, picks in chosen.items():
        confirmed += scan(bench, picks, [nfe], args.confirm_seeds)
    decomposition = []
    if not args.no_decompose:
        for nfe in sorted({min(args.nfe), max(args.nfe)}):
            r = best(confirmed, nfe, "ratio")
            if r is not None:
                print(f"  decompose {r['sampler']} {r['grid']} eps {r['eps']} NFE {nfe}", flush=True)
                decomposition.append(decompose(bench, r["sampler"], r["grid"], r["eps"], nfe, args.choose_seeds,
                                               max(20, args.reference_steps // 5)))
    payload = {"settings": {k: v for k, v in vars(args).items()},
               "floor": {"sw2": bench.floor, "sw2_draws": bench.floor_sw2, "samples": args.samples,
                         "draws": args.floor_draws, "data_nll": bench.data_nll},
               "scan": rows, "confirm": confirmed, "decomposition": decomposition,
               "grids": {k: v for k, v in bench.optimised.items() if " eps " in k},
               "seconds": time.perf_counter() - start}
    payload["targets"] = targets(confirmed)
    name = ("cld_fewstep_quick" if args.quick else "cld_fewstep") + args.tag
    write_results(name, payload, report(payload, args), Path(args.out) if args.out else None)
    print(report(payload, args))
    return payload


def report_64d(rows) -> str:
    body = [[r["nfe"], r["sampler"], r["grid"], f"{r['eps']:g}", f"{r['ratio']:.2f} ± {r['ratio_se']:.2f}",
             f"{r['nll_gap']:+.3f} ± {r['nll_gap_se']:.3f}", len(r["seeds"])] for r in rows]
    return ("64-D mixture (bench_accuracy.py's), grids searched on the 64-D model (calibration seed 1000):\n\n"
            + markdown_table(["NFE", "sampler", "grid", "eps", "SW2 / floor", "-log p gap (nats)", "seeds"], body))


def merge(args) -> dict:
    """Combine tagged runs (``--tag``: scans per NFE, ``--confirm-only``, ``--decompose``, ``--second-target``)
    into ``cld_fewstep.{json,md}``; each row keeps the ratio to its own run's floor."""
    out = Path(args.out) if args.out else RESULTS
    parts = {tag: json.loads((out / f"cld_fewstep{tag}.json").read_text()) for tag in args.merge}
    scans = [p for p in parts.values() if "scan" in p]
    confirm_parts = [p for p in parts.values() if "confirm_only" in p] or scans
    floor_part = max(confirm_parts, key=lambda p: p["floor"]["draws"])
    payload = {"settings": {**scans[0]["settings"], "nfe": sorted({n for p in scans for n in p["settings"]["nfe"]}),
                            "confirm_seeds": floor_part["settings"]["confirm_seeds"], "merged": list(args.merge)},
               "floor": floor_part["floor"], "floor_of_scan": scans[0]["floor"],
               "scan": [r for p in scans for r in p["scan"]],
               "confirm": [r for p in confirm_parts for r in p.get("confirm_only", p.get("confirm", []))],
               "first_confirmation": [r for p in scans for r in p["confirm"]],
               "decomposition": [d for p in parts.values() if p["settings"].get("decompose") for d in p["decomposition"]],
               "grids": {k: v for p in parts.values() for k, v in p.get("grids", {}).items()},
               "second_target": [r for p in parts.values() for r in p.get("second_target", [])]}
    payload["targets"] = targets(payload["confirm"])
    args = argparse.Namespace(**{**vars(args), **payload["settings"], "quick": False})
    text = report(payload, args)
    if payload["second_target"]:
        text += "\n" + report_64d(payload["second_target"]) + "\n"
    text += ("\nFirst confirmation (seeds 3-10, floor of 10 pairs; the configurations the scan chose):\n\n"
             + markdown_table(["NFE", "sampler", "grid", "eps", "SW2 / floor", "-log p gap (nats)"],
                              [[r["nfe"], r["sampler"], r["grid"], f"{r['eps']:g}",
                                f"{r['ratio']:.2f} ± {r['ratio_se']:.2f}", f"{r['nll_gap']:+.3f}"]
                               for r in payload["first_confirmation"]]) + "\n")
    write_results("cld_fewstep", payload, text, out)
    print(text)
    return payload


def targets(confirmed) -> list[str]:
    """The issue's CLD targets for the best confirmed configuration, and for the best at the default cutoff
    1e-3 (a cutoff chosen on one data set need not transfer: see the 64-D check)."""
    lines = []
    for nfe, limit, gap_limit in ((10, 1.2, 0.15), (5, 2.0, None)):
        picks = [best(confirmed, nfe, "ratio"), best([r for r in confirmed if r["eps"] == 1e-3], nfe, "ratio")]
        for r in dict.fromkeys(id(p) for p in picks if p is not None):
            r = next(p for p in picks if id(p) == r)
            text = (f"CLD at NFE {nfe}, SW2 <= {limit}x floor: **{verdict_at_most(r['ratio'], r['ratio_se'], limit)}** "
                    f"({r['sampler']}, {r['grid']}, eps {r['eps']:g}: {r['ratio']:.2f} +- {r['ratio_se']:.2f}, "
                    f"{len(r['seeds'])} fresh seeds)")
            if gap_limit is not None:
                gap = abs(r["nll_gap"])
                text += (f"; |-log p gap| <= {gap_limit}: **{verdict_at_most(gap, r['nll_gap_se'], gap_limit)}** "
                         f"({r['nll_gap']:+.3f} +- {r['nll_gap_se']:.3f})")
            lines.append(text)
    return lines


def report(payload, args) -> str:
    f = payload["floor"]
    command = " ".join(sys.argv[1:]) if __name__ == "__main__" else ("--quick" if args.quick else "")
    text = [f"Command: `python benchmarks/bench_cld_fewstep.py {command}`", "",
            f"Floor: SW2 between two fresh data draws of {f['samples']} samples, {f['draws']} pairs: "
            f"{f['sw2'][0]:.4g} +- {f['sw2'][1]:.2g}; data -log p {f['data_nll'][0]:.4f}.", ""]

    def table(rows, title):
        body = [[r["nfe"], r["sampler"], r["grid"], f"{r['eps']:g}", f"{r['ratio']:.2f} ± {r['ratio_se']:.2f}",
                 f"{r['nll_gap']:+.3f} ± {r['nll_gap_se']:.3f}", f"{r.get('rms', math.nan):.4f}", len(r["seeds"])] for r in rows]
        return [title, "", markdown_table(["NFE", "sampler", "grid", "eps", "SW2 / floor", "-log p gap (nats)",
                                           "RMS to converged", "seeds"], body), ""]

    text += table(payload["confirm"], f"Confirmed on fresh seeds {args.confirm_seeds}:")
    text += ["Targets (issue 21):", ""] + [f"- {t}" for t in payload["targets"]] + [""]
    for d in payload["decomposition"]:
        s, g, e, nfe = d["config"]
        text += [f"Decomposition of {s} ({g}, eps {e:g}) at NFE {nfe}, seeds {d['seeds']}:", "",
                 f"- converged ODE ({args.reference_steps} steps) from the prior: SW2/floor "
                 f"{d['converged_from_prior']['ratio']:.2f} ± {d['converged_from_prior']['ratio_se']:.2f}, gap "
                 f"{d['converged_from_prior']['nll_gap']:+.3f}; from exact p_T draws: "
                 f"{d['converged_from_exact_pT']['ratio']:.2f} ± {d['converged_from_exact_pT']['ratio_se']:.2f}, gap "
                 f"{d['converged_from_exact_pT']['nll_gap']:+.3f}; to eps 1e-5: "
                 f"{d['converged_eps_1e-5']['ratio']:.2f}, gap {d['converged_eps_1e-5']['nll_gap']:+.3f}", ""]
        body = [[p["k"], f"{p['t_k']:.4g}", f"{p['ms']:.2e}", f"{p['ratio']:.2f} ± {p['ratio_se']:.2f}",
                 f"{p['nll_gap']:+.3f}"] for p in d["prefix"]]
        text += [markdown_table(["first k steps few-step, rest converged", "t_k", "MS to converged",
                                 "SW2 / floor", "-log p gap"], body), ""]
    text += table(sorted(payload["scan"], key=lambda r: (r["nfe"], r["ratio"])),
                  f"Scan on the choice seeds {args.choose_seeds} (sorted by SW2 ratio):")
    return "\n".join(text)


if __name__ == "__main__":
    main()
