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

3. **After warm-up** (``--adapted``; 4 and 1000 chains): our :func:`~splitdyn.mcmc.warmup` (dual averaging,
   diagonal mass matrix from pooled windowed variances, jittered HMC; energy-error tuning for BAOAB) then a
   run, against blackjax's ``window_adaptation`` (per chain, ``vmap``) with HMC of the same mean number of
   leapfrog steps and with NUTS: bulk and tail ESS (arviz-stats, the same estimator for both) per gradient
   counted over all chains, warm-up cost in gradients, acceptance and, for the Gaussian, the largest relative
   variance error (Monte-Carlo error included). blackjax has no warm-up for MALA; ours is listed alone.
   Results in ``benchmarks/results/mcmc_adapted_cpu.{json,md}``.
4. **Reference posteriors** (``--make-reference``): long blackjax NUTS runs of the breast-cancer logistic
   regression and eight-schools models of ``examples/``, written as means and standard deviations to
   ``benchmarks/results/mcmc_reference_*.json`` (read by the examples and ``tests/test_mcmc_reference.py``).

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
                           jax_posterior, torch_target)

from splitdyn import splitting  # noqa: E402
from splitdyn.mcmc import (HMC, MALA, ULA, Potential, effective_sample_size, kinetic_langevin,  # noqa: E402
                           langevin_parts, run_chain, warmup)

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


def bulk_tail_ess(samples) -> tuple[float, float]:
    """Minimum over coordinates of the bulk and the tail ESS (arviz-stats, the same estimator for both libraries)."""
    from arviz_stats.base import array_stats

    x = samples.detach().to("cpu", torch.float64)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 1, 0).numpy()
    bulk = array_stats.ess(x, chain_axis=-2, draw_axis=-1, method="bulk")
    tail = array_stats.ess(x, chain_axis=-2, draw_axis=-1, method="tail", prob=(0.05, 0.95))
    return float(bulk.min()), float(tail.min())


def adapted_row(library, name, chains, sampler, samples, gradients, warmup_gradients, seconds, rate, bias=None):
    bulk, tail = bulk_tail_ess(samples)
    row = {"library": library, "target": name, "chains": chains, "sampler": sampler, "bulk_ess": bulk,
           "tail_ess": tail, "bulk_ess_per_gradient": bulk / gradients, "tail_ess_per_gradient": tail / gradients,
           "warmup_gradients": warmup_gradients, "gradients": gradients, "seconds": seconds, "acceptance": rate,
           "variance_bias": bias}
    print(f"{name:>14} {chains:>5} chains {library:>9} {sampler:>14}: bulk ESS/grad {bulk / gradients:.2e} tail "
          f"{tail / gradients:.2e}  warm-up {warmup_gradients:>9} grads  acceptance "
          f"{rate if rate is None else round(rate, 3)}" + ("" if bias is None else f"  variance bias {bias:.3f}"),
          flush=True)
    return row


def ours_adapted(name, chains, warmup_steps, steps):
    """Our warm-up (dual averaging / energy tuner, diagonal mass matrix) then a run: MALA, HMC with a fixed and
    with a jittered number of leapfrog steps (the same mean), BAOAB."""
    s = SETTINGS[name]
    energy, grad = torch_target(name, DTYPE)
    U = Potential(energy, grad)
    x = initial(name, chains, seed=4)
    rows = []
    L = s["leapfrog"]
    for sampler, step, u in (("MALA", MALA(U), x[:, None]), (f"HMC (L={L})", HMC(U, L, jitter=0.0), x[:, None]),
                             (f"HMC (L={L}, jittered)", HMC(U, L), x[:, None]),
                             ("BAOAB", kinetic_langevin(U, "BAOAB"), torch.stack((x, torch.zeros_like(x)), 1))):
        g = torch.Generator().manual_seed(5)
        t0 = time.perf_counter()
        tuned = warmup(step, u, warmup_steps, generator=g)
        out = run_chain(tuned.step, tuned.state, steps, tuned.step_size, generator=g)
        seconds = time.perf_counter() - t0
        bias = None
        if name == "gaussian_100d":
            from _mcmc_targets import STDS_100D

            bias = float((out.samples.to(torch.float64).reshape(-1, 100).var(0) / STDS_100D**2 - 1).abs().max())
        rate = None if out.acceptance_probability is None else float(out.acceptance_probability.mean())
        rows.append(adapted_row("splitdyn", name, chains, sampler, out.samples, out.nfe * chains, tuned.nfe * chains,
                                seconds, rate, bias))
    return rows


