r"""Helpers of the paper's ablation scripts (``examples/ablation_*.py``): small, seeded toy experiments.

Not part of the installed package: the scripts import it from this folder (``sys.path``), like
``_mcmc_cli.py``.

* :class:`ToyTraining` -- the optimiser settings of a toy run (Adam, linear warm-up then cosine decay to 10%,
  gradient clipping at 1, EMA with warm-up), the same as ``examples/toy_train.py``;
* :func:`cld_model` / :func:`cld_loss` -- a toy CLD score model and its training loss for the switches of the
  ablations (objective HSM or DSM, mixed score on or off, weighting :math:`\ell_t^{-2}` or likelihood
  :math:`\Gamma\beta`);
* :func:`vpsde_loss` -- the VPSDE baseline's noise-prediction loss;
* :func:`train_toy` -- the training loop; it records the loss and gradient norm of every step and stops at
  the first non-finite loss (an unstable run) instead of raising;
* :func:`sample_metrics`, :func:`jacobian_frobenius` -- sample quality on the 9-mode "diamond" mixture (sliced
  W2 to fresh data and the mean :math:`-\log p_{data}` of the samples) and Jacobian norms of score networks;
* :func:`markdown_table`, :func:`write_results` -- the JSON, markdown table and PNG of each experiment.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from splitdyn import PerturbationKernel
from splitdyn.checks import check_count, check_positive
from splitdyn.metrics import wasserstein_sliced
from splitdyn.score_matching import kernel_score_matching_loss

from splitdyn_cld import CLD, MixedScore, score_matching_objective
from splitdyn_cld.toy_models import cld_toy_score
from splitdyn_cld.training import make_ema, warmup_lr

__all__ = ["ToyTraining", "TrainLog", "cld_model", "cld_loss", "vpsde_loss", "train_toy", "sample_metrics", "evaluate_cld",
           "jacobian_frobenius", "markdown_table", "write_results", "machine", "settings_dict", "RESULTS_DIR",
           "add_toy_training_arguments", "add_output_arguments"]

#: Where the ablation scripts write their results by default.
RESULTS_DIR = Path("benchmarks/results")


def add_toy_training_arguments(parser, steps: int) -> None:
    """``--steps`` (default ``steps``), ``--batch-size`` and ``--width``: the toy training settings every ablation
    script shares (``parser`` a :class:`splitdyn_cld.cli.ScriptParser`)."""
    from splitdyn_cld.cli import positive_int

    parser.add_argument("--steps", type=positive_int, default=steps, help=f"training steps per run (default {steps})")
    parser.add_argument("--batch-size", type=positive_int, default=512)
    parser.add_argument("--width", type=positive_int, default=64)


def add_output_arguments(parser) -> None:
    """``--quick`` (tiny settings, for the tests) and ``--out`` (default :data:`RESULTS_DIR`)."""
    parser.add_argument("--quick", action="store_true", help="tiny settings (tests)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help=f"output folder (default {RESULTS_DIR})")


@dataclass
class ToyTraining:
    """Optimiser settings of a toy training run (see ``examples/toy_train.py``)."""

    steps: int = 2000
    batch_size: int = 512
    lr: float = 2e-3
    ema: float = 0.999
    width: int = 64
    blocks: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width"):
            check_count(name, getattr(self, name))
        check_count("blocks", self.blocks, minimum=0)
        check_count("seed", self.seed, minimum=0)
        check_positive("lr", self.lr)
        if not 0.0 < check_positive("ema", self.ema) < 1.0:
            raise ValueError(f"ema must lie in (0, 1), got {self.ema}")


@dataclass
class TrainLog:
    """What :func:`train_toy` records: per-step ``losses`` and ``grad_norms`` (before clipping) and the step of
    the first non-finite loss (``None`` for a stable run)."""

    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    nonfinite_step: int | None = None
    seconds: float = 0.0

    def summary(self, tail: int = 200) -> dict[str, Any]:
        """Final loss (mean of the last ``tail`` steps), its standard deviation, median and maximum gradient
        norms, the fraction of steps whose gradient norm exceeded the clipping threshold 1, and the non-finite
        step."""
        last = torch.tensor(self.losses[-tail:] or [math.nan], dtype=torch.float64)
        norms = torch.tensor(self.grad_norms or [math.nan], dtype=torch.float64)
        return {"final_loss": float(last.mean()), "final_loss_std": float(last.std()) if last.numel() > 1 else 0.0,
                "grad_norm_median": float(norms.median()), "grad_norm_max": float(norms.max()),
                "clipped_fraction": float((norms > 1.0).double().mean()),
                "nonfinite_step": self.nonfinite_step, "train_seconds": self.seconds}


def cld_model(cld: CLD, objective: str = "hsm", mixed: bool = True, width: int = 64, blocks: int = 4,
              event_shape=2) -> MixedScore:
    """A toy CLD velocity-score model; its :math:`\\ell_t` is the ``objective``'s kernel's."""
    if objective not in ("hsm", "dsm"):
        raise ValueError(f"objective must be 'hsm' or 'dsm', got {objective!r}")
    return cld_toy_score(cld, event_shape, width, blocks, mixed=mixed, kind=objective)


def cld_loss(cld: CLD, objective: str = "hsm", weighting: str = "ell") -> Callable:
    r"""``loss(model, x0, generator)``: the HSM (eq. 53) or DSM (eq. 54; :math:`v_0 \sim \mathcal N(0, \gamma M I)`)
    objective with :math:`\lambda = \ell_t^{-2}` (``"ell"``) or :math:`\Gamma\beta` (``"likelihood"``)."""
    if objective not in ("hsm", "dsm"):
        raise ValueError(f"objective must be 'hsm' or 'dsm', got {objective!r}")
    if weighting not in ("ell", "likelihood"):
        raise ValueError(f"weighting must be 'ell' or 'likelihood', got {weighting!r}")
    objective_fn = partial(score_matching_objective, kind=objective, weighting=weighting)
    return lambda model, x0, generator: objective_fn(model, x0, cld, generator=generator)


def vpsde_loss(sde, t_min: float = 1e-5) -> Callable:
    r"""``loss(model, x0, generator)``: the VPSDE's noise-prediction loss :math:`\|\varepsilon_\theta - \varepsilon\|^2`
    (DSM with :math:`\lambda = \sigma_t^2`), :math:`t \sim U[t_{min}, T)`."""

    def loss(model, x0, generator):
        t = t_min + (sde.T - t_min) * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        kernel = PerturbationKernel(sde, t, x0[:, None])
        return kernel_score_matching_loss(model, kernel, weight=kernel.covariance[:, 0, 0],
                                          generator=generator).mean()

    return loss


def train_toy(model: torch.nn.Module, loss_fn: Callable, data: Callable, training: ToyTraining
              ) -> tuple[torch.nn.Module, TrainLog]:
    """Train ``model`` on batches ``data(batch_size, generator)`` with ``loss_fn(model, x0, generator)``.

    Returns the EMA model (eval mode) and the :class:`TrainLog`. A non-finite loss or gradient norm ends the
    run before the parameters are touched; the log records the step.
    """
    import time

    if not isinstance(training, ToyTraining):
        raise TypeError(f"training must be a ToyTraining, got {type(training).__name__}")
    torch.manual_seed(training.seed)
    data_gen = torch.Generator().manual_seed(training.seed)
    noise_gen = torch.Generator().manual_seed(training.seed + 1)
    model.train()
    ema = make_ema(model, training.ema)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.lr)
    warmup = max(1, min(200, training.steps // 10))
    log, tic = TrainLog(), time.perf_counter()
    for step in range(training.steps):
        progress = max(0, step - warmup) / max(1, training.steps - warmup)
        lr = warmup_lr(step, training.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress))), warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_fn(model, data(training.batch_size, data_gen), noise_gen)
        if not bool(torch.isfinite(loss.detach())):
            log.nonfinite_step = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        if not math.isfinite(norm):
            log.nonfinite_step = step
            break
        optimizer.step()
        ema.update_parameters(model)
        log.losses.append(float(loss.detach()))
        log.grad_norms.append(norm)
    log.seconds = time.perf_counter() - tic
    return ema.module.eval(), log


def sample_metrics(samples: torch.Tensor, reference: torch.Tensor, mixture=None) -> dict[str, float]:
    r"""``sw2`` (sliced W2 to ``reference``), ``nll_samples`` (mean :math:`-\log p_{data}` under ``mixture``, if
    given) and ``nonfinite`` (samples with a NaN/inf coordinate, dropped before the metrics)."""
    x = samples.detach().double().cpu().reshape(samples.shape[0], -1)
    finite = torch.isfinite(x).all(1)
    out = {"nonfinite": int((~finite).sum())}
    x = x[finite]
    if x.shape[0] < 2:
        return dict(out, sw2=math.inf, nll_samples=math.inf)
    out["sw2"] = wasserstein_sliced(x, reference.double().reshape(reference.shape[0], -1),
                                    generator=torch.Generator().manual_seed(0))
    if mixture is not None:
        out["nll_samples"] = float((-mixture.log_prob(x)).mean())
    return out


def evaluate_cld(score, cld: CLD, reference: torch.Tensor, mixture=None, heldout: torch.Tensor | None = None, *,
                 sampler: str = "sscs", n_steps: int | None = 200, samples: int = 5000, seed: int = 0) -> dict:
    r"""Sample quality (:func:`sample_metrics` of ``samples`` draws of ``sampler`` with ``n_steps`` steps, uniform
    grid, denoising) and, with ``heldout`` data, the NLL bound of eq. 60 in nats (exact trace, mean over the
    points), for a CLD velocity score. A diverging sampler is reported as ``sw2 = inf``."""
    from splitdyn import DivergenceError

    from splitdyn_cld import nll_bound, sample

    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():  # the adaptive ODE solver keeps the autograd graph otherwise
            out = sample(cld, score, (samples, *reference.shape[1:]), n_steps, sampler, generator=g)
        row = dict(sample_metrics(out.components()[0], reference, mixture), nfe=out.nfe)
    except DivergenceError:
        row = {"sw2": math.inf, "nll_samples": math.inf, "nonfinite": samples, "nfe": None}
    if heldout is not None:
        try:
            with torch.enable_grad():
                bound = nll_bound(cld, score, heldout, trace="exact", generator=torch.Generator().manual_seed(seed))
            row["nll_bound"] = float(bound.nats.mean())
        except (DivergenceError, ValueError, AssertionError):
            row["nll_bound"] = math.inf
    return row


def jacobian_frobenius(fn: Callable[[torch.Tensor], torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Frobenius norm of the Jacobian of ``fn: (B, *in) -> (B, *out)`` (samples independent),
    one backward pass per output coordinate."""
    u = u.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(u).reshape(u.shape[0], -1)
        total = torch.zeros(u.shape[0], dtype=u.dtype)
        for i in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, i].sum(), u, retain_graph=i < out.shape[1] - 1)
            total = total + g.reshape(u.shape[0], -1).pow(2).sum(1)
    return total.detach()


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table: ``columns`` are ``(key, header, format)``; missing values print as ``-``."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, fmt) if fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    return value


def write_results(out_dir, name: str, payload: dict, table: str, figure=None, title: str = "") -> dict[str, Path]:
    """Write ``<name>.json`` (``payload``, non-finite numbers as strings), ``<name>.md`` (``title``, the command and
    machine from ``payload``, and ``table``) and ``<name>.png`` (the matplotlib ``figure``, closed after)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md"}
    paths["json"].write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    header = [f"## {title or name}", ""]
    if "command" in payload:
        header += [f"Command: `{payload['command'].strip()}` ({payload.get('machine', 'CPU')}).", ""]
    paths["md"].write_text("\n".join(header) + "\n" + table + "\n")
    if figure is not None:
        import matplotlib.pyplot as plt

        paths["png"] = out / f"{name}.png"
        figure.savefig(paths["png"], dpi=110)
        plt.close(figure)
    return paths


def machine() -> str:
    """A short description of this machine for the result files (CPU count and torch threads)."""
    import os
    import platform

    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def settings_dict(obj) -> dict:
    """``dataclasses.asdict`` of a settings object (for the JSON payloads)."""
    return asdict(obj)
