"""Few-step accuracy with exact Gaussian-mixture scores, measured so that a miss cannot hide (issue 21).

Problems: the paper's 2-D 9-mode mixture (``diamond_mixture``, 20,000 samples a run) and a 64-D 16-mode
mixture (``random_mixture``, 10,000 samples). Every sampler gets the exact score of the diffused mixture
(float64) and a budget of NFE score evaluations; every cell is repeated on >= 3 seeds (prior draw, noise and a
fresh reference data sample per seed).

Protocol
--------
- **Floor**: the sliced W2 between two independent fresh data draws of the run's size, from >= 5 independent
  pairs; reported with its spread. A perfect sampler scores the floor.
- **Cell**: per seed, SW2 of the samples to a fresh data draw of the same size (ratio to the floor mean),
  the -log p_data gap (mean -log p_data of the samples minus that of the seed's data draw, nats) and the
  mode-weight error; mean +- standard error over seeds (the ratio's s.e. includes the floor's).
- **Verdicts**: a target "x <= L" is **met** only when mean + 2 s.e. <= L, **missed** when mean - 2 s.e. > L,
  otherwise **not resolved at this sample size**. The -log p target bounds |gap|. "Ours at least as good as
  the best peer" compares paired per-seed differences d = ours - peer (same prior draws and reference):
  met when d + 2 s.e. <= 0 (better) or |d| <= 2 s.e. (tie within the standard error), missed otherwise.
  The best configuration of a family is chosen on the same seeds it is scored on (a small optimistic bias
  for the row that is picked; the ratios of all rows are in the tables).

Samplers (``NFE`` counts score evaluations)
-------------------------------------------
- CLD (M = 0.25, Gamma = 1, beta = 4, gamma = 0.04, eps = 1e-3): NFE steps on the grid, then the score-free
  data update of eq. 109, x_0 = x_eps - eps beta M^-1 v_eps. Ours: exponential integrators ``ei-ode-q``,
  ``ei-sde-2``, and the UniPC / DPM-Solver++ steps where the library has them, on the power-3, power-4,
  quadratic and log-SNR grids (the log-SNR of CLD is ``splitdyn.grids.InformationLogSNR``) and on an
  optimised grid; SSCS and EM on the quadratic grid (SSCS at NFE 50 is the reference line).
- VP (beta 0.1 -> 20, eps = 1e-3): NFE - 1 steps, then one Tweedie denoising evaluation x_0 = E[x_0 | x_eps].
- **Optimised grids** (``splitdyn.grid_search.search_grid``) are calibrated on prior draws of a separate seed
  (``CALIBRATION_SEED``, never an evaluation seed) against 256 power-3 steps of the same sampler, and then
  evaluated like every other grid on the evaluation seeds. They are written into the JSON for reuse.
- **Peers** (VP, diffusers): ``DPMSolverMultistepScheduler`` (DPM-Solver++, 2M and 3M, ``solver_type``
  midpoint and heun), ``UniPCMultistepScheduler`` (bh1 and bh2, orders 2 and 3, corrector on) and
  ``DEISMultistepScheduler`` (orders 2 and 3), each with its default ``lower_order_final=True``, on the
  power-3 grid (and the best-known ones also on the log-SNR grid). DEIS and UniPC bh1 cannot step to
  sigma = 0 (DEIS takes log sigma of the next node; bh1's B(h) = h is infinite there: NaN samples): they take
  NFE - 1 steps to eps and end with the Tweedie estimate there, like ours. The continuous VP is handed to a scheduler through its sigma table: after
  ``set_timesteps(NFE)`` its ``sigmas`` are replaced by sigma(t)/alpha(t) of our VP at the NFE grid nodes
  (T down to eps) followed by 0, so that its alpha_t = 1/sqrt(1 + sigma^2), sigma_t = sigma alpha_t are our
  alpha(t), sigma(t) and its last update returns its own x_0 prediction from the node at eps. The model it
  calls returns epsilon = -sigma(t) s(x, t) with our exact score at the node's continuous time t; the
  discrete ``timesteps`` only index the steps. Same NFE and the same nodes as ours.

Output: ``benchmarks/results/accuracy_<problem>.{json,md,png}`` (``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, SlicedW2, machine, markdown_table, mean_se, verdict_at_most, verdict_not_worse,  # noqa: E402
                     write_results)

from splitdyn import PowerGrid, QuadraticGrid, VPSDE, sample  # noqa: E402
from splitdyn.grid_search import search_grid  # noqa: E402
from splitdyn.grids import GivenGrid, InformationLogSNR, LogSNRGrid  # noqa: E402
from splitdyn.metrics import mode_weight_error  # noqa: E402
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture, random_mixture  # noqa: E402
from splitdyn.sample import SAMPLERS  # noqa: E402
from splitdyn.steps.exponential_weights import DiffusionGeometry  # noqa: E402
from splitdyn_cld import CLD  # noqa: E402

EPS = 1e-3
F64 = torch.float64
CALIBRATION_SEED = 1000  # the optimised grids' prior draws; evaluation seeds are small integers
FLOOR_SEEDS = 7000  # fresh data pairs of the floor: seeds 7000 + i and 8000 + i
REFERENCE_SEEDS = 5000  # the fresh data draw each evaluation seed is compared with


def problem(name: str):
    if name == "mixture2d":
        return diamond_mixture()
    return random_mixture(64, 16, torch.Generator().manual_seed(0), std=0.1, scale=1.0)


class Setup:
    """Processes, exact scores and the shared final steps of one problem."""

    def __init__(self, mixture):
        self.mixture = mixture
        self.d = mixture.dimension
        self.cld = CLD()
        self.cld_score = DiffusedGaussianMixture(mixture, self.cld, self.cld.initial_covariance()).score_fn([1])
        self.vp = VPSDE()
        self.vp_score = DiffusedGaussianMixture(mixture, self.vp).score_fn()
        D, E = DiffusionGeometry(self.vp).tweedie(torch.tensor(EPS, dtype=F64))
        self.vp_tweedie = (D.item(), E.item())
        self.cld_x_rate = EPS * self.cld.beta(EPS).item() / self.cld.mass
        self.cld_snr = InformationLogSNR(self.cld)
        self.grids: dict[str, list[float]] = {}  # optimised grids by "process sampler nfe"

    def cld_prior(self, n, seed):
        return self.cld.prior_sample((n, self.d), torch.Generator().manual_seed(seed), dtype=F64)

    def cld_x0(self, u):  # eq. 109: x_0 = x_eps - eps beta M^-1 v_eps, no score (the library's score-free map)
        from splitdyn import score_free_denoise

        return score_free_denoise(self.cld, u, EPS)[:, 0]

    def vp_x0(self, x):  # Tweedie at eps: one evaluation
        D, E = self.vp_tweedie
        return D * x[:, 0] + E * self.vp_score(x, EPS)[:, 0]

    def grid(self, process: str, kind: str, steps: int, sampler: str = ""):
        """The grid ``kind`` of ``steps`` steps (``optimised``: calibrated once, then cached)."""
        if kind.startswith("power-"):
            return PowerGrid(steps, float(kind.split("-")[1]), EPS)
        if kind == "quadratic":
            return QuadraticGrid(steps, EPS)
        if kind == "log-snr":
            return LogSNRGrid(steps, self.vp if process == "VP" else self.cld_snr, EPS)
        if kind == "optimised":
            key = f"{process} {sampler} {steps}"
            if key not in self.grids:
                self.grids[key] = self.optimise(process, sampler, steps)
            return GivenGrid(self.grids[key])
        raise ValueError(kind)

    calibration = {"batch": 500, "sweeps": 2, "evaluations_per_point": 8}

    def optimise(self, process: str, sampler: str, steps: int) -> list[float]:
        start = time.perf_counter()
        if process == "CLD":
            result = search_grid(self.cld, self.cld_score, sampler, steps, event_shape=(self.d,), eps=EPS,
                                 finish=self.cld_x0, seed=CALIBRATION_SEED, **self.calibration)
        else:
            result = search_grid(self.vp, self.vp_score, sampler, steps, event_shape=(self.d,), eps=EPS,
                                 finish=self.vp_x0, seed=CALIBRATION_SEED, **self.calibration)
        print(f"  optimised grid {process} {sampler} {steps} steps: D {result.history[0]:.3g} ({result.start}) -> "
              f"{result.discrepancy:.3g} in {result.evaluations} runs, {time.perf_counter() - start:.0f} s", flush=True)
        return result.grid.times.tolist()


class Config(NamedTuple):
    """One named sampler configuration: ``run(setup, n, nfe, seed) -> (samples (n, d), nfe used)``."""

    label: str
    family: str  # "ours" or "peer"
    process: str  # "CLD" or "VP"
    run: Callable
    budgets: list[int]
    sampler: str = ""
    grid: str = ""


def ours(process: str, sampler: str, grid: str, evaluations_per_step: int = 1):
    def run(setup: Setup, n: int, nfe: int, seed: int):
        noise = torch.Generator().manual_seed(seed + 1000)
        if process == "CLD":
            g = setup.grid("CLD", grid, max(1, nfe // evaluations_per_step), sampler)
            sol = sample(setup.cld, setup.cld_score, setup.cld_prior(n, seed), g, step=sampler, denoise=False,
                         generator=noise)
            return setup.cld_x0(sol.state), sol.nfe
        g = setup.grid("VP", grid, nfe - 1, sampler)
        x = torch.randn(n, 1, setup.d, generator=torch.Generator().manual_seed(seed), dtype=F64)
        sol = sample(setup.vp, setup.vp_score, x, g, step=sampler, denoise=False, generator=noise)
        return setup.vp_x0(sol.state), sol.nfe + 1
    return run


def diffusers_scheduler(kind: str, order: int, variant: str):
    import diffusers

    if kind == "dpmpp":
        return diffusers.DPMSolverMultistepScheduler(solver_order=order, algorithm_type="dpmsolver++",
                                                     solver_type=variant)
    if kind == "unipc":
        return diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=variant)
    return diffusers.DEISMultistepScheduler(solver_order=order)


def peer(kind: str, order: int, variant: str, grid: str):
    """A diffusers multistep scheduler driven by our continuous VP (see the module docstring)."""
    def run(setup: Setup, n: int, nfe: int, seed: int):
        vp = setup.vp
        t = vp.T - setup.grid("VP", grid, nfe - 1).reverse_times(vp.T)  # nfe nodes from T down to eps
        alpha, sigma = vp.alpha(t), vp.sigma(t)
        scheduler = diffusers_scheduler(kind, order, variant)
        # DEIS's updates take log(sigma) of the next node, and UniPC bh1's B(h) = h is infinite at sigma = 0 (NaN
        # samples): those two take nfe - 1 steps to eps and end with the Tweedie estimate there (one evaluation)
        at_eps = kind == "deis" or (kind == "unipc" and variant == "bh1")
        steps = nfe - 1 if at_eps else nfe
        scheduler.set_timesteps(steps)
        if len(scheduler.timesteps) != steps:
            raise RuntimeError(f"{kind}: {len(scheduler.timesteps)} timesteps for {steps} steps")
        end = [] if at_eps else [torch.zeros(1, dtype=F64)]  # sigma 0: its own x0 prediction at eps
        scheduler.sigmas = torch.cat([sigma / alpha] + end)
        x = torch.randn(n, setup.d, generator=torch.Generator().manual_seed(seed), dtype=F64)
        for i, timestep in enumerate(scheduler.timesteps):
            noise = -sigma[i] * setup.vp_score(x.to(F64)[:, None], float(t[i]))[:, 0]  # epsilon prediction
            x = scheduler.step(noise, timestep, x).prev_sample
        if at_eps:
            return setup.vp_x0(x.to(F64)[:, None]), nfe
        return x.to(F64), nfe
    return run


#: (sampler, grids, budgets): the grids each sampler runs on ("optimised" calibrates one) and at which NFE
#: ("all": every NFE of the run; "low": the NFE of the targets, <= 10). The list is trimmed to what a 2-core run
#: can afford; the quadratic grid is kept for SSCS and EM (their paper's grid).
CLD_SAMPLERS = [
    ("ei-ode-3", ("power-3", "power-4", "optimised"), "all"),
    ("unipc-3", ("power-4", "optimised"), "all"),
    ("unipc-2", ("optimised",), "low"),
    ("ei-sde-2", ("power-4",), "low"),
]
VP_SAMPLERS = [
    ("ei-ode-3", ("power-3", "log-snr", "optimised"), "all"),
    ("unipc-3-bh1", ("power-3", "optimised"), "low"),
    ("unipc-2-bh1", ("power-3",), "low"),
    ("dpmpp-2m-midpoint", ("log-snr",), "low"),
    ("dpmpp-2m-heun", ("log-snr",), "low"),
    ("dpmpp-3m", ("log-snr",), "low"),
]
PEERS = [("dpmpp", 2, "midpoint", "DPM-Solver++ 2M midpoint"), ("dpmpp", 2, "heun", "DPM-Solver++ 2M heun"),
         ("dpmpp", 3, "midpoint", "DPM-Solver++ 3M"),
         ("unipc", 2, "bh1", "UniPC-2 bh1"), ("unipc", 3, "bh1", "UniPC-3 bh1"),
         ("unipc", 2, "bh2", "UniPC-2 bh2"), ("unipc", 3, "bh2", "UniPC-3 bh2"),
         ("deis", 2, "logrho", "DEIS-2"), ("deis", 3, "logrho", "DEIS-3")]
#: peers also run on the log-SNR grid (all run on power-3, the better grid for every peer in earlier runs)
PEERS_ON_LOG_SNR = ("DPM-Solver++ 2M midpoint", "UniPC-3 bh1", "UniPC-2 bh1")
GRIDS = ("power-3", "power-4", "quadratic", "log-snr", "optimised")


def configs(args) -> list[Config]:
    """Every configuration of the run (samplers missing from this version of the library are left out)."""
    nfe = args.nfe
    low = [n for n in nfe if n <= 10] or nfe
    out: list[Config] = []
    for process, table in (("CLD", CLD_SAMPLERS), ("VP", VP_SAMPLERS)):
        if process not in args.processes:
            continue
        for sampler, grids, budgets in table:
            if sampler not in SAMPLERS or sampler not in args.samplers:
                continue
            for grid in grids:
                if grid not in args.grids:
                    continue
                out.append(Config(f"{process} {sampler} ({grid})", "ours", process, ours(process, sampler, grid),
                                  nfe if budgets == "all" else low, sampler, grid))
    if "sscs" in args.samplers and "CLD" in args.processes:
        out.append(Config("CLD SSCS (quadratic)", "ours", "CLD", ours("CLD", "sscs", "quadratic"),
                          sorted({n for n in nfe if n >= 10} | {50}), "sscs", "quadratic"))
    if "em" in args.samplers and "CLD" in args.processes:
        out.append(Config("CLD EM (quadratic)", "ours", "CLD", ours("CLD", "em", "quadratic"),
                          [n for n in nfe if n >= 10], "em", "quadratic"))
    if args.no_peers or "VP" not in args.processes:
        return out
    if importlib.util.find_spec("diffusers") is None:
        print("diffusers is not installed (pip install splitdyn[bench]): the peers are left out", flush=True)
        return out
    for kind, order, variant, name in PEERS:
        if args.peers is not None and name not in args.peers:
            continue
        for grid in ("power-3", "log-snr") if name in PEERS_ON_LOG_SNR else ("power-3",):
            out.append(Config(f"VP diffusers {name} ({grid})", "peer", "VP", peer(kind, order, variant, grid),
                              low, name, grid))
    return out


def selected(args) -> list[Config]:
    """The configurations of the run, restricted to ``--methods`` when given."""
    chosen = configs(args)
    if args.methods:
        unknown = set(args.methods) - {c.label for c in chosen}
        if unknown:
            raise SystemExit(f"--methods: unknown configurations {sorted(unknown)}")
        chosen = [c for c in chosen if c.label in args.methods]
    return chosen


def run_problem(name: str, args):
    setup = Setup(problem(name))
    if args.grids_from:  # optimised grids of an earlier run (same calibration): no new search
        setup.grids.update(json.loads(Path(args.grids_from).read_text()).get("optimised_grids", {}))
    if args.quick:
        setup.calibration = {"batch": 128, "sweeps": 1, "evaluations_per_point": 4, "reference_steps": 64}
    mixture = setup.mixture
    n = args.samples if name == "mixture2d" else args.samples_64d
    if name == "mixture64d":
        args = argparse.Namespace(**{**vars(args), "nfe": args.nfe_64d})

    def data(seed):
        return mixture.sample(n, torch.Generator().manual_seed(seed), dtype=F64)

    pairs = [(data(FLOOR_SEEDS + i), data(FLOOR_SEEDS + 1000 + i)) for i in range(args.floor_draws)]
    floor_sw2 = [SlicedW2(b, args.projections)(a) for a, b in pairs]
    floor_mode = [mode_weight_error(a, mixture) for a, _ in pairs]
    floor_nll = [(-mixture.log_prob(a)).mean().item() for a, _ in pairs]
    floor = {"sw2": mean_se(floor_sw2), "sw2_draws": floor_sw2, "mode_weight_error": mean_se(floor_mode),
             "nll": mean_se(floor_nll), "samples": n, "draws": args.floor_draws}
    f_mean, f_se = floor["sw2"]
    print(f"{name}: floor SW2 {f_mean:.4g} +- {f_se:.2g} (sd {statistics.stdev(floor_sw2):.2g}, "
          f"{args.floor_draws} pairs of {n}); data -log p {floor['nll'][0]:.4f}", flush=True)
    references = {seed: data(REFERENCE_SEEDS + seed) for seed in args.seeds}
    distance = {seed: SlicedW2(r, args.projections) for seed, r in references.items()}
    reference_nll = {seed: (-mixture.log_prob(r)).mean().item() for seed, r in references.items()}
    rows = []
    for config in selected(args):
        for budget in config.budgets:
            per_seed, start = [], time.perf_counter()
            try:
                for seed in args.seeds:
                    x, used = config.run(setup, n, budget, seed)
                    if not bool(torch.isfinite(x).all()):
                        raise FloatingPointError("non-finite samples")
                    per_seed.append({"seed": seed, "nfe": used,
                                     "sw2": distance[seed](x),
                                     "nll_gap": (-mixture.log_prob(x)).mean().item() - reference_nll[seed],
                                     "mode_weight_error": mode_weight_error(x, mixture)})
            except (RuntimeError, ValueError, FloatingPointError) as error:
                print(f"{name:>10} {config.label:<44} NFE {budget:>3}  failed: {error}", flush=True)
                rows.append({"problem": name, "method": config.label, "family": config.family,
                             "process": config.process, "sampler": config.sampler, "grid": config.grid,
                             "budget": budget, "nfe": budget, "error": str(error)})
                continue
            seconds = (time.perf_counter() - start) / len(per_seed)
            ratios = [r["sw2"] / f_mean for r in per_seed]
            ratio, ratio_se = mean_se(ratios)
            ratio_se = math.hypot(ratio_se, ratio * f_se / f_mean)  # the floor's own uncertainty
            row = {"problem": name, "method": config.label, "family": config.family, "process": config.process,
                   "sampler": config.sampler, "grid": config.grid, "budget": budget,
                   "nfe": max(r["nfe"] for r in per_seed),
                   "sw2": mean_se([r["sw2"] for r in per_seed])[0], "ratio": ratio, "ratio_se": ratio_se,
                   "nll_gap": mean_se([r["nll_gap"] for r in per_seed])[0],
                   "nll_gap_se": mean_se([r["nll_gap"] for r in per_seed])[1],
                   "mode_weight_error": mean_se([r["mode_weight_error"] for r in per_seed])[0],
                   "mode_weight_error_se": mean_se([r["mode_weight_error"] for r in per_seed])[1],
                   "seconds": seconds, "per_seed": per_seed}
            rows.append(row)
            print(f"{name:>10} {config.label:<44} NFE {row['nfe']:>3}  SW2/floor {ratio:5.2f} +- {ratio_se:.2f}  "
                  f"-log p gap {row['nll_gap']:+.3f} +- {row['nll_gap_se']:.3f}  mode err "
                  f"{row['mode_weight_error']:.3f}  ({seconds:.1f} s/run)", flush=True)
    return rows, floor, setup.grids


def best(rows, process, family, nfe):
    cells = [r for r in rows if r["process"] == process and r["family"] == family and r["nfe"] == nfe
             and "error" not in r and not r["method"].startswith("CLD EM")]
    return min(cells, key=lambda r: r["ratio"]) if cells else None


def paired(a, b, key):
    """Mean and s.e. of the per-seed differences a - b of ``key`` (|.| for the -log p gap)."""
    f = (lambda v: abs(v)) if key == "nll_gap" else (lambda v: v)  # noqa: E731
    by_seed = {r["seed"]: r for r in b["per_seed"]}
    return mean_se([f(r[key]) - f(by_seed[r["seed"]][key]) for r in a["per_seed"] if r["seed"] in by_seed])


def error_budget(setup: "Setup", process: str, sampler: str, grid: str, nfe: int, n: int = 2000,
                 refine: int = 8) -> str:
    """Where the pathwise error of a configuration comes from: the RMS distance of its samples to the converged
    solution of the same sampler (256 power-3 steps, same prior draws), and how much of its mean square is
    removed by refining one step alone (``refine`` sub-steps, more NFE). Deterministic samplers only. On a grid
    whose steps' errors cancel (an optimised one) refining one step can raise the error: a negative share."""
    steps = nfe if process == "CLD" else nfe - 1
    times = setup.grid(process, grid, steps, sampler).reverse_times(1.0)
    proc, score = (setup.cld, setup.cld_score) if process == "CLD" else (setup.vp, setup.vp_score)
    finish = setup.cld_x0 if process == "CLD" else setup.vp_x0
    initial = proc.prior_sample((n, setup.d), torch.Generator().manual_seed(4242), dtype=F64)

    def out(tau):
        return finish(sample(proc, score, initial, tau, step=sampler, denoise=False).state)

    reference = out(PowerGrid(256, 3.0, EPS).reverse_times(1.0))
    total = ((out(times) - reference) ** 2).sum(-1).mean().item()
    shares = []
    for i in range(steps):
        fine = torch.cat([times[:i], torch.linspace(times[i].item(), times[i + 1].item(), refine + 1, dtype=F64),
                          times[i + 2:]])
        shares.append(1.0 - ((out(fine) - reference) ** 2).sum(-1).mean().item() / total)
    order = sorted(range(steps), key=lambda i: -shares[i])[:3]
    t = 1.0 - times
    parts = ", ".join(f"step {i + 1} (t {t[i].item():.3g} -> {t[i + 1].item():.3g}) {100 * shares[i]:.0f}%"
                      for i in order)
    return (f"error budget of {process} {sampler} ({grid}) at NFE {nfe}: RMS distance to the converged solution "
            f"{math.sqrt(total):.3g}; refining one step alone removes of its mean square: {parts}")


