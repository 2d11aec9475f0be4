"""MCMC: per-step cost against an expert's hand-written torch loop, and ESS against blackjax.

Three targets (1-D double well, 2-D banana, 100-D Gaussian with standard deviations 0.1 .. 1), 1 and 1000
chains, CPU, float32, one thread for torch and for XLA alike.

1. **Per-step cost** (1 and 1000 chains): median seconds per step of ``splitdyn.mcmc`` (ULA, MALA, HMC with 10 leapfrog steps,
   BAOAB as :class:`~splitdyn.mcmc.KineticLangevin` and as the generic composition of the parts) against
   the hand loops of ``benchmarks/_mcmc_targets.py`` (same math, same closed-form gradients), timed in
   interleaved rounds; the figure is the ratio ours / hand (target: at most 1.2).
2. **ESS** (1, 1000 and, for the 1-D and 2-D targets, 10000 chains): bulk effective sample size (arviz-stats, minimum over coordinates) per gradient evaluation and
   per second, for our MALA and HMC against blackjax's ``mala`` and ``hmc`` with the same step sizes and
   leapfrog steps (blackjax jit-compiled, ``vmap`` over chains, ``lax.scan`` over steps; its compile time is
   reported apart). Our BAOAB is listed too (it has no blackjax counterpart here).

Needs the optional extras ``mcmc`` (arviz-stats) and ``bench`` (blackjax, jax[cpu]); without blackjax the ESS
part runs ours only and says so. Run ``python benchmarks/bench_mcmc.py --help``. Results go to
``benchmarks/results/mcmc_cpu.{json,md,png}`` (``mcmc_cpu_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, markdown_table, write_results  # noqa: E402
from _mcmc_targets import (SETTINGS, hand_baoab, hand_hmc, hand_mala, hand_ula, jax_logdensity,  # noqa: E402
                           torch_target)

from splitdyn import splitting  # noqa: E402
from splitdyn.mcmc import (HMC, MALA, ULA, Potential, effective_sample_size, kinetic_langevin,  # noqa: E402
                           langevin_parts, run_chain)

DTYPE = torch.float32


def initial(name, chains, seed=0):
    s = SETTINGS[name]
    return s["init"] * torch.randn(chains, s["dim"], generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def cost_rows(name, chains, steps, rounds):
    s = SETTINGS[name]
    energy, grad = torch_target(name, DTYPE)
    U = Potential(energy, grad)
    x = initial(name, chains)
    u1 = x[:, None]
    u2 = torch.stack((x, torch.zeros_like(x)), 1)
    g = torch.Generator().manual_seed(1)
    L = s["leapfrog"]
    pairs = {
        "ULA": (lambda: run_chain(ULA(U), u1, steps, s["ula"], generator=g, keep=False),
                lambda: hand_ula(grad, x, steps, s["ula"], g)),
        "MALA": (lambda: run_chain(MALA(U), u1, steps, s["mala"], generator=g, keep=False),
                 lambda: hand_mala(energy, grad, x, steps, s["mala"], g)),
        f"HMC (L={L})": (lambda: run_chain(HMC(U, L, jitter=0.0), u1, steps, s["hmc"], generator=g, keep=False),
                         lambda: hand_hmc(energy, grad, x, steps, s["hmc"], L, g)),
        "BAOAB": (lambda: run_chain(kinetic_langevin(U, "BAOAB"), u2, steps, s["baoab"], generator=g, keep=False),
                  lambda: hand_baoab(grad, x, torch.zeros_like(x), steps, s["baoab"], g)),
        "BAOAB (generic composition)": (
            lambda: run_chain(splitting("BAOAB", langevin_parts(U)), u2, steps, s["baoab"], generator=g, keep=False),
            lambda: hand_baoab(grad, x, torch.zeros_like(x), steps, s["baoab"], g)),
    }
    rows = []
    for sampler, (ours, hand) in pairs.items():
        ours(), hand()  # warm up
        times = []
        for _ in range(rounds):  # interleaved: a drifting machine affects both alike
            t0 = time.perf_counter()
            ours()
            t1 = time.perf_counter()
            hand()
            t2 = time.perf_counter()
            times.append(((t1 - t0) / steps, (t2 - t1) / steps))
        t_ours = statistics.median(a for a, _ in times)
        t_hand = statistics.median(b for _, b in times)
        ratio = statistics.median(a / b for a, b in times)
        rows.append({"target": name, "chains": chains, "sampler": sampler, "ours_us_per_step": t_ours * 1e6,
                     "hand_us_per_step": t_hand * 1e6, "ours_over_hand": ratio})
        print(f"{name:>14} {chains:>5} chains {sampler:>28}: ours {t_ours * 1e6:8.1f} us  hand {t_hand * 1e6:8.1f} us"
              f"  ratio {ratio:5.2f}", flush=True)
    return rows


def ess_min(samples) -> float:
    return float(effective_sample_size(samples).min())


def ours_ess(name, chains, steps, burn_in, thin):
    s = SETTINGS[name]
    energy, grad = torch_target(name, DTYPE)
    U = Potential(energy, grad)
    x = initial(name, chains, seed=2)
    L = s["leapfrog"]
    runs = {"MALA": (MALA(U), x[:, None], s["mala"], 1), f"HMC (L={L})": (HMC(U, L, jitter=0.0), x[:, None], s["hmc"], L),
            "BAOAB": (kinetic_langevin(U, "BAOAB"), torch.stack((x, torch.zeros_like(x)), 1), s["baoab"], 1)}
    rows = []
    for sampler, (step, u, h, grads) in runs.items():
        out = run_chain(step, u, steps, h, generator=torch.Generator().manual_seed(3), burn_in=burn_in, thin=thin)
        ess = ess_min(out.samples)
        rate = None if out.acceptance_rate is None else float(out.acceptance_rate.mean())
        rows.append(ess_row("splitdyn", name, chains, sampler, ess, chains * (steps - burn_in) * grads, out.seconds,
                            rate, 0.0))
    return rows


def blackjax_ess(name, chains, steps, burn_in, thin):
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpy as np

    s = SETTINGS[name]
    logdensity = jax_logdensity(name)
    x = jnp.asarray(initial(name, chains, seed=2).numpy())
    L = s["leapfrog"]
    algorithms = {"MALA": (blackjax.mala(logdensity, s["mala"]), 1),
                  f"HMC (L={L})": (blackjax.hmc(logdensity, s["hmc"], jnp.ones(s["dim"]), L), L)}
    rows = []
    for sampler, (alg, grads) in algorithms.items():
        def one(state, key, alg=alg):
            state, info = jax.vmap(alg.step)(jax.random.split(key, chains), state)
            return state, info.is_accepted

        def block(state, key):  # thin steps, keep the last position
            state, accepted = jax.lax.scan(one, state, jax.random.split(key, thin))
            return state, (state.position, accepted.mean())

        run = jax.jit(lambda state, keys: jax.lax.scan(block, state, keys))
        state = jax.vmap(alg.init)(x)
        keys = jax.random.split(jax.random.PRNGKey(3), steps // thin)
        t0 = time.perf_counter()
        compiled = run.lower(state, keys).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, (positions, accepted) = compiled(state, keys)
        positions.block_until_ready()
        seconds = time.perf_counter() - t0
        kept = torch.as_tensor(np.array(positions))[burn_in // thin:]
        rows.append(ess_row("blackjax", name, chains, sampler, ess_min(kept), chains * (steps - burn_in) * grads,
                            seconds, float(np.asarray(accepted)[burn_in // thin:].mean()), compile_s))
    return rows


def ess_row(library, name, chains, sampler, ess, gradients, seconds, rate, compile_s):
    row = {"library": library, "target": name, "chains": chains, "sampler": sampler, "min_ess": ess,
           "ess_per_gradient": ess / gradients, "ess_per_second": ess / seconds, "seconds": seconds,
           "acceptance": rate, "compile_s": compile_s}
    print(f"{name:>14} {chains:>5} chains {library:>9} {sampler:>11}: min ESS {ess:10.1f}  ESS/grad {ess / gradients:.2e}"
          f"  ESS/s {ess / seconds:10.1f}  ({seconds:.2f} s, acceptance {rate if rate is None else round(rate, 3)})",
          flush=True)
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 1000], help="chain counts of the cost part")
    parser.add_argument("--ess-chains", type=int, nargs="+", default=[1, 1000, 10000],
                        help="chain counts of the ESS part (above 1000 only for targets of dimension <= 10: the "
                             "kept draws of 10^4 chains of the 100-D target would need gigabytes)")
    parser.add_argument("--cost-steps", type=int, default=1000,
                        help="steps per timed run (ours includes its one-off planning, amortised over them)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--ess-steps", type=int, nargs=2, default=[4000, 1000], metavar=("ONE_CHAIN", "MANY_CHAINS"),
                        help="chain length for 1 chain and for many chains (a fifth is burn-in)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds (smoke run)")
    parser.add_argument("--no-plot", dest="plot", action="store_false")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cost_steps, args.rounds, args.ess_steps, args.ess_chains = 50, 3, [800, 200], [1, 1000]
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    cost = [r for name in args.targets for c in args.chains for r in cost_rows(name, c, args.cost_steps, args.rounds)]
    try:
        import blackjax  # noqa: F401
        have_blackjax, why = True, ""
    except ImportError as exc:
        have_blackjax, why = False, f"blackjax unavailable ({exc}); install the 'bench' extra"
        print(why)
    ess = []
    for name in args.targets:
        for c in args.ess_chains:
            if c > 1000 and SETTINGS[name]["dim"] > 10:
                continue
            steps = args.ess_steps[0] if c == 1 else args.ess_steps[1]
            burn_in, thin = steps // 5, 1 if c == 1 else 2
            ess += ours_ess(name, c, steps, burn_in, thin)
            if have_blackjax:
                ess += blackjax_ess(name, c, steps, burn_in, thin)
    cost_table = markdown_table(["target", "chains", "sampler", "ours us/step", "hand us/step", "ours/hand"],
                                [[r["target"], r["chains"], r["sampler"], r["ours_us_per_step"], r["hand_us_per_step"],
                                  r["ours_over_hand"]] for r in cost])
    ess_table = markdown_table(["target", "chains", "library", "sampler", "min ESS", "ESS/grad", "ESS/s", "seconds",
                                "acceptance", "compile s"],
                               [[r["target"], r["chains"], r["library"], r["sampler"], r["min_ess"], r["ess_per_gradient"],
                                 r["ess_per_second"], r["seconds"], r["acceptance"] if r["acceptance"] is not None else "-",
                                 r["compile_s"]] for r in ess])
    name = "mcmc_cpu" + ("_quick" if args.quick else "")
    command = f"python benchmarks/bench_mcmc.py {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
    markdown = (f"Command: `{command}` (torch and XLA on one thread each)\n\n## Per-step cost against the hand loop\n\n"
                f"{cost_table}\n\n## ESS (bulk, minimum over coordinates)\n\n{ess_table}\n" + (f"\n{why}\n" if why else ""))
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    write_results(name, {"settings": settings, "step_settings": SETTINGS, "cost": cost, "ess": ess,
                         "blackjax": have_blackjax or why}, markdown, args.out)
    if args.plot:
        plot(cost, ess, Path(args.out or RESULTS) / f"{name}.png")
    print(cost_table)
    print(ess_table)
    return {"cost": cost, "ess": ess}


def plot(cost, ess, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 7))
    labels = [f"{r['target']} {r['chains']}ch {r['sampler'].replace('generic composition', 'generic')}" for r in cost]
    left.barh(range(len(cost)), [r["ours_over_hand"] for r in cost], color="tab:blue")
    left.axvline(1.2, color="k", ls="--", lw=1, label="target 1.2")
    left.set_yticks(range(len(cost)), labels, fontsize=7)
    left.set_xlabel("seconds per step: splitdyn / hand loop")
    left.legend()
    groups = sorted({(r["target"], r["chains"], r["sampler"]) for r in ess if r["sampler"] != "BAOAB"})
    for k, lib in enumerate(["splitdyn", "blackjax"]):
        values = [next((r["ess_per_second"] for r in ess if (r["target"], r["chains"], r["sampler"]) == grp
                        and r["library"] == lib), 0.0) for grp in groups]
        right.barh([i + 0.4 * k for i in range(len(groups))], values, height=0.4, label=lib)
    right.set_yticks([i + 0.2 for i in range(len(groups))], [f"{t} {c}ch {s}" for t, c, s in groups], fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("min ESS per second")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
