r"""Sample-quality metrics for image CLD-SGMs: Fréchet distances in a feature space.

The Fréchet distance between the Gaussians fitted to two sets of features (Heusel et al., 2017),

.. math::

    d^2\big(\mathcal N(\mu_1, \Sigma_1), \mathcal N(\mu_2, \Sigma_2)\big)
    = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
      - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2},

is the FID when the features are Inception-v3 pool features (the paper's CIFAR-10 metric, Sec. 5, with 50k
samples). Two feature spaces are provided:

* Inception-v3 (FID) through ``torchmetrics`` (torch-fidelity's port of the TF-slim Inception) or
  ``clean-fid`` (the TorchScript port), when installed *and* given the weights file: nothing is downloaded
  (:func:`inception_feature_extractor`).
* The penultimate layer of a small classifier trained on scikit-learn's 8x8 digits
  (:class:`DigitsClassifier`, trained by ``examples/train_digits_classifier.py``): a quality number for the
  digits models that needs no download.

The trace term uses the symmetric form above, computed with two symmetric eigendecompositions in float64, so
it needs no general matrix square root and is exact up to round-off for positive semi-definite inputs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FeatureStatistics",
    "frechet_distance",
    "feature_statistics",
    "DigitsClassifier",
    "save_digits_classifier",
    "load_digits_classifier",
    "InceptionWeightsMissingError",
    "inception_feature_extractor",
    "check_inception_weights",
    "extract_features",
    "INCEPTION_WEIGHTS_HELP",
]


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureStatistics:
    """Mean ``(d,)`` and covariance ``(d, d)`` (float64) of ``n`` feature vectors."""

    mean: torch.Tensor
    covariance: torch.Tensor
    n: int

    def save(self, path: str | os.PathLike) -> None:
        """Write ``mu``, ``sigma`` and ``n`` to an ``.npz`` file (the layout FID tools use)."""
        np.savez(path, mu=self.mean.numpy(), sigma=self.covariance.numpy(), n=self.n)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStatistics":
        """Read statistics saved by :meth:`save` (or any ``.npz`` with ``mu`` and ``sigma``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature statistics file not found: {path}")
        with np.load(path) as f:
            if "mu" not in f or "sigma" not in f:
                raise ValueError(f"{path} must hold arrays 'mu' and 'sigma', found {sorted(f.files)}")
            n = int(f["n"]) if "n" in f else -1
            return cls(torch.from_numpy(f["mu"]).double(), torch.from_numpy(f["sigma"]).double(), n)


def feature_statistics(features: torch.Tensor) -> FeatureStatistics:
    """Mean and unbiased covariance (float64) of features of shape ``(n, d)``, ``n >= 2``."""
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (n, d) with n >= 2, got {tuple(features.shape)}")
    f = features.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features contain NaN or inf")
    mean = f.mean(0)
    centred = f - mean
    covariance = centred.T @ centred / (f.shape[0] - 1)
    return FeatureStatistics(mean, covariance, int(f.shape[0]))


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, eigenvectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    return (eigenvectors * eigenvalues.clamp_min(0.0).sqrt()) @ eigenvectors.T


def frechet_distance(a: FeatureStatistics | torch.Tensor, b: FeatureStatistics | torch.Tensor) -> float:
    r"""Squared Fréchet distance between the Gaussians fitted to two feature sets (the FID formula).

    Parameters
    ----------
    a, b:
        :class:`FeatureStatistics` or raw features ``(n, d)``.

    Returns
    -------
    float
        :math:`\|\mu_a-\mu_b\|^2 + \operatorname{tr}\Sigma_a + \operatorname{tr}\Sigma_b
        - 2\operatorname{tr}(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2})^{1/2}` (non-negative; 0 for equal
        statistics).
    """
    a = a if isinstance(a, FeatureStatistics) else feature_statistics(a)
    b = b if isinstance(b, FeatureStatistics) else feature_statistics(b)
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature dimensions differ: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)}")
    sqrt_a = _psd_sqrt(a.covariance.double())
    middle = sqrt_a @ b.covariance.double() @ sqrt_a
    eigenvalues = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0.0)
    trace_sqrt = eigenvalues.sqrt().sum()
    diff = a.mean.double() - b.mean.double()
    value = diff @ diff + torch.trace(a.covariance.double()) + torch.trace(b.covariance.double()) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


