r"""Image datasets for CLD-SGMs in plain PyTorch/NumPy (no torchvision, no downloads).

Loaders return ``uint8`` tensors ``(N, C, H, W)``:

* :func:`load_cifar10` reads the standard "CIFAR-10 python version" from disk;
* :func:`load_image_folder` reads PNG/JPEG files (e.g. CelebA-HQ-256) with Pillow, centre-cropped and resized;
* :func:`load_digits_images` returns scikit-learn's bundled 8x8 handwritten digits (1797 images, offline);
* :func:`load_uint8` / :func:`load_test_uint8` dispatch on a dataset name.

Conversions between ``uint8`` and the network's :math:`[-1, 1]`:

* :func:`dequantize`: uniform dequantisation :math:`x = 2 (k + U)/256 - 1`, :math:`U \sim U[0, 1)`, for
  likelihood evaluation (see :func:`bits_per_dim_offset` for the bits/dim conversion);
* :func:`to_float`: the deterministic map :math:`k \mapsto k / 127.5 - 1` used for training;
* :func:`to_uint8`: :math:`\lfloor 128 (x + 1) \rfloor` clipped to ``0..255``, the exact inverse of both.

:class:`ImageDataset` wraps a ``uint8`` tensor as a :class:`torch.utils.data.Dataset` of float images in
:math:`[-1, 1]`, with optional random horizontal flips.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "CIFAR10_URL",
    "load_cifar10",
    "load_image_folder",
    "load_digits_images",
    "load_uint8",
    "load_test_uint8",
    "dequantize",
    "to_float",
    "to_uint8",
    "bits_per_dim_offset",
    "nats_to_bits_per_dim",
    "ImageDataset",
    "DataFileError",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Where the "CIFAR-10 python version" archive can be downloaded (by hand; nothing here downloads)."""



class DataFileError(ValueError):
    """A data file that exists but cannot be used (corrupt, truncated, or of the wrong kind); the message names
    the file and the problem."""


_CIFAR_DIR = "cifar-10-batches-py"
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------


def load_cifar10(root: str | os.PathLike, train: bool = True, return_labels: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR-10 from the "python version" files on disk.

    Expects ``root/cifar-10-batches-py/data_batch_1`` ... ``data_batch_5`` (training set, 50,000 images) and
    ``test_batch`` (10,000 images): pickled dicts with ``b"data"`` (``(N, 3072)`` uint8, channel-major rows)
    and ``b"labels"``. ``root`` may also be the ``cifar-10-batches-py`` folder itself. The files are read with
    :mod:`pickle`; only load files from a source you trust.

    Parameters
    ----------
    root:
        Folder holding ``cifar-10-batches-py`` (or that folder).
    train:
        The training batches (else the test batch).
    return_labels:
        Also return the labels as an ``int64`` tensor ``(N,)``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``uint8`` images ``(N, 3, 32, 32)`` (and labels).

    Raises
    ------
    FileNotFoundError
        If a batch file is missing; the message names the expected path and how to get the data.
    DataFileError
        If a batch file is corrupt (e.g. truncated or junk bytes); the message names the file.
    """
    root = Path(root).expanduser()
    folder = root if root.name == _CIFAR_DIR and not (root / _CIFAR_DIR).is_dir() else root / _CIFAR_DIR
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [folder / n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: expected {missing[0]} (python version, files "
            f"{', '.join(names)} in {folder}). Nothing is downloaded automatically: download {CIFAR10_URL} "
            f"and extract it into {root} (e.g. `tar xzf cifar-10-python.tar.gz -C {root}`), then pass "
            f"root={str(root)!r}."
        )
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
                IndexError, KeyError, UnicodeDecodeError) as exc:
            problem = "it is empty" if path.stat().st_size == 0 else f"it cannot be unpickled: {type(exc).__name__}: {exc}"
            raise DataFileError(f"{path} is not a CIFAR-10 python batch ({problem}); re-extract "
                                "cifar-10-python.tar.gz") from None
        try:
            data, lab = batch[b"data"], batch[b"labels"]
        except (KeyError, TypeError, IndexError) as exc:
            raise DataFileError(f"{path} is not a CIFAR-10 python batch (no b'data'/b'labels')") from exc
        try:
            data = np.asarray(data, dtype=np.uint8)
        except (TypeError, ValueError) as exc:
            raise DataFileError(f"{path}: b'data' is not an array of bytes ({exc})") from None
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataFileError(f"{path}: b'data' must have shape (N, 3072), got {data.shape}")
        if len(lab) != len(data):
            raise DataFileError(f"{path}: {len(lab)} labels for {len(data)} images")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(lab, dtype=np.int64))
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))
    if return_labels:
        return x, torch.from_numpy(np.concatenate(labels))
    return x


def _import_pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise ImportError("reading image folders needs Pillow: pip install pillow (it also comes with "
                          "matplotlib)") from exc
    return Image


def load_image_folder(root: str | os.PathLike, image_size: int, extensions: Sequence[str] = _IMAGE_EXTENSIONS,
                      max_images: int | None = None) -> torch.Tensor:
    """Read every PNG/JPEG under ``root`` (recursively, in sorted path order) as RGB ``uint8`` images.

    Each image is centre-cropped to a square (side = its shorter side) and resized to ``image_size`` with
    Pillow's bicubic filter (antialiased when shrinking). All images are held in memory: CelebA-HQ at 256x256
    (30,000 images) takes about 5.9 GB.

    Parameters
    ----------
    root:
        A folder of images (subfolders are searched too).
    image_size:
        Side length of the output images.
    extensions:
        File name endings to read (case-insensitive).
    max_images:
        Read at most this many (the first in sorted order).

    Returns
    -------
    torch.Tensor
        ``uint8`` images ``(N, 3, image_size, image_size)``.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist or holds no matching file.
    DataFileError
        If an image file cannot be decoded (corrupt or truncated); the message names the file.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected a folder of "
                                f"{'/'.join(e.lstrip('.').upper() for e in extensions)} files)")
    exts = tuple(e.lower() for e in extensions)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if max_images is not None:
        files = files[:max_images]
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(exts)}) found under {root}")
    Image = _import_pil()
    out = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                img = img.crop((left, top, left + side, top + side))
                if side != image_size:
                    img = img.resize((image_size, image_size), Image.BICUBIC)
                out[i] = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: unidentified, truncated or broken files
            raise DataFileError(f"cannot read the image {path}: {exc} (a corrupt or truncated file? remove or "
                                "replace it)") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def load_digits_images(train: bool | None = None, return_labels: bool = False
                       ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 handwritten digits as ``uint8`` images ``(N, 1, 8, 8)`` (no network access).

    The 17 grey levels ``0..16`` are mapped to ``round(k * 255 / 16)`` (0, 16, 32, ..., 255).

    Parameters
    ----------
    train:
        ``None``: all 1797 images; ``True`` / ``False``: a fixed split of 1437 training / 360 test images (a
        permutation drawn with seed 0, the same on every machine).
    return_labels:
        Also return the digit labels as an ``int64`` tensor ``(N,)``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)

    Raises
    ------
    ImportError
        If scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn "
                          "(or install this project with its 'images' extra: pip install -e '.[images]')") from exc
    bunch = load_digits()
    levels = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8) in 0..16
    images = np.rint(levels * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    if train is not None:
        perm = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(images))
        idx = np.sort(perm[_DIGITS_TEST_SIZE:] if train else perm[:_DIGITS_TEST_SIZE])
        images, labels = images[idx], labels[idx]
    x = torch.from_numpy(np.ascontiguousarray(images))
    return (x, torch.from_numpy(labels)) if return_labels else x