def blackjax_adapted(name, chains, warmup_steps, steps):
    """blackjax's window_adaptation (per chain, vmapped) then HMC with the same mean L, and NUTS."""
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpy as np

    s = SETTINGS[name]
    logdensity = jax_logdensity(name)
    x = jnp.asarray(initial(name, chains, seed=4).numpy())
    rows = []
    for sampler, algorithm, extra in ((f"HMC (L={s['leapfrog']})", blackjax.hmc, {"num_integration_steps": s["leapfrog"]}),
                                      ("NUTS", blackjax.nuts, {})):
        t0 = time.perf_counter()

        def adapt(key, x0, algorithm=algorithm, extra=extra):
            adaptation = blackjax.window_adaptation(algorithm, logdensity, **extra)
            (state, parameters), info = adaptation.run(key, x0, num_steps=warmup_steps)
            return state, parameters, info.info.num_integration_steps.sum()

        keys = jax.random.split(jax.random.PRNGKey(5), chains)
        states, parameters, warm_grads = jax.jit(jax.vmap(adapt))(keys, x)

        def run_one(key, state, parameters, algorithm=algorithm, extra=extra):
            kernel = algorithm(logdensity, **{**extra, **parameters}).step

            def one(state, k):
                state, info = kernel(k, state)
                return state, (state.position, info.acceptance_rate, info.num_integration_steps)

            return jax.lax.scan(one, state, jax.random.split(key, steps))[1]

        positions, acceptance, grads = jax.jit(jax.vmap(run_one))(jax.random.split(jax.random.PRNGKey(6), chains), states,
                                                                    parameters)
        positions.block_until_ready()
        seconds = time.perf_counter() - t0
        samples = torch.as_tensor(np.array(positions)).transpose(0, 1)  # (draws, chains, dim)
        bias = None
        if name == "gaussian_100d":
            from _mcmc_targets import STDS_100D

            bias = float((samples.to(torch.float64).reshape(-1, 100).var(0) / STDS_100D**2 - 1).abs().max())
        rows.append(adapted_row("blackjax", name, chains, sampler, samples, int(np.asarray(grads).sum()),
                                int(np.asarray(warm_grads).sum()), seconds, float(np.asarray(acceptance).mean()), bias))
    return rows


