r"""Fig. 9a (App. E.1) and App. C.1 of the CLD paper on the 9-mode mixture, from exact scores.

1. Score complexity (App. E.1, eq. 99-100). With M = gamma = 1 (Gamma = 2, critical; beta = 4) CLD's
   equilibrium is N(0, I) for x and v, the same as the VPSDE's (beta(t) = 0.1 + 19.9 t), and

       xi_VPSDE(t) = E_{x_t ~ p_t} || grad_x log p_t(x_t) + x_t ||^2,
       xi_CLD(t)   = E_{u_t ~ p_t} || grad_v log p_t(v_t | x_t) + v_t ||^2,

   the squared L2 distance of the score each model learns from the Normal score (grad_v log p_t(v | x) =
   grad_v log p_t(x, v)). The paper reports xi_CLD < xi_VPSDE for all t, strikingly so for small t. Here the
   ordering holds by orders of magnitude for t <= 0.2 (at t = 0 the CLD conditional score is exactly the
   Normal one); for t >= 0.4 both are below 0.1 and it flips: with M = 1 (beta = 4) CLD's slowest mode decays
   like (1 + 4t) e^{-4t}, slower than the VPSDE's e^{-int beta / 2} (int_0^1 beta = 10.05). We also
   report an exact-score analogue of Fig. 9b: the squared Frobenius norm of the Jacobian (autograd) of the
   residual score, J_CLD(t) = E ||d(grad_v log p_t + v)/du||_F^2 and J_VPSDE(t) = E ||d(grad_x log p_t + x)/dx||_F^2.

2. Gradient noise of HSM vs DSM (App. C.1, eq. 71-74, Fig. 7), CLD with M = 0.25 and gamma = 0.04 and 1.
   u_t is drawn from p_t(u_t | x0, v0) with v0 ~ N(0, gamma M I) (so marginally from p_t(u_t | x0) too); the
   gradient of either Monte Carlo loss with respect to the score output is K = s(u_t, t) - target, with the
   target the velocity score of p_t(u_t | x0) (HSM) or of p_t(u_t | x0, v0) (DSM). We report
       - tr Cov[K] with s the exact score (as in Fig. 7: no lambda(t) weighting), and
       - tr Cov of the per-sample parameter gradient lambda(t) grad_theta ||s_theta(u_t, t) - target||^2 of a
         fixed small network (the toy ResNet in the mixed score; lambda = ell_t^-2, the default weighting),
         a random one (seeded) or a trained one (--network cld.pt from examples/toy_train.py).

Outputs in --out: score_complexity.png, score_complexity.json; the tables are printed.

Examples
--------
python examples/toy_score_complexity.py --out outputs/score_complexity
python examples/toy_score_complexity.py --network outputs/demo/cld.pt --out outputs/score_complexity_trained
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD, ell
from splitdyn_cld.checkpoints import CheckpointError
from splitdyn_cld.cli import ScriptParser, nonnegative_int, positive_int, user_errors
from splitdyn_cld.score import MixedScore
from splitdyn_cld.toy_models import cld_toy_score, load_toy_model
from splitdyn import VPSDE

DEFAULT_TIMES = [1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]


def complexity_processes():
    """CLD with M = gamma = 1 (critical Gamma = 2, beta = 4) and the VPSDE, both with equilibrium N(0, I)."""
    return CLD(mass=1.0, friction=2.0, beta=4.0, gamma=1.0), VPSDE()


def _jacobian_frobenius(fn, u: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Frobenius norm of the Jacobian of ``fn: (B, *in) -> (B, m)`` (samples independent)."""
    u = u.detach().requires_grad_(True)
    out = fn(u).reshape(u.shape[0], -1)
    total = torch.zeros(u.shape[0], dtype=u.dtype)
    for i in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, i].sum(), u, retain_graph=i < out.shape[1] - 1)
        total = total + g.reshape(u.shape[0], -1).pow(2).sum(1)
    return total


