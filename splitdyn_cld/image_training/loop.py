"""The image training loop :func:`train`: HSM (or DSM) loss with the mixed score, Adam with a linear warm-up, gradient
clipping, EMA, mixed precision, optional ``torch.compile``, DDP, atomic checkpoints with exact resume, CSV (and
TensorBoard) logs, sample grids, and a clear stop on a non-finite loss or batch."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints import save_checkpoint
from ..score import MixedScore
from ..training import CSVLogger, NonFiniteDataError, NonFiniteLossError, make_ema, set_rng_state, warmup_lr
from .checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, load_state_into, read_training_checkpoint,
                         remove_checkpoint_temporaries)
from .data_stream import BatchStream, build_dataset
from .distributed import (DistributedContext, cleanup_distributed, env_int, gather_rng_states, setup_distributed,
                          split_global_batch)
from .logs import TensorBoardLogger, main_print
from .model import build_cld, build_score_model, image_shape_of, net_config_for, resolve_precision
from .sampling import generate_images, save_image_grid
from .settings import TrainSettings
from .step import train_step

__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    history:
        Per-step ``{"step", "loss", "grad_norm", "lr"}`` of this run (the loss averaged over the ranks).
    step:
        The final step.
    checkpoint, out:
        Paths of the checkpoint and the output folder.
    model, ema:
        The trained :class:`~splitdyn_cld.image_training.model.UNetVelocityNet` (unwrapped) and its EMA (an ``AveragedModel``).
    rank:
        This process's rank.
    """

    history: list[dict[str, float]]
    step: int
    checkpoint: Path
    out: Path
    model: torch.nn.Module | None = None
    ema: torch.nn.Module | None = None
    rank: int = 0


def train(settings: TrainSettings) -> TrainResult:
    r"""Train an image CLD-SGM with ``settings``; under ``torchrun`` call it on every rank (only rank 0 writes).

    Each step draws a per-rank batch of ``batch_size / world_size`` images, evaluates the HSM loss (eq. 9/53,
    :math:`t \sim U[t_{min}, 1)`) of the mixed score, checks it is finite on every rank, back-propagates (DDP
    averages the gradients), clips the gradient norm, takes an Adam step at the warmed-up learning rate and
    updates the EMA.

    Files in ``settings.out`` (rank 0): ``checkpoint.pt`` (atomic; model, EMA, optimiser, grad scaler, step,
    every rank's RNG states, data order, settings, network config), optionally ``checkpoint_<step>.pt``
    snapshots, ``train_log.csv`` (step, loss averaged over the logging interval, gradient norm, learning rate,
    images/s, epoch), ``samples/step_<step>.png`` (SSCS samples of the EMA model) and ``tensorboard/`` if
    TensorBoard is installed. With ``settings.resume`` the run continues from ``checkpoint.pt``, bit for bit on
    the CPU when the world size is unchanged, after checking its checksum and that the settings which define
    the run (:data:`~splitdyn_cld.image_training.settings.RUN_DEFINING_SETTINGS`, the network configuration)
    are the checkpoint's. Temporary files of an interrupted checkpoint write are removed at the start.

    Raises
    ------
    splitdyn_cld.training.NonFiniteLossError
        On a NaN/inf loss (:class:`~splitdyn_cld.training.NonFiniteDataError` on a NaN/inf batch), with the step
        and the path of the last good checkpoint (left untouched).
    splitdyn_cld.checkpoints.CheckpointError
        With ``settings.resume``, if the checkpoint is corrupt or of another kind of run.
    splitdyn_cld.checkpoints.SettingsMismatchError
        With ``settings.resume``, if settings that define the run differ from the checkpoint's and
        ``settings.override_settings`` is off (the message lists the differences).
    """
    split_global_batch(settings.batch_size, env_int("WORLD_SIZE", 1))  # fail before any process group
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    ctx = setup_distributed(settings.device)
    try:
        return _train(settings, ctx)
    finally:
        cleanup_distributed(ctx)


