"""Train CLD-SGM and a VPSDE baseline on 2-D toy data, sample, score, plot. This is ``make demo``.

CLD-SGM: hybrid score matching (eq. 9, lambda = ell_t^-2), the mixed score (Sec. 3.2) on a small residual
MLP (splitdyn_cld.toy_models), an EMA of the weights; M = 0.25, Gamma = 1 (critical), beta = 4, gamma = 0.04.
The switches of the paper's ablations change this: --objective dsm (v0 ~ N(0, gamma M) drawn and conditioned
on, the DSM ell_t), --no-mixed, --weighting likelihood (lambda = Gamma beta), --mass (Gamma = 2 sqrt(M) stays
critical), --gamma, --beta (a number or 8sqrtM), --eps-num; they are saved in the checkpoints and models.
VPSDE: beta(t) = 0.1 + 19.9 t, the standard noise-prediction loss ||eps_theta - eps||^2, the same network.

Sampling: CLD with SSCS (Algorithm 1), Euler-Maruyama and the probability-flow ODE (RK45, rtol = atol =
1e-5); the VPSDE with Euler-Maruyama. All finish with the denoising step (1 NFE). Beside them, at
--few-step-nfe score evaluations (default 10; 0 skips), the few-step samplers the accuracy benchmarks recommend
for trained models (FEW_STEP: CLD and VP, see benchmarks/results/sampler_guidance.md): CLD ends with the
score-free data update of eq. 109 (NFE = steps), the VPSDE with the Euler denoising step (NFE = steps + 1). The table reports, per
sampler: NFE; the mean -log p_data of the samples (diamond only, where the true density is known; a perfect
sampler gives the data's entropy, and values below it mean samples too concentrated on the mode centres);
the sliced Wasserstein-2 distance and the unbiased squared MMD (Gaussian kernels; can be slightly negative)
to fresh data samples; the mode-weight error (diamond). Below it, the NLL of held-out data in nats: the
CLD bound of eq. 60 and the VPSDE's probability-flow NLL (exact divergence), next to the data's entropy.

Outputs in --out: samples.png (data and each sampler's samples), samples.pt (the samples), loss.png
(training losses), loss_cld.csv / loss_vpsde.csv, metrics.json, and the trained models (cld.pt, vpsde.pt:
weights, EMA weights, process and network settings; splitdyn_cld.toy_models.load_toy_model rebuilds them, and
examples/toy_score_complexity.py --network cld.pt reads them).

Checkpoints: --checkpoint-every N writes checkpoint_cld.pt / checkpoint_vpsde.pt every N steps and at the end
of each model's training (atomically, with a checksum: model, EMA, optimiser, step, RNG states, loss
history). --resume continues from them, bit for bit the uninterrupted run; it refuses a corrupt checkpoint,
or one whose run-defining settings (--data, --steps, --batch-size, --lr, --ema, --width, --blocks, --seed,
or any CLD switch) differ from the given ones, unless --override-settings. Bad arguments and missing or corrupt files end with
one line and exit code 2; a NaN/inf loss or batch with exit code 3.

Examples
--------
python examples/toy_train.py --out outputs/demo                        # the default: < 5 min on 2 cores
python examples/toy_train.py --steps 30000 --out outputs/diamond_long  # closer to converged
python examples/toy_train.py --data swissroll --steps 30000 --out outputs/swissroll
python examples/toy_train.py --steps 30000 --checkpoint-every 1000 --out outputs/long  # then, after a kill:
python examples/toy_train.py --steps 30000 --checkpoint-every 1000 --out outputs/long --resume
"""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
import sys
import time
from pathlib import Path

import torch

from splitdyn import VPSDE, PerturbationKernel, PowerGrid, ProbabilityFlowODE, UniformGrid
from splitdyn import sample as sample_process
from splitdyn.likelihood import log_likelihood
from splitdyn.metrics import mmd_rbf, mode_weight_error, wasserstein_sliced
from splitdyn.oracles import diamond_mixture
from splitdyn.score_matching import kernel_score_matching_loss
from splitdyn_cld import CLD, nll_bound, sample, score_matching_objective
from splitdyn_cld.toy_data import get_toy_dataset
from splitdyn_cld.checkpoints import (CheckpointError, check_run_settings, load_checkpoint, remove_stale_temporaries,
                                      run_folder_lock, save_checkpoint)
