"""Shared command line and report of the three MCMC examples (``examples/mcmc_*.py``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from splitdyn.mcmc import GHMC, HMC, MALA, ULA, kinetic_langevin, run_chain, with_momentum

SAMPLERS = ("ULA", "MALA", "HMC", "GHMC", "BAOAB", "OBABO", "ABOBA")


def parser(description: str, steps: int, chains: int, step_size: float, samplers) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samplers", nargs="+", default=list(samplers), choices=SAMPLERS)
    p.add_argument("--steps", type=int, default=steps, help="iterations per chain (a fifth is burn-in)")
    p.add_argument("--chains", type=int, default=chains, help="independent chains run together")
    p.add_argument("--step-size", type=float, default=step_size, help="h (HMC: the leapfrog step)")
    p.add_argument("--leapfrog", type=int, default=10, help="leapfrog steps per HMC proposal")
    p.add_argument("--friction", type=float, default=1.0, help="gamma of the kinetic samplers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/mcmc", help="folder for the plots")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    return p


def make_step(name: str, potential, args):
    if name == "ULA":
        return ULA(potential)
    if name == "MALA":
        return MALA(potential)
    if name == "HMC":
        return HMC(potential, n_leapfrog=args.leapfrog)
    if name == "GHMC":
        return GHMC(potential, friction=args.friction)
    return kinetic_langevin(potential, name, friction=args.friction)


def run_all(potential, x0: torch.Tensor, args, step_sizes: dict | None = None) -> dict:
    """Run every requested sampler from positions ``x0`` ``(chains, *event)``; print a report line each."""
    if args.steps < 10 or args.chains < 1 or not args.step_size > 0:
        raise SystemExit("error: --steps must be at least 10, --chains at least 1 and --step-size positive")
    results = {}
    for name in args.samplers:
        h = (step_sizes or {}).get(name, args.step_size)
        g = torch.Generator().manual_seed(args.seed)
        kinetic = name in ("GHMC", "BAOAB", "OBABO", "ABOBA")
        u = with_momentum(x0, generator=g) if kinetic else x0.unsqueeze(1)
        start = time.perf_counter()
        out = run_chain(make_step(name, potential, args), u, args.steps, h, generator=g, burn_in=args.steps // 5)
        line = f"{name:>6} h={h:<7g} {time.perf_counter() - start:6.2f} s  nfe {out.nfe:>8}"
        if out.acceptance_rate is not None:
            line += f"  acceptance {out.acceptance_rate.mean().item():.3f}"
        try:
            summary = out.summary()
            line += f"  min ESS {summary['min_ess']:9.1f}  max R-hat {summary['max_rhat']:.3f}"
        except ImportError:
            line += "  (ESS / R-hat: pip install arviz-stats)"
        print(line, flush=True)
        results[name] = out
    return results


def output_folder(args) -> Path | None:
    if not args.plot:
        return None
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


TUNED = ("MALA", "HMC", "GHMC", "BAOAB", "OBABO")


def tuned_parser(description: str, steps: int, warmup_steps: int, chains: int, samplers) -> argparse.ArgumentParser:
    """The command line of the examples that warm up: no step size to choose."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samplers", nargs="+", default=list(samplers), choices=TUNED)
    p.add_argument("--warmup", type=int, default=warmup_steps, help="warm-up iterations (tuning, then discarded)")
    p.add_argument("--steps", type=int, default=steps, help="iterations per chain after warm-up")
    p.add_argument("--chains", type=int, default=chains, help="independent chains run together")
    p.add_argument("--leapfrog", type=int, default=10, help="mean leapfrog steps per HMC proposal (jittered)")
    p.add_argument("--friction", type=float, default=1.0, help="gamma of the kinetic samplers")
    p.add_argument("--mass-matrix", default="diagonal", choices=["diagonal", "dense", "none"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs/mcmc", help="folder for the plots")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    return p


def tuned_step_factory(name: str, potential, args):
    if name == "MALA":
        return MALA(potential)
    if name == "HMC":
        return HMC(potential, n_leapfrog=args.leapfrog)
    if name == "GHMC":
        return GHMC(potential, friction=args.friction)
    return kinetic_langevin(potential, name, friction=args.friction)


def warm_and_run(potential, x0: torch.Tensor, args, reference: dict | None = None, coordinates=(0,),
                 names: list | None = None) -> dict:
    """Warm up and run every requested sampler from positions ``x0``; print one report line each and, with a
    ``reference`` (``mean``, ``sd`` tensors), the largest |z| of the means and sds against it (Monte-Carlo
    standard errors from the ESS of x and of (x - mean)^2); write trace and rank plots."""
    import warnings

    from splitdyn.mcmc import MCMCWarning, effective_sample_size, plot_chains, plot_ranks, warmup

    if args.steps < 10 or args.warmup < 20 or args.chains < 1:
        raise SystemExit("error: --steps must be at least 10, --warmup at least 20 and --chains at least 1")
    folder = output_folder(args)
    results = {}
    mass = None if args.mass_matrix == "none" else args.mass_matrix
    for name in args.samplers:
        kinetic = name in ("GHMC", "BAOAB", "OBABO")
        g = torch.Generator().manual_seed(args.seed)
        u = with_momentum(x0, generator=g) if kinetic else x0.unsqueeze(1)
        start = time.perf_counter()
        tuned = warmup(tuned_step_factory(name, potential, args), u, args.warmup, mass_matrix=mass, generator=g)
        with warnings.catch_warnings(record=True):  # collected in the summary below
            warnings.simplefilter("always", MCMCWarning)
            out = run_chain(tuned.step, tuned.state, args.steps, tuned.step_size, generator=g)
            summary = out.summary()
        seconds = time.perf_counter() - start
        line = (f"{name:>6} h={tuned.step_size:<8.3g} {seconds:6.2f} s  warm-up nfe {tuned.nfe:>7}  nfe {out.nfe:>7}  "
                f"min ESS {summary['min_ess']:8.1f}  ESS/grad {summary['ess_per_gradient']:.4f}  "
                f"max R-hat {summary['max_rhat']:.3f}")
        if out.acceptance_rate is not None:
            line += f"  acceptance {out.acceptance_probability.mean().item():.3f}  divergences {summary['divergences']}"
        if reference is not None:
            s = out.samples.reshape(out.samples.shape[0], out.samples.shape[1], -1)
            m = s.mean((0, 1))
            sq = (s - m) ** 2
            z_mean = (m - reference["mean"]) / (s.std((0, 1)) / effective_sample_size(s).sqrt())
            z_var = (sq.mean((0, 1)) - reference["sd"] ** 2) / (sq.std((0, 1)) / effective_sample_size(sq).sqrt())
            summary["max_z_mean"], summary["max_z_var"] = z_mean.abs().max().item(), z_var.abs().max().item()
            line += f"  max |z| mean {summary['max_z_mean']:.2f} var {summary['max_z_var']:.2f}"
        print(line, flush=True)
        for message in summary["warnings"]:
            print(f"        warning: {message}")
        if folder is not None:
            stem = folder / f"{args.example}_{name}"
            label = [names[c] for c in coordinates] if names else None
            plot_chains(out.samples, coordinates=coordinates, path=f"{stem}_trace.png",
                        title=f"{args.example}, {name}" + (f" ({', '.join(label)})" if label else ""))
            plot_ranks(out.samples, coordinates=coordinates, path=f"{stem}_ranks.png", title=f"{args.example}, {name}")
        results[name] = {"tuned": tuned, "out": out, "summary": summary}
    return results
