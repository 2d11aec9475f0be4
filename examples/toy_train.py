"""Train CLD-SGM (HSM, mixed score, small ResNet, EMA) and a VPSDE baseline on 2-D toy data, then sample
with SSCS, EM and the probability-flow ODE, report metrics, and save figures. This is ``make demo``.

Metrics: mean -log p_data(x) of samples (diamond data only: the paper's toy metric), sliced Wasserstein-2
distance to fresh data samples, mode-weight error (diamond), and the NLL of held-out data: the CLD bound of
eq. 60 and the VPSDE's probability-flow likelihood (both in nats, exact trace).

Examples
--------
python examples/toy_train.py --out outputs/demo                       # the default (< 5 min on 2 cores)
python examples/toy_train.py --data swissroll --steps 20000 --out outputs/swissroll
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from splitdyn import PerturbationKernel, ProbabilityFlowODE, log_likelihood
from splitdyn.metrics import mode_weight_error, wasserstein_sliced
from splitdyn.oracles import diamond_mixture
from splitdyn.score_matching import kernel_score_matching_loss
from splitdyn_cld import CLD, MixedScore, hsm_loss, nll_bound, sample
from splitdyn_cld.toy_data import get_toy_dataset
from splitdyn_cld.toy_models import ToyResNet
from splitdyn_cld.training import check_finite_loss, make_ema
from splitdyn_cld.vpsde import vpsde, vpsde_em


class NoisePredictionScore(torch.nn.Module):
    """VPSDE score from a noise predictor: s(x, t) = -eps_theta(x, t) / sigma_t."""

    def __init__(self, net: torch.nn.Module, sde) -> None:
        super().__init__()
        self.net, self.sde = net, sde

    def forward(self, u, t):
        t = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
        t = t.expand(u.shape[0]) if t.ndim == 0 else t
        sigma = self.sde.noise_covariance(t)[:, 0, 0].sqrt().to(u.dtype).reshape(-1, 1, 1)
        return -self.net(u, t.to(u.dtype)) / sigma


def vpsde_loss(score, x0, sde, t_min, generator):
    t = t_min + (sde.T - t_min) * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
    kernel = PerturbationKernel(sde, t, x0[:, None])
    weight = kernel.covariance[:, 0, 0]  # lambda = sigma^2: ||eps_theta - eps||^2
    return kernel_score_matching_loss(score, kernel, weight=weight, generator=generator).mean()


def train(model, loss_fn, data, steps, batch_size, lr, ema_decay, seed, desc, log_every=100):
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    ema = make_ema(model, ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    bar = tqdm(range(steps), desc=desc)
    for step in bar:
        x0 = data(batch_size, generator)
        loss = loss_fn(model, x0, generator)
        check_finite_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update_parameters(model)
        if step % log_every == 0 or step == steps - 1:
            history.append((step, loss.item()))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return ema.module, history


@torch.no_grad()
def evaluate(args, cld, cld_score, vp, vp_score, data, generator):
    true = diamond_mixture() if args.data == "diamond" else None
    reference = data(args.eval_samples, torch.Generator().manual_seed(args.seed + 99))
    held_out = data(args.nll_samples, torch.Generator().manual_seed(args.seed + 7))
    rows, samples = [], {}

    def record(name, x, nfe):
        x = x.float()
        row = {"model": name.split()[0], "sampler": name.split()[1], "nfe": int(nfe),
               "sw2": wasserstein_sliced(x, reference, generator=torch.Generator().manual_seed(0))}
        if true is not None:
            row["nll_samples"] = (-true.log_prob(x)).mean().item()
            row["mode_weight_error"] = mode_weight_error(x, true)
        rows.append(row)
        samples[f"{name} (NFE {nfe})"] = x

    for sampler in ("sscs", "em"):
        for n in args.sample_steps:
            out = sample(cld, cld_score, (args.eval_samples, 2), n - 1, sampler=sampler, generator=generator)
            record(f"CLD {sampler.upper()}", out.x, out.nfe)
    out = sample(cld, cld_score, (args.eval_samples, 2), None, sampler="ode", generator=generator)
    record("CLD ODE", out.x, out.nfe)
    for n in args.sample_steps:
        x, nfe = vpsde_em(vp, vp_score, (args.eval_samples, 2), n - 1, generator=generator)
        record("VPSDE EM", x, nfe)
    with torch.enable_grad():
        bound = nll_bound(cld, cld_score, held_out, trace="exact", rtol=1e-5, atol=1e-5, generator=generator)
        vp_ll = log_likelihood(ProbabilityFlowODE(vp, vp_score), held_out[:, None], t0=1e-5, trace="exact")
    likelihoods = {"cld_nll_bound_nats": bound.nats.mean().item(), "vpsde_nll_nats": (-vp_ll.log_prob).mean().item()}
    if true is not None:
        likelihoods["data_entropy_nats"] = (-true.log_prob(held_out)).mean().item()
    return rows, samples, likelihoods


def plot(samples, data_points, history, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["data"] + list(samples)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        x = data_points if name == "data" else samples[name]
        ax.scatter(x[:3000, 0], x[:3000, 1], s=0.6, alpha=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-1.4, 1.4)
        ax.set_ylim(-1.4, 1.4)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, h in history.items():
        ax.plot([s for s, _ in h], [l for _, l in h], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)


def format_table(rows, likelihoods) -> str:
    lines = [f"{'model':<7}{'sampler':<9}{'NFE':>5}{'-log p_data':>13}{'SW2':>9}{'mode err':>10}"]
    for r in rows:
        nll = f"{r['nll_samples']:.3f}" if "nll_samples" in r else "-"
        mwe = f"{r['mode_weight_error']:.3f}" if "mode_weight_error" in r else "-"
        lines.append(f"{r['model']:<7}{r['sampler']:<9}{r['nfe']:>5}{nll:>13}{r['sw2']:>9.4f}{mwe:>10}")
    lines.append("held-out NLL (nats): " + ", ".join(f"{k} = {v:.3f}" for k, v in likelihoods.items()))
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["diamond", "swissroll"], default="diamond")
    parser.add_argument("--steps", type=int, default=4000, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[50, 200], help="NFE (incl. denoising)")
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--nll-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="outputs/toy")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = get_toy_dataset(args.data)
    cld = CLD(mass=0.25, friction=1.0, beta=4.0, gamma=0.04, eps_num=1e-6)
    cld_model = MixedScore(ToyResNet(2, 2, 1, args.width, args.blocks), cld)
    cld_model, cld_hist = train(cld_model, lambda m, x, g: hsm_loss(m, x, cld, generator=g), data, args.steps,
                                args.batch_size, args.lr, args.ema, args.seed, "CLD (HSM)")
    vp = vpsde()
    vp_model = NoisePredictionScore(ToyResNet(2, 1, 1, args.width, args.blocks), vp)
    vp_model, vp_hist = train(vp_model, lambda m, x, g: vpsde_loss(m, x, vp, 1e-5, g), data, args.steps,
                              args.batch_size, args.lr, args.ema, args.seed, "VPSDE (DSM)")
    params = sum(p.numel() for p in cld_model.parameters())
    generator = torch.Generator().manual_seed(args.seed + 1)
    rows, samples, likelihoods = evaluate(args, cld, cld_model, vp, vp_model, data, generator)
    plot(samples, data(3000, torch.Generator().manual_seed(5)), {"CLD HSM": cld_hist, "VPSDE DSM": vp_hist}, out)
    elapsed = time.perf_counter() - start
    result = {"settings": vars(args), "parameters": params, "results": rows, "likelihoods": likelihoods,
              "seconds": elapsed}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(f"\nCLD-SGM vs VPSDE on '{args.data}' ({args.steps} steps each, {params} parameters, {elapsed:.0f} s)")
    print(format_table(rows, likelihoods))
    print(f"figures: {out / 'samples.png'}, {out / 'loss.png'}; metrics: {out / 'metrics.json'}")
    return result


if __name__ == "__main__":
    main()