def load_uint8(name: str, root: str | os.PathLike | None = None, *, train: bool = True,
               image_size: int | None = None) -> torch.Tensor:
    """Load a dataset by name as ``uint8`` images ``(N, C, H, W)``.

    Parameters
    ----------
    name:
        ``"digits"`` (scikit-learn, offline), ``"cifar10"`` (needs ``root``, see :func:`load_cifar10`) or
        ``"folder"`` (needs ``root`` and ``image_size``; a folder has no train/test split, every image is read).
    root:
        Data location for ``cifar10`` / ``folder``.
    train:
        Training or test split (digits, CIFAR-10).
    image_size:
        Output size for ``folder``.

    Returns
    -------
    torch.Tensor
    """
    if name == "digits":
        return load_digits_images(train=train)
    if name == "cifar10":
        if root is None:
            raise ValueError("the cifar10 dataset needs root (the folder holding cifar-10-batches-py)")
        return load_cifar10(root, train=train)
    if name == "folder":
        if root is None or image_size is None:
            raise ValueError("the folder dataset needs root and image_size")
        return load_image_folder(root, image_size)
    raise ValueError(f"dataset must be 'digits', 'cifar10' or 'folder', got {name!r}")


def load_test_uint8(name: str, root: str | os.PathLike | None = None, image_size: int | None = None
                    ) -> torch.Tensor:
    """The test split of a dataset as ``uint8`` images: :func:`load_uint8` with ``train=False``.

    Parameters
    ----------
    name, root, image_size:
        As for :func:`load_uint8`.

    Returns
    -------
    torch.Tensor
    """
    return load_uint8(name, root, train=False, image_size=image_size)


# ---------------------------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------------------------