def score_complexity(times, samples: int, seed: int, jacobian_samples: int = 10_000) -> list[dict]:
    r"""xi_CLD(t), xi_VPSDE(t) (eq. 99-100) and the residual-score Jacobian norms, with exact scores."""
    mixture = diamond_mixture()
    cld, vp = complexity_processes()
    cld_oracle = DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]])
    vp_oracle = DiffusedGaussianMixture(mixture, vp)
    rows = []
    for t in times:
        g = torch.Generator().manual_seed(seed)
        u = cld_oracle.sample(samples, t, g, dtype=torch.float64)
        xi_cld = ((cld_oracle.component_score(u, t, [1]) + u[:, 1:]) ** 2).sum((1, 2)).mean().item()
        x = vp_oracle.sample(samples, t, g, dtype=torch.float64)
        xi_vp = ((vp_oracle.score(x, t) + x) ** 2).sum((1, 2)).mean().item()
        m = min(samples, jacobian_samples)
        with torch.enable_grad():
            j_cld = _jacobian_frobenius(lambda w: cld_oracle.component_score(w, t, [1]) + w[:, 1:], u[:m]).mean().item()
            j_vp = _jacobian_frobenius(lambda w: vp_oracle.score(w, t) + w, x[:m]).mean().item()
        rows.append({"t": t, "xi_cld": xi_cld, "xi_vpsde": xi_vp, "jacobian_cld": j_cld, "jacobian_vpsde": j_vp})
    return rows


def _fixed_network(cld: CLD, seed: int, path: str | None):
    """The mixed-score toy ResNet: trained weights (EMA) from a toy_train checkpoint, or a seeded random one
    (the output layer re-initialised at random so that the network is not the bare Normal score)."""
    if path is not None:
        trained = load_toy_model(path)  # EMA weights
        if trained.kind != "cld":
            raise CheckpointError(f"--network {path} is a {trained.kind} model; pass the CLD model (cld.pt)")
        return MixedScore(trained.network, cld, mixed=trained.score.mixed).eval()
    torch.manual_seed(seed)
    model = cld_toy_score(cld, 2)
    model.net.out.reset_parameters()
    return model.eval()