from splitdyn_cld.cli import (BETA_TIED, ScriptParser, beta_value, device_name, nonnegative_float, nonnegative_int,
                              one_line, open_unit_float, positive_float, positive_int, resolve_beta, user_errors)
from splitdyn_cld.toy_models import cld_toy_score, save_toy_model, vpsde_toy_score
from splitdyn_cld.training import (CSVLogger, NonFiniteLossError, check_finite_batch, check_finite_loss, make_ema,
                                   rng_state, set_rng_state, warmup_lr)

PROG = "toy_train.py"
#: The processes of the toy experiments (keyword arguments of CLD and vpsde, saved with the models).
CLD_PROCESS = {"mass": 0.25, "friction": 1.0, "beta": 4.0, "gamma": 0.04, "eps_num": 1e-6}
#: The CLD training switches (the ablations of Sec. 5.3 / App. F): loss, mixed score, weighting, process.
CLD_SWITCHES = ("objective", "mixed", "weighting", "mass", "gamma", "beta", "eps_num")
VPSDE_PROCESS = {"beta_min": 0.1, "beta_max": 20.0, "T": 1.0}
#: Settings that define a training run: --resume refuses a checkpoint with other values (--override-settings).
RUN_SETTINGS = ("data", "steps", "batch_size", "lr", "ema", "width", "blocks", "seed") + CLD_SWITCHES
#: The few-step samplers the demo shows at --few-step-nfe, per model: (named sampler, power-grid rho), the best
#: at NFE 10 on the trained toy models of benchmarks/bench_trained_samplers.py.
FEW_STEP = {"CLD": ("ei-ode-3", 4.0), "VPSDE": ("unipc-3-bh1", 3.0)}


def cld_process_settings(args) -> dict:
    r"""The CLD keyword arguments of a run: ``--mass``, ``--gamma``, ``--beta`` (a number, or ``8sqrtM`` for
    :math:`\beta = 8\sqrt{M}`), ``--eps-num``; always critically damped, :math:`\Gamma = 2\sqrt{M}`."""
    mass = float(args.mass)
    return {"mass": mass, "friction": 2.0 * math.sqrt(mass), "beta": float(resolve_beta(args.beta, mass)),
            "gamma": float(args.gamma), "eps_num": float(args.eps_num)}


def cld_objective(objective: str = "hsm", weighting: str = "ell"):
    r"""The CLD training loss of a run, ``loss(score_model, x0, cld, generator=..., **options)``.

    ``objective="hsm"`` is hybrid score matching (eq. 9 / 53, the initial velocity marginalised); ``"dsm"``
    draws :math:`v_0 \sim \mathcal N(0, \gamma M I)`, conditions on it and regresses with the DSM
    :math:`\ell_t` (eq. 54). ``weighting="ell"`` is :math:`\lambda = \ell_t^{-2}`, ``"likelihood"``
    :math:`\lambda = \Gamma\beta(t)` (App. B.3). Other keywords (``t``, ``noise``, ``v0``, ``reduction``) go to
    :func:`splitdyn_cld.losses.score_matching_objective`.
    """
    if objective not in ("hsm", "dsm"):
        raise ValueError(f"objective must be 'hsm' or 'dsm', got {objective!r}")
    if weighting not in ("ell", "likelihood"):
        raise ValueError(f"weighting must be 'ell' or 'likelihood', got {weighting!r}")
    return partial(score_matching_objective, kind=objective, weighting=weighting)
CHECKPOINT_FORMAT = "toy_train/1"


