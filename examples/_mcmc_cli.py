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