def _check_uint8(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 tensor, got {getattr(x, 'dtype', type(x))}")


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Uniform dequantisation of 8-bit images to :math:`[-1, 1)`: :math:`y = 2 (k + U) / 256 - 1`.

    :math:`U \sim U[0, 1)` independently per entry (drawn in float64 from ``generator`` on ``x``'s device).
    Each level ``k`` owns the bin :math:`[k/128 - 1, (k+1)/128 - 1)` of width :math:`2/256`; a value that
    rounding to ``dtype`` would push onto the upper edge is moved one ulp down, so
    ``to_uint8(dequantize(x)) == x`` holds exactly.

    Parameters
    ----------
    x:
        ``uint8`` tensor of any shape.
    generator:
        Random generator (on ``x``'s device).
    dtype:
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
    """
    _check_uint8(x)
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
    y = ((x.to(torch.float64) + noise) / 128.0 - 1.0).to(dtype)
    too_high = torch.floor((y.to(torch.float64) + 1.0) * 128.0) > x.to(torch.float64)
    if bool(too_high.any()):
        y = torch.where(too_high, torch.nextafter(y, torch.full_like(y, -2.0)), y)
    return y


def to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Deterministic map of 8-bit images to :math:`[-1, 1]`: :math:`k \mapsto k / 127.5 - 1`.

    The training-data convention of the reference implementations (``0 -> -1``, ``255 -> 1``).

    Parameters
    ----------
    x:
        ``uint8`` tensor.
    dtype:
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
    """
    _check_uint8(x)
    return x.to(dtype) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    r"""Floating images in :math:`[-1, 1]` to ``uint8``: :math:`\lfloor 128 (x + 1) \rfloor` clipped to ``0..255``.

    The exact inverse of :func:`dequantize` (level ``k`` owns :math:`[k/128 - 1, (k+1)/128 - 1)`) and of
    :func:`to_float` (:math:`128 (k/127.5) = k + k/255 \in [k, k+1)`, and 255 is clipped). Values outside
    :math:`[-1, 1]` (e.g. model samples) are clipped; NaNs become 0.

    Parameters
    ----------
    x:
        Floating tensor of any shape.

    Returns
    -------
    torch.Tensor
        ``uint8`` tensor of the same shape (on the same device).
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    y = torch.floor((x.detach().to(torch.float64) + 1.0) * 128.0)
    return torch.nan_to_num(y, nan=0.0).clamp(0, 255).to(torch.uint8)


def bits_per_dim_offset(levels: int = 256) -> float:
    r"""Constant that turns a continuous NLL on :math:`[-1, 1]` into bits/dim of the discrete data.

    With uniform dequantisation (:func:`dequantize`) each of the ``levels`` values owns a bin of width
    :math:`2/\text{levels}` after scaling to :math:`[-1, 1]` (the map :math:`[0, \text{levels}) \to [-1, 1)`
    multiplies every coordinate by :math:`2/\text{levels}`). The discrete probability of an image is at least
    :math:`\mathbb{E}_U\,p(y)\,(2/\text{levels})^D` (Jensen), so with :math:`D` data dimensions and the NLL
    :math:`-\log p(y)` in nats,

    .. math::

        \text{bits/dim} = \frac{\text{NLL}}{D \ln 2} - \log_2\frac{2}{\text{levels}}
        = \frac{\text{NLL}}{D \ln 2} + \log_2\frac{\text{levels}}{2},

    i.e. an offset of :math:`\log_2 128 = 7` for 8-bit images (the paper's convention). For CLD, :math:`D`
    counts only the data dimensions (not the velocities).

    Parameters
    ----------
    levels:
        Number of discrete levels per dimension (256 for 8-bit images).

    Returns
    -------
    float
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    return math.log2(levels / 2)


def nats_to_bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int, levels: int = 256
                         ) -> torch.Tensor | float:
    r"""``nll_nats / (num_dims * ln 2) + bits_per_dim_offset(levels)`` (see :func:`bits_per_dim_offset`).

    Parameters
    ----------
    nll_nats:
        Continuous NLL per image on :math:`[-1, 1]`, in nats.
    num_dims:
        Data dimensions per image, e.g. ``3 * 32 * 32``.
    levels:
        Discrete levels per dimension.

    Returns
    -------
    torch.Tensor or float
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return nll_nats / (num_dims * math.log(2.0)) + bits_per_dim_offset(levels)


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    r"""A :class:`torch.utils.data.Dataset` of float images in :math:`[-1, 1]` backed by a ``uint8`` tensor.

    Items are ``(C, H, W)`` float32 tensors: :func:`to_float` of the stored image, or :func:`dequantize` of
    it with ``dequantize=True``. Random flips and dequantisation noise come from torch's global random state
    (seeded per worker by :class:`~torch.utils.data.DataLoader`); for bit-exact resumable training, keep
    both off here and flip the batch with an explicit generator instead.

    Parameters
    ----------
    images:
        ``uint8`` tensor ``(N, C, H, W)``.
    random_flip:
        Flip each item horizontally with probability 1/2.
    dequantize:
        Add uniform dequantisation noise (:func:`dequantize`) instead of the deterministic :func:`to_float`.
    labels:
        Optional labels ``(N,)``; then items are ``(image, label)`` pairs.
    """

    def __init__(self, images: torch.Tensor, random_flip: bool = False, dequantize: bool = False,
                 labels: torch.Tensor | None = None) -> None:
        _check_uint8(images)
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.labels = labels
        self.random_flip = bool(random_flip)
        self.dequantize = bool(dequantize)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one item."""
        return tuple(self.images.shape[1:])

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        img = self.images[index]
        x = dequantize(img) if self.dequantize else to_float(img)
        if self.random_flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x if self.labels is None else (x, self.labels[index])