def vpsde_loss(score_model, x0: torch.Tensor, sde, generator: torch.Generator | None, t_min: float = 1e-5) -> torch.Tensor:
    r"""The VPSDE's noise-prediction loss: DSM with :math:`\lambda(t) = \sigma_t^2`, i.e.
    :math:`\|\varepsilon_\theta(x_t, t) - \varepsilon\|^2` for ``score_model`` a
    :class:`~splitdyn.score_matching.NoisePredictionScore`; :math:`t \sim U[t_{min}, T)`."""
    cpu = generator if generator is None or generator.device.type == "cpu" else None
    t = t_min + (sde.T - t_min) * torch.rand(x0.shape[0], generator=cpu, dtype=torch.float64)
    kernel = PerturbationKernel(sde, t, x0[:, None])
    return kernel_score_matching_loss(score_model, kernel, weight=kernel.covariance[:, 0, 0], generator=generator).mean()


def train(model, loss_fn, data, args, device, name: str, log_path: Path, checkpoint: Path | None = None):
    """Adam with a short linear warm-up and a cosine decay, gradient clipping at 1, EMA of the weights.

    With ``args.checkpoint_every`` the full training state goes to ``checkpoint`` every that many steps and at
    the end; with ``args.resume`` training continues from it (after the checksum and settings checks).
    Returns the EMA model (``ema.module``, in eval mode), the trained model, the ``AveragedModel`` (for its
    ``state_dict``) and the loss history ``[(step, running mean loss), ...]`` (also written to ``log_path``)."""
    from tqdm.auto import tqdm

    torch.manual_seed(args.seed)
    data_gen = torch.Generator().manual_seed(args.seed)
    noise_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    generators = {"data": data_gen, "noise": noise_gen}
    model.to(device).train()
    ema = make_ema(model, args.ema)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    warmup = max(1, min(200, args.steps // 10))

    def lr_at(step: int) -> float:  # linear warm-up, then a cosine decay to 10% of the peak
        progress = max(0, step - warmup) / max(1, args.steps - warmup)
        return warmup_lr(step, args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress))), warmup)

    start, history, running = 0, [], []
    if args.resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("name") != name:
            raise CheckpointError(f"checkpoint {checkpoint} is not a {name!r} checkpoint of {PROG}")
        differences = check_run_settings(checkpoint, state["settings"], vars(args), RUN_SETTINGS,
                                         override=args.override_settings)
        if differences:
            print(f"note: --override-settings: resuming {checkpoint} with {'; '.join(differences)}", file=sys.stderr)
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint} does not fit this model ({one_line(exc)})") from None
        set_rng_state(state["rng"], generators)
        start, history, running = int(state["step"]), [tuple(h) for h in state["history"]], list(state["running"])
        print(f"{name}: resumed from {checkpoint} at step {start}", file=sys.stderr)
    elif args.resume:
        print(f"{name}: --resume: no checkpoint at {checkpoint}, starting from scratch", file=sys.stderr)

    def save(step: int) -> None:
        save_checkpoint(checkpoint, {
            "format": CHECKPOINT_FORMAT, "name": name, "step": step, "model": model.state_dict(),
            "ema": ema.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(generators),
            "history": history, "running": running, "settings": {k: getattr(args, k) for k in RUN_SETTINGS}})

    every = max(1, args.steps // 200)
    with CSVLogger(log_path, fieldnames=["step", "loss", "lr"], resume_step=start - 1 if start else None) as log:
        bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"train {name}",
                   disable=args.no_progress, mininterval=1.0)
        for step in bar:
            x0 = data(args.batch_size, data_gen).to(device)
            try:
                check_finite_batch(x0, step)
                loss = loss_fn(model, x0, noise_gen)
                check_finite_loss(loss, step)
            except NonFiniteLossError as exc:  # NaN/inf batch or loss: name the step and the last good checkpoint
                last = (f"the last good checkpoint is {checkpoint}" if checkpoint is not None and checkpoint.is_file()
                        else "no checkpoint was written (use --checkpoint-every)")
                raise type(exc)(f"{name}: {exc} Training stopped; {last} (left untouched).") from None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            ema.update_parameters(model)
            running.append(loss.item())
            if len(running) == every or step == args.steps - 1:
                mean = sum(running) / len(running)
                history.append((step, mean))
                log.log(step=step, loss=mean, lr=lr_at(step))
                bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
                running = []
            if checkpoint is not None and args.checkpoint_every and (
                    (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps):
                save(step + 1)
    return ema.module.eval(), model.eval(), ema, history


@torch.no_grad()
def evaluate(args, cld, cld_score, vp, vp_score, data, device):
    """Sample with every sampler and compute the sample metrics and held-out NLLs."""
    true = diamond_mixture() if args.data == "diamond" else None
    reference = data(args.eval_samples, torch.Generator().manual_seed(args.seed + 99))
    generator = torch.Generator(device=device).manual_seed(args.seed + 2)
    rows, samples = [], {}

    def record(model, sampler, x, nfe, seconds):
        x = x.detach().float().cpu()
        row = {"model": model, "sampler": sampler, "nfe": int(nfe),
               "sw2": wasserstein_sliced(x, reference, generator=torch.Generator().manual_seed(0)),
               "mmd2": mmd_rbf(x, reference, max_samples=2000), "seconds": seconds}
        if true is not None:
            row["nll_samples"] = (-true.log_prob(x)).mean().item()
            row["mode_weight_error"] = mode_weight_error(x, true)
        row["nonfinite"] = int((~torch.isfinite(x)).any(1).sum())
        rows.append(row)
        samples[f"{model} {sampler} (NFE {nfe})"] = x

    from tqdm.auto import tqdm

    shape = (args.eval_samples, 2)
    jobs = [(n, model, sampler) for n in args.sample_steps for model, sampler in
            (("CLD", "sscs"), ("CLD", "em"), ("VPSDE", "em"))] + [(None, "CLD", "ode")]
    if args.few_step_nfe:
        jobs += [(args.few_step_nfe, model, FEW_STEP[model][0]) for model in ("CLD", "VPSDE")]
    bar = tqdm(jobs, desc="sample", disable=args.no_progress)
    for n, model, sampler in bar:  # one bar, labelled with the job it runs
        bar.set_description(f"sample {model} {sampler.upper()}" + (f" NFE {n}" if n is not None else ""))
        start = time.perf_counter()
        if sampler == FEW_STEP.get(model, (None,))[0] and n == args.few_step_nfe:
            rho = FEW_STEP[model][1]
            if model == "CLD":  # n steps, then the score-free data update (eq. 109)
                out = sample_process(cld, cld_score, shape, PowerGrid(n, rho), step=sampler, denoise="score-free",
                                     generator=generator, device=device)
            else:  # n - 1 steps, then the denoising step
                out = sample_process(vp, vp_score, shape, PowerGrid(n - 1, rho), step=sampler, generator=generator,
                                     device=device)
        elif model == "VPSDE":
            out = sample_process(vp, vp_score, shape, UniformGrid(n - 1), step="em", generator=generator,
                                 device=device)
        else:
            out = sample(cld, cld_score, shape, None if n is None else n - 1, sampler=sampler, generator=generator,
                         device=device)
        x, nfe = out.components()[0], out.nfe
        record(model, sampler.upper() if sampler in ("sscs", "em", "ode") else sampler, x, nfe,
               time.perf_counter() - start)

    likelihoods = {}
    if args.nll_samples > 0:
        held_out = data(args.nll_samples, torch.Generator().manual_seed(args.seed + 7)).to(device)
        with torch.enable_grad():
            bound = nll_bound(cld, cld_score, held_out, trace="exact", rtol=1e-5, atol=1e-5, generator=generator)
            vp_ll = log_likelihood(ProbabilityFlowODE(vp, vp_score), held_out[:, None], t0=1e-5, trace="exact")
        likelihoods = {"cld_nll_bound": bound.nats.mean().item(), "vpsde_nll": (-vp_ll.log_prob).mean().item()}
        if true is not None:
            likelihoods["data_entropy"] = (-true.log_prob(held_out.cpu())).mean().item()
    return rows, samples, likelihoods, reference


def plot(samples, data_points, history, out: Path, limits: float = 1.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["data"] + list(samples)
    cols = 4
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 3.0 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        x = data_points if name == "data" else samples[name]
        x = x[torch.isfinite(x).all(1)][:5000]
        ax.scatter(x[:, 0], x[:, 1], s=0.4, alpha=0.4, color="k" if name == "data" else "C0", rasterized=True)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-limits, limits)
        ax.set_ylim(-limits, limits)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(history), figsize=(4.5 * len(history), 3.2), squeeze=False)
    for ax, (name, h) in zip(axes.flat, history.items()):
        ax.plot([s for s, _ in h], [v for _, v in h])
        ax.set_xlabel("step")
        ax.set_ylabel("loss (running mean)")
        ax.set_yscale("log")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)