def targets(rows, floor, name, setup=None) -> list[str]:
    """Issue 21's targets on this problem, each with its verdict and the numbers behind it (and, with
    ``setup``, the error budget of the best configuration where a target is not met)."""
    out = []
    limits = {"mixture2d": [("CLD", 10, 1.2, 0.15), ("CLD", 5, 2.0, None)],
              "mixture64d": [("CLD", 10, 1.3, None), ("VP", 10, 1.2, None)]}[name]
    for process, nfe, limit, gap_limit in limits:
        b = best(rows, process, "ours", nfe)
        if b is None:
            continue
        verdict = verdict_at_most(b["ratio"], b["ratio_se"], limit)
        text = (f"{process} at NFE {nfe}: SW2 <= {limit}x the floor: **{verdict}** (best: {b['method']}, "
                f"{b['ratio']:.2f} +- {b['ratio_se']:.2f}x")
        if verdict.startswith("not resolved"):
            seeds = len(b["per_seed"])
            need = seeds * (2 * b["ratio_se"] / max(abs(limit - b["ratio"]), 1e-3)) ** 2
            text += (f"; {b['ratio'] / limit:.2f}x the limit; the s.e. is the seed-to-seed noise of SW2 at this "
                     f"sample size: resolving it would take about {need:.0f} seeds")
        if verdict == "missed":
            text += f"; {b['ratio'] / limit:.2f}x the limit"
            if setup is not None and b["sampler"] not in ("ei-sde-2", "sscs", "em"):
                try:
                    text += "; " + error_budget(setup, process, b["sampler"], b["grid"], nfe)
                except (RuntimeError, ValueError, KeyError) as error:
                    text += f"; error budget failed: {error}"
        text += ")"
        if gap_limit is not None:
            g = verdict_at_most(abs(b["nll_gap"]), b["nll_gap_se"], gap_limit)
            gb = min((r for r in rows if r["process"] == process and r["family"] == "ours" and r["nfe"] == nfe
                      and "error" not in r), key=lambda r: abs(r["nll_gap"]))
            text += (f"; |-log p gap| <= {gap_limit} nats: **{g}** ({b['nll_gap']:+.3f} +- {b['nll_gap_se']:.3f}; "
                     f"smallest gap of any configuration: {gb['method']} {gb['nll_gap']:+.3f} +- "
                     f"{gb['nll_gap_se']:.3f})")
        out.append(text)
    if name == "mixture2d":
        for nfe in (5, 8, 10):
            a, b = best(rows, "VP", "ours", nfe), best(rows, "VP", "peer", nfe)
            if a is None or b is None:
                continue
            parts = []
            for key, unit in (("ratio", "x floor"), ("nll_gap", "nats |gap|")):
                d, se = paired(a, b, "sw2" if key == "ratio" else key)
                if key == "ratio":
                    d, se = d / floor["sw2"][0], se / floor["sw2"][0]
                parts.append((verdict_not_worse(d, se), f"{key} difference {d:+.3f} +- {se:.3f} {unit}"))
            verdict = ("met" if all(v.startswith("met") for v, _ in parts)
                       else "missed" if any(v == "missed" for v, _ in parts) else "not resolved at this sample size")
            out.append(f"VP at NFE {nfe}: ours at least as good as the best peer: **{verdict}** (ours {a['method']} "
                       f"{a['ratio']:.2f} +- {a['ratio_se']:.2f}x, gap {a['nll_gap']:+.3f}; peer {b['method']} "
                       f"{b['ratio']:.2f} +- {b['ratio_se']:.2f}x, gap {b['nll_gap']:+.3f}; "
                       + "; ".join(f"{t}: {v}" for v, t in parts) + ")")
    return out


