"""Fig. 9b and Fig. 12 of the CLD paper: how complex is the network each model has to learn?

J_F(t) = E_{u ~ p_t} ||d net(u, t) / du||_F^2, the squared Frobenius norm of the Jacobian of the network that
defines the score, over the exact diffused marginal p_t of the 9-mode "diamond" mixture (App. E.1 setup:
CLD with M = gamma = 1, Gamma = 2, beta = 4, whose equilibrium N(0, I) equals the VPSDE's). The networks:

* CLD with the mixed score: net = alpha'_theta, s = -v / Sigma_vv - ell_t alpha'_theta (HSM, ell_t^-2);
* CLD without the mixed score: s = -ell_t alpha'_theta;
* the VPSDE (beta(t) = 0.1 + 19.9 t) noise predictor: s = -eps_theta / sigma_t (no mixed score);
* Fig. 12: CLD with the mixed score trained towards maximum likelihood (lambda = Gamma beta), gamma = 1 and
  gamma = 0.04.

Next to each trained network's J_F(t) is the exact-score value: the same norm of the network that would
give the exact score (alpha'_exact = -(s + v / Sigma_vv) / ell_t, -s / ell_t or -sigma_t s, with s the exact
score of p_t). The paper's claim: CLD's network is smoother (smaller J_F) than the VPSDE's, especially for
small t (Fig. 9b), and with likelihood training larger gamma gives smoother networks, all smoother than the
VPSDE's (Fig. 12).

Outputs: benchmarks/results/jacobian_complexity.{json,md,png} (or --out).

Examples
--------
python examples/ablation_jacobian.py               # about 4 CPU-minutes
python examples/ablation_jacobian.py --quick --out /tmp/jacobian
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from splitdyn import VPSDE
from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
from splitdyn_cld import CLD
from splitdyn_cld.cli import ScriptParser, positive_int, user_errors
from splitdyn_cld.toy_data import get_toy_dataset
from splitdyn_cld.toy_models import vpsde_toy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/_experiments.py
from _experiments import add_output_arguments, add_toy_training_arguments  # noqa: E402
from _experiments import (ToyTraining, cld_loss, cld_model, jacobian_frobenius, machine,  # noqa: E402
                          markdown_table, train_toy, vpsde_loss, write_results)

PROG = "ablation_jacobian.py"
DEFAULT_TIMES = [1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0]
#: label -> (kind, mixed score, weighting, gamma)
MODELS = {
    "CLD + MS": ("cld", True, "ell", 1.0),
    "CLD, no MS": ("cld", False, "ell", 1.0),
    "VPSDE": ("vpsde", False, "ell", None),
    "CLD + MS, likelihood, gamma=1": ("cld", True, "likelihood", 1.0),
    "CLD + MS, likelihood, gamma=0.04": ("cld", True, "likelihood", 0.04),
}


def exact_network(kind: str, model, process, oracle):
    """The network output that would make ``model`` give the exact score of ``oracle``."""
    if kind == "vpsde":
        return lambda x, t: -model.sigma(torch.tensor(t)).item() * oracle.score(x, t)

    def net(u, t):
        ell_t, var_vv = model.coefficients(torch.tensor(float(t), dtype=torch.float64))
        s = oracle.component_score(u, t, [1])
        return -(s + u[:, 1:2] / var_vv.item()) / ell_t.item() if model.mixed else -s / ell_t.item()

    return net


def jacobians(kind: str, model, process, oracle, times, samples: int, seed: int) -> list[dict]:
    net, exact = model.net, exact_network(kind, model, process, oracle)
    rows = []
    for t in times:
        u = oracle.sample(samples, t, torch.Generator().manual_seed(seed))
        tt = torch.full((samples,), float(t))
        learned = jacobian_frobenius(lambda w: net(w, tt), u.float()).mean().item()
        truth = jacobian_frobenius(lambda w: exact(w, t), u).mean().item()
        rows.append({"t": float(t), "learned": learned, "exact": truth})
    return rows


def run(args) -> dict:
    data = get_toy_dataset("diamond")
    mixture = diamond_mixture()
    results = {}
    for label, (kind, mixed, weighting, gamma) in MODELS.items():
        training = ToyTraining(steps=args.steps, batch_size=args.batch_size, seed=args.seed, width=args.width)
        torch.manual_seed(args.seed)
        if kind == "cld":
            process = CLD(mass=1.0, beta=4.0, gamma=gamma, eps_num=1e-6)
            model = cld_model(process, "hsm", mixed, width=args.width)
            loss = cld_loss(process, "hsm", weighting)
            oracle = DiffusedGaussianMixture(mixture, process, [[process.gamma * process.mass]])
        else:
            process = VPSDE()
            model = vpsde_toy_score(process, 2, args.width, 4)
            loss = vpsde_loss(process)
            oracle = DiffusedGaussianMixture(mixture, process)
        ema, log = train_toy(model, loss, data, training)
        results[label] = {"curve": jacobians(kind, ema, process, oracle, args.times, args.samples, args.seed),
                          "training": log.summary()}
        print(f"{label}: " + ", ".join(f"t={r['t']:g} {r['learned']:.3g} (exact {r['exact']:.3g})"
                                       for r in results[label]["curve"]), flush=True)
    rows = []
    for i, t in enumerate(args.times):
        row = {"t": t}
        for label in MODELS:
            row[f"{label} learned"] = results[label]["curve"][i]["learned"]
            row[f"{label} exact"] = results[label]["curve"][i]["exact"]
        rows.append(row)
    verdict = verdicts(results, args.times)
    payload = {"claim": "Fig. 9b / Fig. 12: Jacobian Frobenius norm of the score network over t",
               "command": f"python examples/{PROG} " + " ".join(args.argv), "machine": machine(),
               "settings": {k: v for k, v in vars(args).items() if k != "argv"}, "results": results,
               "verdict": verdict}
    columns = [("t", "t", "g")] + [(f"{m} {w}", f"{m} ({w})", ".3g") for m in MODELS for w in ("learned", "exact")]
    table = markdown_table(rows, columns) + "\n\nVerdict: " + " ".join(v["text"] for v in verdict.values())
    write_results(args.out, "jacobian_complexity", payload, table, plot(results),
                  title="Fig. 9b / 12: network Jacobian norm J_F(t), trained and exact")
    print(table)
    return payload


def verdicts(results: dict, times) -> dict:
    small = [i for i, t in enumerate(times) if t <= 0.1]

    def mean(label, key="learned"):
        values = [results[label]["curve"][i][key] for i in small]
        return sum(values) / len(values)

    cld, vp = mean("CLD + MS"), mean("VPSDE")
    cld_exact, vp_exact = mean("CLD + MS", "exact"), mean("VPSDE", "exact")
    ml1, ml004 = mean("CLD + MS, likelihood, gamma=1"), mean("CLD + MS, likelihood, gamma=0.04")
    fig9 = cld < vp
    fig12 = ml1 < ml004 < vp
    return {
        "fig9b": {"holds": bool(fig9), "text": (
            f"Fig. 9b: mean J_F over t <= 0.1 is {cld:.3g} for CLD + MS vs {vp:.3g} for the VPSDE (exact-score "
            f"networks: {cld_exact:.3g} vs {vp_exact:.3g}); 'CLD's network is smoother' {'holds' if fig9 else 'does not hold'}.")},
        "fig12": {"holds": bool(fig12), "text": (
            f"Fig. 12 (likelihood weighting): J_F {ml1:.3g} at gamma = 1, {ml004:.3g} at gamma = 0.04, VPSDE {vp:.3g}; "
            f"'larger gamma smoother, all smoother than the VPSDE' {'holds' if fig12 else 'does not hold'}.")},
    }


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, labels, title in ((axes[0], ["CLD + MS", "CLD, no MS", "VPSDE"], "Fig. 9b analogue (ell^-2 weighting)"),
                              (axes[1], ["CLD + MS, likelihood, gamma=1", "CLD + MS, likelihood, gamma=0.04", "VPSDE"],
                               "Fig. 12 analogue (likelihood weighting)")):
        for color, label in zip(("C0", "C1", "C3"), labels):
            curve = results[label]["curve"]
            t = [r["t"] for r in curve]
            ax.loglog(t, [max(r["learned"], 1e-12) for r in curve], "o-", color=color, label=f"{label} (trained)")
            ax.loglog(t, [max(r["exact"], 1e-12) for r in curve], "--", color=color, label=f"{label} (exact)")
        ax.set_xlabel("t")
        ax.set_ylabel("E ||d net / du||_F^2")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_training_arguments(parser, steps=2000)
    parser.add_argument("--samples", type=positive_int, default=2000, help="samples of p_t per time (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.times = list(DEFAULT_TIMES)
    if args.quick:
        args.steps, args.batch_size, args.width, args.samples, args.times = 5, 32, 16, 50, [1e-2, 0.5]
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors(PROG):
        return run(args)


if __name__ == "__main__":
    main()
