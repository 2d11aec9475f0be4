"""One optimisation step of an image CLD-SGM: the HSM (or DSM) loss of the mixed score, checks that the batch and the
loss are finite on every rank, back-propagation, gradient clipping and the optimiser step."""

from __future__ import annotations

import math

import torch

from ..losses import score_matching_objective
from ..process import CLD
from ..training import NonFiniteDataError, NonFiniteLossError, check_finite_loss
from .distributed import DistributedContext, reduce_mean

__all__ = ["train_step"]


def train_step(score_model: torch.nn.Module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, cld: CLD, *,
               parameters: list[torch.nn.Parameter] | None = None, grad_clip: float = 1.0,
               scaler: "torch.amp.GradScaler | None" = None, weighting: str = "ell", objective: str = "hsm",
               t_min: float = 1e-5,
               generator: torch.Generator | None = None, ctx: DistributedContext | None = None,
               step: int = 0) -> dict[str, float]:
    """One step of the ``objective`` (``"hsm"``, eq. 53, or ``"dsm"``, eq. 54) loss: loss, non-finite
    checks (all ranks agree), backward, unscale, clip, optimiser step.

    Returns ``{"loss": ..., "grad_norm": ...}`` (the loss averaged over the ranks; the gradient norm before
    clipping). Raises :class:`~splitdyn_cld.training.NonFiniteDataError` if a rank's batch ``x0`` holds
    NaN/inf, :class:`~splitdyn_cld.training.NonFiniteLossError` if the loss is NaN/inf, or (without a gradient
    scaler) if the gradient norm is -- always *before* touching the parameters. Each check reads a value on
    the host (a synchronisation on a GPU).
    """
    ctx = ctx or DistributedContext(device=x0.device)
    parameters = parameters if parameters is not None else [p for p in score_model.parameters() if p.requires_grad]
    if x0.is_floating_point():  # every rank learns whether any rank's batch is bad, then all stop together
        bad = reduce_mean((~torch.isfinite(x0)).sum().reshape(1).float(), ctx)
        bad_values = round(float(bad) * ctx.world_size)
        if bad_values:
            raise NonFiniteDataError(
                f"the training batch at step {step} holds {bad_values} non-finite value(s) (NaN or inf"
                f"{', summed over the ranks' if ctx.distributed else ''}): training stopped before the parameters "
                "were updated. Check the data files (a corrupt or wrongly scaled image?).")
    loss = score_matching_objective(score_model, x0, cld, kind=objective, weighting=weighting, t_min=t_min,
                                    generator=generator)
    reduced = reduce_mean(loss.detach().float().reshape(1), ctx)
    check_finite_loss(reduced, step)
    loss_value = float(reduced)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    foreach = True if x0.device.type in ("cpu", "cuda") else None  # one multi-tensor norm (and scaling)
    if grad_clip > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip, foreach=foreach)
    elif hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the norm alone, one multi-tensor call
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None], foreach=foreach)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
    grad_norm = float(grad_norm)
    if scaler is not None:  # fp16: the scaler skips steps with inf/NaN gradients and lowers its scale
        scaler.step(optimizer)
        scaler.update()
    else:
        if not math.isfinite(grad_norm):  # the same on every rank (gradients are all-reduced)
            optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the gradient norm is {grad_norm} at step {step} (finite loss {loss_value}): "
                                     "training stopped before the parameters were updated.")
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_value, "grad_norm": grad_norm}