def _per_sample_gradient_trace(model, u: torch.Tensor, t: float, target: torch.Tensor, weight: float) -> float:
    r"""tr Cov over samples of :math:`\lambda\nabla_\theta\|s_\theta(u_i, t) - y_i\|^2` (torch.func.vmap)."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss(p, u_i, y_i):
        s = functional_call(model, (p, buffers), (u_i[None], t))
        return weight * (s - y_i[None]).pow(2).sum()

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, u, target)
    flat = torch.cat([g.reshape(u.shape[0], -1) for g in grads.values()], dim=1).to(torch.float64)
    return flat.var(0).sum().item()


def gradient_noise(times, samples: int, gradient_samples: int, seed: int, gammas=(0.04, 1.0), network: str | None = None):
    """Per t and gamma: tr Cov[K_HSM], tr Cov[K_DSM] (exact score) and the parameter-gradient noise of a fixed
    network under either objective (App. C.1)."""
    mixture = diamond_mixture()
    rows = []
    for gamma in gammas:
        cld = CLD(mass=0.25, beta=4.0, gamma=gamma, eps_num=1e-6)
        oracle = DiffusedGaussianMixture(mixture, cld, [[cld.gamma * cld.mass]])
        model = _fixed_network(cld, seed, network)
        for t in times:
            g = torch.Generator().manual_seed(seed)
            x0 = mixture.sample(samples, g, dtype=torch.float64)
            u0 = cld.sample_initial_velocity(x0, g)
            dsm = cld.perturbation_kernel(t, x0, kind="dsm", v0=u0[:, 1])
            u_t, _ = dsm.sample(g)  # ~ p_t(u_t | x0, v0), hence also ~ p_t(u_t | x0)
            hsm = cld.perturbation_kernel(t, x0, kind="hsm")
            target_hsm, target_dsm = hsm.score(u_t, [1]), dsm.score(u_t, [1])
            s = oracle.component_score(u_t, t, [1])
            row = {"gamma": gamma, "t": t,
                   "trcov_k_hsm": (s - target_hsm).reshape(samples, -1).var(0).sum().item(),
                   "trcov_k_dsm": (s - target_dsm).reshape(samples, -1).var(0).sum().item()}
            m = min(samples, gradient_samples)
            u32 = u_t[:m].float()
            weight = ell(cld, t).item() ** -2
            row["grad_noise_hsm"] = _per_sample_gradient_trace(model, u32, t, target_hsm[:m].float(), weight)
            row["grad_noise_dsm"] = _per_sample_gradient_trace(model, u32, t, target_dsm[:m].float(), weight)
            rows.append(row)
    return rows


def plot(complexity, noise, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    t = [c["t"] for c in complexity]
    ax = axes[0]
    ax.loglog(t, [c["xi_cld"] for c in complexity], "o-", label=r"$\xi_{CLD}$")
    ax.loglog(t, [c["xi_vpsde"] for c in complexity], "s-", label=r"$\xi_{VPSDE}$")
    ax.loglog(t, [c["jacobian_cld"] for c in complexity], "o--", alpha=0.6, label=r"$J_{CLD}$ (exact score)")
    ax.loglog(t, [c["jacobian_vpsde"] for c in complexity], "s--", alpha=0.6, label=r"$J_{VPSDE}$ (exact score)")
    ax.set_xlabel("t")
    ax.set_title("Fig. 9a: distance of the score from the Normal score")
    ax.legend(fontsize=8)
    for ax, (hsm, dsm, title) in zip(axes[1:], [("trcov_k_hsm", "trcov_k_dsm", "App. C.1 / Fig. 7: tr Cov[K], exact score"),
                                                 ("grad_noise_hsm", "grad_noise_dsm",
                                                  r"tr Cov[$\lambda\nabla_\theta$ loss], fixed network")]):
        for i, gamma in enumerate(sorted({r["gamma"] for r in noise})):
            rows = [r for r in noise if r["gamma"] == gamma]
            ts = [r["t"] for r in rows]
            ax.loglog(ts, [r[hsm] for r in rows], "o-", color=f"C{i}", label=f"HSM, $\\gamma$ = {gamma:g}")
            ax.loglog(ts, [r[dsm] for r in rows], "s--", color=f"C{i}", label=f"DSM, $\\gamma$ = {gamma:g}")
        ax.set_xlabel("t")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_tables(complexity, noise) -> str:
    lines = ["Score complexity (M = gamma = 1; eq. 99-100) and residual-score Jacobian norms",
             f"{'t':>8}{'xi_CLD':>12}{'xi_VPSDE':>12}{'J_CLD':>12}{'J_VPSDE':>12}"]
    for c in complexity:
        lines.append(f"{c['t']:>8.3g}{c['xi_cld']:>12.4g}{c['xi_vpsde']:>12.4g}{c['jacobian_cld']:>12.4g}"
                     f"{c['jacobian_vpsde']:>12.4g}")
    lines += ["", "Gradient noise, HSM vs DSM (M = 0.25): tr Cov[K] with the exact score; "
                  "tr Cov[lambda grad_theta loss] for the fixed network",
              f"{'gamma':>6}{'t':>8}{'K HSM':>12}{'K DSM':>12}{'grad HSM':>12}{'grad DSM':>12}"]
    for r in noise:
        lines.append(f"{r['gamma']:>6.3g}{r['t']:>8.3g}{r['trcov_k_hsm']:>12.4g}{r['trcov_k_dsm']:>12.4g}"
                     f"{r['grad_noise_hsm']:>12.4g}{r['grad_noise_dsm']:>12.4g}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = ScriptParser(prog="toy_score_complexity.py", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=positive_int, default=100_000, help="Monte Carlo samples per t (paper: 1e5)")
    parser.add_argument("--jacobian-samples", type=positive_int, default=10_000, help="samples for the Jacobian norms")
    parser.add_argument("--gradient-samples", type=positive_int, default=512,
                        help="samples per t for the per-sample parameter gradients")
    parser.add_argument("--times", type=float, nargs="+", default=DEFAULT_TIMES, help="times t in (0, 1]")
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.04, 1.0], help="gamma values for App. C.1")
    parser.add_argument("--network", default=None, help="cld.pt from examples/toy_train.py (default: a random network)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--threads", type=nonnegative_int, default=1, help="torch CPU threads (default 1; 0 keeps torch's choice)")
    parser.add_argument("--out", default="outputs/score_complexity", help="output folder")
    args = parser.parse_args(argv)
    if args.samples < 2 or args.gradient_samples < 2 or args.jacobian_samples < 1:
        parser.error("--samples and --gradient-samples must be at least 2, --jacobian-samples at least 1")
    if any(not 0 < t <= 1 for t in args.times):
        parser.error("--times must lie in (0, 1]")
    if any(not 0 < g < float("inf") for g in args.gammas):
        parser.error("--gammas must be finite positive numbers")
    if args.network is not None and not Path(args.network).is_file():
        parser.error(f"--network {args.network}: no such file (train one with examples/toy_train.py)")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with user_errors(parser.prog):
            return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    complexity = score_complexity(args.times, args.samples, args.seed, args.jacobian_samples)
    noise = gradient_noise(args.times, args.samples, args.gradient_samples, args.seed, args.gammas, args.network)
    print(format_tables(complexity, noise))
    plot(complexity, noise, out / "score_complexity.png")
    result = {"settings": vars(args), "score_complexity": complexity, "gradient_noise": noise}
    (out / "score_complexity.json").write_text(json.dumps(result, indent=2))
    print(f"figure: {out / 'score_complexity.png'}; data: {out / 'score_complexity.json'}")
    if not all(math.isfinite(v) for row in complexity + noise for v in row.values()):
        print("warning: some values are not finite")
    return result


if __name__ == "__main__":
    main()