def make_reference(name: str, chains: int = 8, warmup_steps: int = 2000, draws: int = 25_000, seed: int = 0,
                   out: str | None = None) -> dict:
    """A long NUTS run with blackjax's window adaptation (float64), saved as the means and standard deviations
    of every coordinate in ``benchmarks/results/mcmc_reference_<name>.json`` with the settings and ESS."""
    import json

    import blackjax
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    logdensity, dim = jax_posterior(name)
    key = jax.random.PRNGKey(seed)
    positions = []
    t0 = time.perf_counter()
    for _ in range(chains):
        key, k_init, k_warm, k_run = jax.random.split(key, 4)
        x0 = 0.1 * jax.random.normal(k_init, (dim,), dtype=jnp.float64)
        adaptation = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, parameters), _ = adaptation.run(k_warm, x0, num_steps=warmup_steps)
        kernel = blackjax.nuts(logdensity, **parameters).step

        def one(state, k, kernel=kernel):
            state, _ = kernel(k, state)
            return state, state.position

        _, chain_positions = jax.lax.scan(jax.jit(one), state, jax.random.split(k_run, draws))
        positions.append(np.asarray(chain_positions))
    samples = torch.as_tensor(np.stack(positions, 1))  # (draws, chains, dim)
    ess = effective_sample_size(samples)
    result = {"target": name, "mean": samples.mean((0, 1)).tolist(), "sd": samples.std((0, 1)).tolist(),
              "min_ess": float(ess.min()), "mcse_mean_max": float((samples.std((0, 1)) / ess.sqrt()).max()),
              "sampler": "blackjax NUTS, window_adaptation, float64",
              "settings": {"chains": chains, "warmup": warmup_steps, "draws": draws, "seed": seed,
                           "blackjax": blackjax.__version__, "jax": jax.__version__},
              "seconds": time.perf_counter() - t0, "machine": machine(),
              "command": "python benchmarks/bench_mcmc.py --make-reference"}
    path = Path(out or RESULTS) / f"mcmc_reference_{name}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"{name}: min ESS {result['min_ess']:.0f}, max MCSE of the means {result['mcse_mean_max']:.2e} -> {path}")
    return result


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
    parser.add_argument("--adapted", action="store_true",
                        help="only the adapted comparison: our warm-up + MALA/HMC/BAOAB against blackjax's "
                             "window_adaptation + HMC/NUTS, ESS (bulk and tail) per gradient and warm-up cost")
    parser.add_argument("--adapted-chains", type=int, nargs="+", default=[4, 1000])
    parser.add_argument("--adapted-steps", type=int, nargs=2, default=[1000, 1000], metavar=("WARMUP", "DRAWS"))
    parser.add_argument("--make-reference", action="store_true",
                        help="only write the reference posteriors of breast_cancer and eight_schools (long NUTS runs "
                             "with blackjax) to benchmarks/results/mcmc_reference_*.json")
    args = parser.parse_args(argv)
    if args.make_reference:
        return {name: make_reference(name, out=args.out) for name in ("eight_schools", "breast_cancer")}
    if args.adapted:
        return adapted_main(args)
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


def adapted_main(args) -> dict:
    torch.set_num_threads(1)
    if args.quick:
        args.adapted_steps, args.adapted_chains = [300, 200], [4]
    print(f"machine: {machine()}")
    try:
        import blackjax  # noqa: F401
        have_blackjax, why = True, ""
    except ImportError as exc:
        have_blackjax, why = False, f"blackjax unavailable ({exc}); install the 'bench' extra"
        print(why)
    warm, draws = args.adapted_steps
    rows = []
    for name in args.targets:
        for chains in args.adapted_chains:
            n = draws if chains * SETTINGS[name]["dim"] * draws <= 2e7 else max(100, int(2e7 // (chains * SETTINGS[name]["dim"])))
            rows += ours_adapted(name, chains, warm, n)
            if have_blackjax:
                rows += blackjax_adapted(name, chains, warm, n)
    table = markdown_table(["target", "chains", "library", "sampler", "bulk ESS/grad", "tail ESS/grad",
                            "warm-up grads", "acceptance", "variance bias", "seconds"],
                           [[r["target"], r["chains"], r["library"], r["sampler"], r["bulk_ess_per_gradient"],
                             r["tail_ess_per_gradient"], r["warmup_gradients"],
                             "-" if r["acceptance"] is None else r["acceptance"],
                             "-" if r["variance_bias"] is None else r["variance_bias"], r["seconds"]] for r in rows])
    name = "mcmc_adapted_cpu" + ("_quick" if args.quick else "")
    command = "python benchmarks/bench_mcmc.py --adapted" + (" --quick" if args.quick else "")
    markdown = (f"Command: `{command}` (torch and XLA on one thread each, float32; warm-up {warm} iterations, then "
                f"up to {draws} draws per chain; ESS per gradient counts every chain's gradients)\n\n{table}\n"
                + (f"\n{why}\n" if why else ""))
    write_results(name, {"settings": {"warmup": warm, "draws": draws, "chains": args.adapted_chains,
                                      "targets": args.targets}, "rows": rows}, markdown, args.out)
    print(table)
    return {"adapted": rows}


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
