"""Fig. 9a and App. C.1 of the CLD paper from analytic scores.

1. Score complexity (App. E.1, eq. 99-100), with M = gamma = 1 so CLD's equilibrium is N(0, I) like the VPSDE's:
   xi_VPSDE(t) = E ||grad_x log p_t(x) + x||^2 and xi_CLD(t) = E ||grad_v log p_t(v | x) + v||^2, i.e. how far
   the score to be learned is from the equilibrium (Normal) score. grad_v log p_t(v | x) = grad_v log p_t(u).
2. Gradient noise of HSM vs DSM (App. C.1, eq. 71-74): the Monte Carlo gradient of either loss with respect
   to the score output is K = s - target, with the target the velocity score of p_t(u_t | x0) (HSM) or of
   p_t(u_t | x0, v0) (DSM), for u_t drawn from the same law. With s the exact score, we report the trace of
   the covariance of K per t, scaled by lambda(t) = ell_HSM(t)^-2 (the default weighting).

Run ``python examples/toy_score_complexity.py --help``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from splitdyn import LinearBeta, PerturbationKernel
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD, ell
from splitdyn_cld.vpsde import vpsde


def score_complexity(times, samples, seed):
    mixture = diamond_mixture()
    cld = CLD(mass=1.0, friction=2.0, beta=4.0, gamma=1.0)
    vp = vpsde()
    cld_oracle = DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]])
    vp_oracle = DiffusedGaussianMixture(mixture, vp)
    rows = []
    for t in times:
        g = torch.Generator().manual_seed(seed)
        u = cld_oracle.sample(samples, t, g, dtype=torch.float64)
        xi_cld = ((cld_oracle.component_score(u, t, [1]) + u[:, 1:]) ** 2).sum((1, 2)).mean().item()
        x = vp_oracle.sample(samples, t, g, dtype=torch.float64)
        xi_vp = ((vp_oracle.score(x, t) + x) ** 2).sum((1, 2)).mean().item()
        rows.append({"t": t, "xi_cld": xi_cld, "xi_vpsde": xi_vp})
    return rows


def gradient_noise(times, samples, seed):
    mixture = diamond_mixture()
    cld = CLD()  # the paper's main setting: M = 0.25, gamma = 0.04
    oracle = DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]])
    rows = []
    for t in times:
        g = torch.Generator().manual_seed(seed)
        x0 = mixture.sample(samples, g, dtype=torch.float64)
        u0 = cld.sample_initial_velocity(x0, g)
        dsm = PerturbationKernel(cld, t, u0, eps_num=cld.eps_num)
        u_t, _ = dsm.sample(g)
        hsm = cld.perturbation_kernel(t, x0, kind="hsm")
        s = oracle.component_score(u_t, t, [1])
        k_hsm = (s - hsm.score(u_t, [1])).reshape(samples, -1)
        k_dsm = (s - dsm.score(u_t, [1])).reshape(samples, -1)
        weight = ell(cld, t).item() ** -2
        rows.append({"t": t, "hsm": weight * k_hsm.var(0).sum().item(), "dsm": weight * k_dsm.var(0).sum().item()})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--times", type=float, nargs="+", default=[1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/score_complexity")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    complexity = score_complexity(args.times, args.samples, args.seed)
    noise = gradient_noise(args.times, args.samples, args.seed)
    print(f"{'t':>8}{'xi_CLD':>12}{'xi_VPSDE':>12}{'HSM var':>12}{'DSM var':>12}")
    for c, n in zip(complexity, noise):
        print(f"{c['t']:>8.3g}{c['xi_cld']:>12.4g}{c['xi_vpsde']:>12.4g}{n['hsm']:>12.4g}{n['dsm']:>12.4g}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].semilogy([c["t"] for c in complexity], [c["xi_cld"] for c in complexity], "o-", label="CLD")
    axes[0].semilogy([c["t"] for c in complexity], [c["xi_vpsde"] for c in complexity], "o-", label="VPSDE")
    axes[0].set_xlabel("t")
    axes[0].set_title(r"$\xi(t)$: distance of the score from the Normal score")
    axes[0].legend()
    axes[1].semilogy([n["t"] for n in noise], [n["hsm"] for n in noise], "o-", label="HSM")
    axes[1].semilogy([n["t"] for n in noise], [n["dsm"] for n in noise], "o-", label="DSM")
    axes[1].set_xlabel("t")
    axes[1].set_title(r"gradient noise $\lambda(t)\,\mathrm{tr\,Cov}[K]$")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "score_complexity.png", dpi=110)
    plt.close(fig)
    result = {"score_complexity": complexity, "gradient_noise": noise, "samples": args.samples}
    (out / "score_complexity.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
