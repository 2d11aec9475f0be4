"""Sampling images from a trained model (:func:`generate_images`) and tiling them into a PNG
(:func:`save_image_grid`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from splitdyn.checks import check_count

from ..process import CLD
from ..samplers import sample

__all__ = ["save_image_grid", "generate_images"]


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 1,
                    scale: int | None = None) -> Path:
    """Tile images ``(N, C, H, W)`` in :math:`[-1, 1]` (or uint8) into one PNG (matplotlib, no GUI).

    ``scale`` enlarges every pixel to ``scale x scale`` (nearest neighbour); by default small images are
    enlarged to at least 32 pixels (8x8 digits: 4x).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image

    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    from ..data import to_uint8

    x = images.cpu() if images.dtype == torch.uint8 else to_uint8(images.cpu())
    scale = scale or max(1, math.ceil(32 / max(x.shape[-2:])))
    if scale > 1:
        x = x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, top:top + h, left:left + w] = x[i]
    array = canvas.permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if c == 1:
        matplotlib.image.imsave(path, array[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        matplotlib.image.imsave(path, array)
    return path


@torch.no_grad()
def generate_images(score_model, cld: CLD, count: int, image_shape: tuple[int, int, int], *, sampler: str = "sscs",
                    n_steps: int = 100, grid: str = "quadratic", eps: float = 1e-3, batch_size: int = 256,
                    rtol: float = 1e-5, atol: float = 1e-5, denoise: bool = True,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    progress: bool = False) -> tuple[torch.Tensor, float]:
    """Draw ``count`` images with a CLD sampler (``"sscs"``, ``"em"`` or ``"ode"``), clamped to :math:`[-1, 1]`.

    The images are drawn ``batch_size`` at a time; the progress bar counts images. Returns the images
    ``(count, C, H, W)`` (float32, CPU) and the mean NFE per batch.
    """
    if sampler not in ("sscs", "em", "ode"):
        raise ValueError(f"sampler must be 'sscs', 'em' or 'ode', got {sampler!r}")
    count = check_count("count", count, minimum=0)
    batch_size = check_count("batch_size", batch_size)
    if sampler != "ode":
        n_steps = check_count("n_steps", n_steps)
    device = torch.device(device)
    outputs, nfes = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=count, desc=f"{sampler} x{n_steps}" if sampler != "ode" else "ode", unit="image",
                   leave=False)
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        kwargs = dict(eps=eps, denoise=denoise, generator=generator, device=device, dtype=torch.float32)
        if sampler == "ode":
            result = sample(cld, score_model, (n, *image_shape), None, "ode", rtol=rtol, atol=atol, **kwargs)
        else:
            result = sample(cld, score_model, (n, *image_shape), n_steps, sampler, grid=grid, **kwargs)
        outputs.append(result.components()[0].clamp(-1, 1).float().cpu())
        nfes.append(result.nfe)
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    images = torch.cat(outputs) if outputs else torch.empty(0, *image_shape)
    return images, (sum(nfes) / len(nfes) if nfes else 0.0)