def format_table(rows, likelihoods) -> str:
    head = f"{'model':<7}{'sampler':<9}{'NFE':>6}{'-log p_data':>13}{'SW2':>9}{'MMD^2':>10}{'mode err':>10}{'time s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        nll = f"{r['nll_samples']:.3f}" if "nll_samples" in r else "-"
        mwe = f"{r['mode_weight_error']:.3f}" if "mode_weight_error" in r else "-"
        lines.append(f"{r['model']:<7}{r['sampler']:<9}{r['nfe']:>6}{nll:>13}{r['sw2']:>9.4f}{r['mmd2']:>10.5f}"
                     f"{mwe:>10}{r['seconds']:>8.1f}")
    if likelihoods:
        names = {"cld_nll_bound": "CLD NLL bound (eq. 60)", "vpsde_nll": "VPSDE NLL", "data_entropy": "data entropy"}
        lines.append("held-out NLL in nats: " + ", ".join(f"{names[k]} {v:.3f}" for k, v in likelihoods.items()))
    return "\n".join(lines)


def _sample_steps(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 (one step plus the denoising step), got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = ScriptParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["diamond", "swissroll"], default="diamond", help="toy dataset")
    parser.add_argument("--steps", type=positive_int, default=4000, help="training steps per model (default 4000)")
    parser.add_argument("--batch-size", type=positive_int, default=512, help="training batch size (default 512)")
    parser.add_argument("--lr", type=positive_float, default=2e-3,
                        help="peak Adam learning rate (default 2e-3; cosine decay to 10%%)")
    parser.add_argument("--ema", type=open_unit_float, default=0.999, help="EMA decay (default 0.999, with warm-up)")
    parser.add_argument("--width", type=positive_int, default=64, help="network width (default 64)")
    parser.add_argument("--blocks", type=nonnegative_int, default=4, help="residual blocks (default 4)")
    cld = parser.add_argument_group("CLD switches (ablations, Sec. 5.3 and App. F; defaults: the paper's)")
    cld.add_argument("--objective", choices=["hsm", "dsm"], default="hsm",
                     help="hybrid score matching (eq. 9) or denoising score matching (eq. 54: v0 ~ N(0, gamma M), "
                          "the DSM ell_t) (default hsm)")
    cld.add_argument("--no-mixed", dest="mixed", action="store_false",
                     help="no mixed score: s = -ell_t net(u, t) instead of -v / Sigma_vv - ell_t net(u, t)")
    cld.add_argument("--weighting", choices=["ell", "likelihood"], default="ell",
                     help="lambda(t) = ell_t^-2 (default) or the likelihood weighting Gamma beta (App. B.3)")
    cld.add_argument("--mass", type=positive_float, default=0.25,
                     help="mass M (default 0.25); always critically damped, Gamma = 2 sqrt(M)")
    cld.add_argument("--gamma", type=positive_float, default=0.04,
                     help="initial velocity variance scale gamma, v0 ~ N(0, gamma M) (default 0.04)")
    cld.add_argument("--beta", type=beta_value, default=4.0,
                     help=f"rate beta, a number or {BETA_TIED} for beta = 8 sqrt(M) (Sec. 5.3) (default 4)")
    cld.add_argument("--eps-num", type=nonnegative_float, default=1e-6,
                     help="Cholesky stabiliser eps_num added to Sigma_xx and Sigma_vv (default 1e-6)")
    parser.add_argument("--sample-steps", type=_sample_steps, nargs="+", default=[50, 200],
                        help="NFE budgets for SSCS/EM, denoising step included (default 50 200)")
    parser.add_argument("--few-step-nfe", type=nonnegative_int, default=10,
                        help="NFE of the few-step samplers shown beside SSCS/EM (default 10; 0 skips them)")
    parser.add_argument("--eval-samples", type=positive_int, default=5000, help="samples per sampler (default 5000)")
    parser.add_argument("--nll-samples", type=nonnegative_int, default=200,
                        help="held-out points for the NLLs (default 200; 0 skips)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda[:i] (default cpu)")
    parser.add_argument("--threads", type=nonnegative_int, default=1,
                        help="torch CPU threads (default 1: these small networks gain nothing from more, and "
                             "oversubscribed cores slow them down many times; 0 keeps torch's choice)")
    parser.add_argument("--checkpoint-every", type=nonnegative_int, default=0,
                        help="write checkpoint_cld.pt / checkpoint_vpsde.pt every N steps and at the end "
                             "(default 0: never)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    parser.add_argument("--override-settings", action="store_true",
                        help="with --resume: continue even if run-defining settings differ from the checkpoint's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--out", default="outputs/toy", help="output folder (default outputs/toy)")
    args = parser.parse_args(argv)
    if args.override_settings and not args.resume:
        parser.error("--override-settings only applies with --resume; add --resume or drop it")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with user_errors(PROG), run_folder_lock(args.out, "toy training"):  # one run per --out folder
            return _run(args)
    except NonFiniteLossError as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        torch.set_num_threads(threads)