def _train(s: TrainSettings, ctx: DistributedContext) -> TrainResult:
    per_rank_batch = split_global_batch(s.batch_size, ctx.world_size)
    precision, autocast_dtype = resolve_precision(s.precision, ctx.device)
    out = Path(s.out)
    ckpt_path = out / CHECKPOINT_NAME
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in remove_checkpoint_temporaries(out):
            main_print(ctx, f"removed {stale}, a temporary file left by a checkpoint write that was interrupted")
    ctx.barrier()

    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    net_config = net_config_for(s)
    image_shape = image_shape_of(net_config)
    cld = build_cld(s)
    torch.manual_seed(s.seed)  # identical initialisation on every rank (DDP also broadcasts rank 0's weights)
    score_model, net = build_score_model(net_config, cld, s.mixed, autocast_dtype, kind=s.objective)
    net.to(ctx.device)
    ema = make_ema(net, s.ema_decay, warmup=True)
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=s.lr)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")

    trained: torch.nn.Module = net
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(trained, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if s.compile:  # compile the DDP-wrapped module (DDP's graph breaks at bucket boundaries overlap communication)
        trained = torch.compile(trained)
    train_model = MixedScore(trained, cld, mixed=s.mixed, kind=s.objective)

    dataset = build_dataset(s.dataset, s.data_root, image_shape, train=True, seed=s.seed)
    stream = BatchStream(dataset, ctx, per_rank_batch, s.seed, s.num_workers)
    generator = torch.Generator(ctx.device).manual_seed(s.seed * 65_537 + 1 + ctx.rank)
    torch.manual_seed(s.seed * 65_537 + 2 + ctx.rank)  # dropout etc.: a stream per rank

    step = 0
    if s.resume and ckpt_path.is_file():
        state, differences = read_training_checkpoint(ckpt_path, s, net_config)
        if differences:
            main_print(ctx, f"note: --override-settings: resuming {ckpt_path} with different settings "
                            f"({'; '.join(differences)})")
        for what, target, key in (("weights", net.unet, "model"), ("EMA weights", ema, "ema"),
                                  ("optimiser state", optimizer, "optimizer"), ("gradient scaler", scaler, "scaler")):
            load_state_into(ckpt_path, what, target, state[key])
        stream.load_state(state["data"])
        step = int(state["step"])
        if state["world_size"] == ctx.world_size:
            set_rng_state(state["rng"][ctx.rank], {"loss": generator})
        else:
            main_print(ctx, f"note: checkpoint written with world size {state['world_size']}, resuming on "
                        f"{ctx.world_size}: data order and noise continue but not bit-for-bit")
            stream.load_state({"epoch": stream.epoch + 1, "batch": 0})
        main_print(ctx, f"resumed from {ckpt_path} at step {step}")
    elif s.resume:
        main_print(ctx, f"--resume: no checkpoint at {ckpt_path}, starting from scratch")

    def save(at_step: int) -> None:
        rng = gather_rng_states(ctx, {"loss": generator})
        if ctx.is_main:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "step": at_step,
                "model": net.unet.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng,
                "data": stream.state(),
                "world_size": ctx.world_size,
                "settings": dataclasses.asdict(s),
                "net_config": dataclasses.asdict(net_config),
                "precision": precision,
            }
            save_checkpoint(ckpt_path, payload)
            if s.snapshot_every and at_step % s.snapshot_every == 0:
                save_checkpoint(out / f"checkpoint_{at_step:07d}.pt", payload)
        ctx.barrier()

    def sample_grid(at_step: int) -> None:
        if ctx.is_main and s.sample_count > 0:
            ema_model = MixedScore(ema.module, cld, mixed=s.mixed, kind=s.objective).eval()
            g = torch.Generator(ctx.device).manual_seed(s.seed + 12345)
            images, _ = generate_images(ema_model, cld, s.sample_count, image_shape, sampler="sscs",
                                        n_steps=s.sample_steps, grid=s.sample_grid, batch_size=s.sample_count,
                                        generator=g, device=ctx.device)
            save_image_grid(images, out / "samples" / f"step_{at_step:07d}.png")
        ctx.barrier()

    fields = ["step", "loss", "grad_norm", "lr", "images_per_s", "epoch"]
    logger = CSVLogger(out / "train_log.csv", fieldnames=fields, resume_step=step if step > 0 else None) \
        if ctx.is_main else None
    tensorboard = TensorBoardLogger(out / "tensorboard", s.tensorboard and ctx.is_main)
    history: list[dict[str, float]] = []
    progress = None
    if ctx.is_main and s.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=s.steps, initial=step, desc="train", dynamic_ncols=True)
    net.train()
    tic, images_seen, interval_losses = time.perf_counter(), 0, []
    try:
        while step < s.steps:
            x0 = next(stream).to(ctx.device, non_blocking=True).float()
            if s.random_flip:
                flip = torch.rand(x0.shape[0], generator=generator, device=ctx.device) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            lr = warmup_lr(step, s.lr, s.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                stats = train_step(train_model, optimizer, x0, cld, parameters=parameters, grad_clip=s.grad_clip,
                                   scaler=scaler if precision == "fp16" else None, weighting=s.weighting,
                                   objective=s.objective,
                                   t_min=s.t_min, generator=generator, ctx=ctx, step=step + 1)
            except NonFiniteLossError as exc:
                last = f"the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else "no checkpoint was written yet"
                advice = ("Fix the data, then resume it with --resume." if isinstance(exc, NonFiniteDataError) else
                          "Resume it with --resume, e.g. with a lower --lr, a longer --warmup, or --precision "
                          "bf16/fp32 instead of fp16.")
                raise type(exc)(f"{exc}\nTraining stopped; {last} (left untouched). {advice}") from None
            ema.update_parameters(net)
            step += 1
            images_seen += s.batch_size
            row = {"step": step, "loss": stats["loss"], "grad_norm": stats["grad_norm"], "lr": lr}
            history.append(row)
            interval_losses.append(stats["loss"])
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{stats['loss']:.4g}")
            if step % s.log_every == 0 or step == s.steps:
                elapsed = time.perf_counter() - tic
                row = dict(row, loss=sum(interval_losses) / len(interval_losses),
                           images_per_s=images_seen / max(elapsed, 1e-9), epoch=stream.epoch)
                tic, images_seen, interval_losses = time.perf_counter(), 0, []
                if logger is not None:
                    logger.log(row)
                tensorboard.log(row, step)
            if s.ckpt_every and step % s.ckpt_every == 0 or step == s.steps:
                save(step)
            if s.sample_every and step % s.sample_every == 0 or (step == s.steps and s.sample_every):
                sample_grid(step)
    finally:
        if progress is not None:
            progress.close()
        tensorboard.close()
        if logger is not None:
            logger.close()
    return TrainResult(history=history, step=step, checkpoint=ckpt_path, out=out, model=net, ema=ema, rank=ctx.rank)