def guidance_rows(rows, nfes) -> list[dict]:
    """The best configuration of ours per process and NFE, with the runner-up (for the guidance table)."""
    out = []
    for process in ("CLD", "VP"):
        for nfe in nfes:
            cells = sorted((r for r in rows if r["process"] == process and r["family"] == "ours" and r["nfe"] == nfe
                            and "error" not in r), key=lambda r: r["ratio"])
            if cells:
                top = cells[0]
                out.append({"process": process, "nfe": nfe, "sampler": top["sampler"], "grid": top["grid"],
                            "ratio": top["ratio"], "ratio_se": top["ratio_se"], "nll_gap": top["nll_gap"],
                            "runner_up": cells[1]["method"] if len(cells) > 1 else "",
                            "runner_up_ratio": cells[1]["ratio"] if len(cells) > 1 else None})
    return out


def plot(rows, floor, name, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, process in zip(axes, ("CLD", "VP")):
        labels = list(dict.fromkeys(r["method"] for r in rows if r["process"] == process and "error" not in r))
        # the best few configurations only, else the plot is unreadable: rank by mean ratio over budgets
        score = {m: statistics.mean(r["ratio"] for r in rows if r["method"] == m and "error" not in r) for m in labels}
        keep = sorted(labels, key=score.get)[:8] + [m for m in labels if "SSCS" in m and m not in sorted(labels, key=score.get)[:8]]
        for method in keep:
            pts = sorted((r["nfe"], r["ratio"], r["ratio_se"]) for r in rows if r["method"] == method and "error" not in r)
            family = next(r["family"] for r in rows if r["method"] == method)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[2 * p[2] for p in pts],
                        fmt="o-" if family == "ours" else "s--", ms=3, capsize=2, label=method)
        ax.axhline(1.0, color="gray", ls=":", lw=1.5, label="floor (fresh data)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (score evaluations)")
        ax.set_title(f"{name}: {process} (error bars: 2 s.e.)")
        ax.legend(fontsize=6)
    axes[0].set_ylabel("SW2 / floor (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_problem(name: str, args, argv) -> None:
    """Run one problem and write its tables, JSON and plot."""
    out = Path(args.out or RESULTS)
    stem = f"accuracy_{name}" + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    if args.combine:  # the parts of one run made by parallel processes (--part), same floor and seeds
        parts = [json.loads(p.read_text()) for p in sorted(out.glob(f"{stem}.part-*.json"))]
        if not parts:
            raise SystemExit(f"--combine: no {stem}.part-*.json in {out}")
        floor = parts[0]["floor"]
        if any(p["floor"] != floor or p["seeds"] != parts[0]["seeds"] for p in parts):
            raise SystemExit("--combine: the parts have other floors or seeds")
        rows = list({(r["method"], r["budget"]): r for p in parts for r in p["results"]}.values())  # later parts win
        grids = {k: v for p in parts for k, v in p["optimised_grids"].items()}
        argv = [word for p in parts for word in ["+"] + p["argv"]][1:]
        args.seeds = parts[0]["seeds"]
    else:
        rows, floor, grids = run_problem(name, args)
        if args.part:
            (out / f"{stem}.part-{args.part}.json").write_text(json.dumps(
                {"floor": floor, "seeds": args.seeds, "results": rows, "optimised_grids": grids,
                 "argv": sys.argv[1:] if argv is None else list(argv)}))
            return
    ok = [r for r in rows if "error" not in r]
    labels = list(dict.fromkeys(r["method"] for r in rows))
    budgets = sorted({r["nfe"] for r in ok})
    pivot = []
    for label in labels:
        cells = {r["nfe"]: r for r in ok if r["method"] == label}
        pivot.append([label] + [f"{cells[b]['ratio']:.2f} ± {cells[b]['ratio_se']:.2f}" if b in cells else ""
                                for b in budgets])
    table = markdown_table(["SW2 / floor (mean ± s.e., seeds)"] + [f"NFE {b}" for b in budgets], pivot)
    gaps = []
    for label in labels:
        cells = {r["nfe"]: r for r in ok if r["method"] == label}
        gaps.append([label] + [f"{cells[b]['nll_gap']:+.3f} ± {cells[b]['nll_gap_se']:.3f}" if b in cells else ""
                               for b in budgets])
    gap_table = markdown_table(["-log p_data gap, nats (mean ± s.e.)"] + [f"NFE {b}" for b in budgets], gaps)
    setup = Setup(problem(name))
    setup.grids.update(grids)
    checks = targets(rows, floor, name, setup)
    detail = markdown_table(["method", "NFE", "SW2", "SW2/floor", "± s.e.", "-log p gap", "± s.e.", "mode err",
                             "± s.e.", "s/run"],
                            [[r["method"], r["nfe"], r["sw2"], r["ratio"], r["ratio_se"], r["nll_gap"],
                              r["nll_gap_se"], r["mode_weight_error"], r["mode_weight_error_se"], r["seconds"]]
                             for r in ok])
    failed = [f"- {r['method']} at NFE {r['budget']}: {r['error']}" for r in rows if "error" in r]
    f_mean, f_se = floor["sw2"]
    floor_text = (f"Floor: SW2 between two independent fresh data draws of {floor['samples']} samples, "
                  f"{floor['draws']} pairs: {f_mean:.4g} ± {f_se:.2g} (s.e.; draws "
                  f"{', '.join(f'{v:.4g}' for v in floor['sw2_draws'])}); data -log p {floor['nll'][0]:.4f}, "
                  f"mode-weight error of a data draw {floor['mode_weight_error'][0]:.4f}. Seeds: "
                  f"{', '.join(map(str, args.seeds))}; optimised grids calibrated on seed {CALIBRATION_SEED}.")
    cmd = f"Command: `python benchmarks/bench_accuracy.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
    rule = ("Verdicts: met only when mean + 2 s.e. is inside the target; missed when mean - 2 s.e. is outside; "
            "otherwise not resolved at this sample size.")
    text = "\n".join([cmd, "", table, "", floor_text, "", rule, "", "Targets (issue 21):", "",
                      *[f"- {c}" for c in checks], "", gap_table, "", "All metrics:", "", detail]
                     + (["", "Failed cells:", "", *failed] if failed else []))
    print(text)
    settings = {**{k: v for k, v in vars(args).items() if k != "out"},
                "argv": sys.argv[1:] if argv is None else list(argv)}
    write_results(stem, {"issue": 21, "settings": settings, "floor": floor, "targets": checks,
                         "guidance": guidance_rows(ok, budgets), "optimised_grids": grids, "results": rows},
                  text, out)
    plot(ok, floor, name, out / f"{stem}.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=["mixture2d", "mixture64d"], choices=["mixture2d", "mixture64d"])
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 8, 10, 20])
    parser.add_argument("--nfe-64d", type=int, nargs="+", default=[5, 10, 20], help="NFE budgets of the 64-D problem")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--floor-draws", type=int, default=20, help="independent fresh-data pairs of the floor (>= 5)")
    parser.add_argument("--samples", type=int, default=20_000, help="samples of the 2-D problem")
    parser.add_argument("--samples-64d", type=int, default=10_000, help="samples of the 64-D problem")
    parser.add_argument("--samplers", nargs="+",
                        default=list(dict.fromkeys([s for s, _, _ in CLD_SAMPLERS + VP_SAMPLERS] + ["sscs", "em"])))
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--peers", nargs="*", default=None, help="peer configurations by name (default all)")
    parser.add_argument("--part", help="write this run's rows to <stem>.part-PART.json only (parallel processes; "
                        "then --combine)")
    parser.add_argument("--combine", action="store_true", help="merge the <stem>.part-*.json files of each problem "
                        "and write the results (runs nothing)")
    parser.add_argument("--processes", nargs="+", default=["CLD", "VP"], choices=["CLD", "VP"],
                        help="which processes' samplers (and peers, for VP) run")
    parser.add_argument("--projections", type=int, default=128, help="random directions of the sliced W2")
    parser.add_argument("--tag", help="suffix of the result files (accuracy_<problem>_<tag>), e.g. a focused run")
    parser.add_argument("--grids-from", help="a results JSON whose optimised grids to reuse (no new search)")
    parser.add_argument("--methods", nargs="+", help="run only these configurations (labels as in the tables)")
    parser.add_argument("--no-peers", action="store_true", help="skip diffusers")
    parser.add_argument("--quick", action="store_true",
                        help="2-D problem, NFE 5 and 10, 2,000 samples, 2 seeds, a few samplers (make bench, tests)")
    parser.add_argument("--out", default=None)
    given = sys.argv[1:] if argv is None else list(argv)
    if "--quick" in given:  # quick defaults; options given on the command line still win
        parser.set_defaults(problems=["mixture2d"], nfe=[5, 10], samples=2000, seeds=[1, 2], floor_draws=5,
                            samplers=["ei-ode-3", "sscs"], grids=["power-3", "optimised"],
                            peers=["DPM-Solver++ 2M midpoint"])
    args = parser.parse_args(argv)
    if len(args.seeds) < 2 or args.floor_draws < 2:
        parser.error("standard errors need at least 2 seeds and 2 floor draws")
    print(f"machine: {machine()}")
    for name in args.problems:
        report_problem(name, args, argv)


if __name__ == "__main__":
    main()