def _train_model(kind: str, args, data, device, out: Path):
    """Build (seeded), train and save one of the two models; returns (EMA model, model, history)."""
    torch.manual_seed(args.seed)  # the initial weights
    if kind == "cld":
        process_settings = cld_process_settings(args)
        process = CLD(**process_settings)
        model = cld_toy_score(process, 2, args.width, args.blocks, mixed=args.mixed, kind=args.objective)
        objective = cld_objective(args.objective, args.weighting)
        loss_fn, name = (lambda m, x, g: objective(m, x, process, generator=g)), "CLD-SGM"
    else:
        process_settings = VPSDE_PROCESS
        process = VPSDE(**VPSDE_PROCESS)
        model = vpsde_toy_score(process, 2, args.width, args.blocks)
        loss_fn, name = (lambda m, x, g: vpsde_loss(m, x, process, g)), "VPSDE (DSM)"
    ema_model, model, averaged, history = train(model, loss_fn, data, args, device, name, out / f"loss_{kind}.csv",
                                                out / f"checkpoint_{kind}.pt")
    save_toy_model(out / f"{kind}.pt", kind, model, process_settings, ema=averaged,
                   settings=vars(args), step=args.steps)
    return process, ema_model, model, history


def _run(args) -> dict:
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out, ("checkpoint_*.pt", "cld.pt", "vpsde.pt")):
        print(f"removed {stale}, a temporary file left by a checkpoint write that was interrupted", file=sys.stderr)
    start = time.perf_counter()
    data = get_toy_dataset(args.data)

    cld, cld_ema, cld_model, cld_hist = _train_model("cld", args, data, device, out)
    vp, vp_ema, vp_model, vp_hist = _train_model("vpsde", args, data, device, out)
    train_seconds = time.perf_counter() - start

    rows, samples, likelihoods, reference = evaluate(args, cld, cld_ema, vp, vp_ema, data, device)
    plot(samples, reference, {f"CLD-SGM ({args.objective.upper()})": cld_hist, "VPSDE (noise prediction)": vp_hist}, out)
    torch.save(samples, out / "samples.pt")
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in cld_model.parameters())
    result = {"settings": vars(args), "parameters": {"cld": params, "vpsde": sum(p.numel() for p in vp_model.parameters())},
              "results": rows, "likelihoods_nats": likelihoods,
              "final_loss": {"cld": cld_hist[-1][1], "vpsde": vp_hist[-1][1]},
              "seconds": {"training": train_seconds, "total": elapsed}}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(f"\nCLD-SGM vs VPSDE on '{args.data}': {args.steps} steps each, {params} parameters, "
          f"{elapsed:.0f} s ({train_seconds:.0f} s training)")
    print(format_table(rows, likelihoods))
    print(f"figures: {out / 'samples.png'}, {out / 'loss.png'}; metrics: {out / 'metrics.json'}")
    return result


if __name__ == "__main__":
    main()