@torch.no_grad()
def extract_features(extractor: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor | Iterable[torch.Tensor],
                     batch_size: int = 256, device: torch.device | str | None = None) -> torch.Tensor:
    """Apply ``extractor`` batch-wise to ``images`` (a tensor ``(n, ...)`` or an iterable of batches).

    Returns the features as one float64 CPU tensor ``(n, d)``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    out = []
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        out.append(extractor(batch).reshape(batch.shape[0], -1).to("cpu", torch.float64))
    if not out:
        raise ValueError("images is empty")
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# Digits classifier: a download-free feature space for the 8x8 digits models
# ---------------------------------------------------------------------------------------------------------------


class DigitsClassifier(torch.nn.Module):
    """A small CNN on images in :math:`[-1, 1]`; its pooled penultimate activations are the feature space.

    Parameters
    ----------
    channels:
        Image channels (1 for the digits).
    width:
        Channels of the hidden convolutions; the feature dimension is ``2 * width``.
    num_classes:
        Output classes (10).
    """

    def __init__(self, channels: int = 1, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("width", width), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.hparams = {"channels": channels, "width": width, "num_classes": num_classes}
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, width, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.Conv2d(width, width, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            torch.nn.SiLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(2 * width, num_classes)

    @property
    def feature_dim(self) -> int:
        """Dimension of :meth:`features`."""
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(batch, 2 * width)`` of images ``(batch, C, H, W)`` in :math:`[-1, 1]`."""
        if x.ndim != 4 or x.shape[1] != self.hparams["channels"]:
            raise ValueError(f"x must have shape (batch, {self.hparams['channels']}, H, W), got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(batch, num_classes)``."""
        return self.head(self.features(x))


def save_digits_classifier(path: str | os.PathLike, model: DigitsClassifier, **metadata) -> None:
    """Save the classifier's weights, architecture and ``metadata`` (e.g. test accuracy) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"hparams": dict(model.hparams), "state_dict": model.state_dict(), "metadata": metadata}, tmp)
    os.replace(tmp, path)


def load_digits_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> DigitsClassifier:
    """Load a classifier saved by :func:`save_digits_classifier` (in eval mode).

    Raises
    ------
    FileNotFoundError
        With the command that trains one, if ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"digits classifier not found at {path}. Train it first (about a minute on a CPU, no download):\n"
            f"    python examples/train_digits_classifier.py --out {path}"
        )
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = DigitsClassifier(**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    model.metadata = payload.get("metadata", {})
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# Inception features (FID): optional backends, never downloading
# ---------------------------------------------------------------------------------------------------------------

#: The message shown when FID is asked for without a usable Inception weights file: where to put it.
#:
#: :meta hide-value:
INCEPTION_WEIGHTS_HELP = """\
FID needs the Inception-v3 weights file, passed with --inception-weights PATH (nothing is downloaded):
  * backend 'torchmetrics' (pip install torchmetrics torch-fidelity): the torch-fidelity port of the TF
    Inception, file 'weights-inception-2015-12-05-6726825d.pth' (torch-fidelity's release asset);
  * backend 'clean-fid' (pip install clean-fid): the TorchScript port, file 'inception-2015-12-05.pt'
    (the file clean-fid would otherwise download into /tmp).
Download the file on a machine with internet access, copy it e.g. to ~/.cache/splitdyn/ and pass its path."""


class InceptionWeightsMissingError(FileNotFoundError):
    """The Inception weights file for FID was not given or does not exist."""


def check_inception_weights(path) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` or raise :class:`InceptionWeightsMissingError` (naming the
    ``--inception-weights`` flag and the expected files) if it is ``None`` or not a file."""
    if path is None:
        raise InceptionWeightsMissingError(f"no Inception weights file given.\n{INCEPTION_WEIGHTS_HELP}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsMissingError(f"Inception weights file not found: {path}\n{INCEPTION_WEIGHTS_HELP}")
    return path


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Images in :math:`[-1, 1]` (float) or uint8, 1 or 3 channels -> uint8 RGB ``(B, 3, H, W)``."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (batch, 1 or 3, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        from .data import to_uint8

        images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def inception_feature_extractor(weights: str | os.PathLike | None, backend: str = "auto",
                                device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping images (``[-1, 1]`` floats or uint8, ``(B, C, H, W)``) to 2048-d Inception features.

    Parameters
    ----------
    weights:
        Path of the Inception weights file (see :data:`INCEPTION_WEIGHTS_HELP`); required.
    backend:
        ``"torchmetrics"``, ``"clean-fid"`` or ``"auto"`` (the first one installed).
    device:
        Where the network runs.

    Raises
    ------
    InceptionWeightsMissingError
        ``weights`` is missing; the message names the flag and the expected file.
    ImportError
        No backend is installed.
    """
    weights = check_inception_weights(weights)
    if backend not in ("auto", "torchmetrics", "clean-fid"):
        raise ValueError(f"backend must be 'auto', 'torchmetrics' or 'clean-fid', got {backend!r}")
    if backend == "auto":
        if _installed("torchmetrics") and _installed("torch_fidelity"):
            backend = "torchmetrics"
        elif _installed("cleanfid"):
            backend = "clean-fid"
        else:
            raise ImportError("FID needs torchmetrics (with torch-fidelity) or clean-fid: "
                              "pip install torchmetrics torch-fidelity   or   pip install clean-fid")
    if backend == "torchmetrics":
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=2048, normalize=False,
                                          feature_extractor_weights_path=str(weights)).to(device)
        network = metric.inception.eval()

        def torchmetrics_features(images: torch.Tensor) -> torch.Tensor:
            return network(_to_uint8_rgb(images).to(device))

        return torchmetrics_features
    # clean-fid's TorchScript Inception: images in [0, 255] (float), resized to 299 x 299 with a bicubic filter
    # first (clean-fid resizes with PIL; antialiased bicubic interpolation is the closest tensor equivalent).
    if not _installed("cleanfid"):
        raise ImportError("backend 'clean-fid' needs: pip install clean-fid")
    network = torch.jit.load(str(weights), map_location=device).eval()

    def cleanfid_features(images: torch.Tensor) -> torch.Tensor:
        x = _to_uint8_rgb(images).to(device).float()
        x = F.interpolate(x, size=(299, 299), mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
        return network(x, return_features=True)

    return cleanfid_features
