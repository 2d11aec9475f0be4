r"""Pretrained models from other libraries as a splitdyn process and score (adapters at the edge).

Samplers only ever see ``score(u, t)`` in splitdyn's convention (forward time :math:`t`, states
``(batch, 1, *event)``); this module turns two common model conventions into that:

**Discrete-time DDPM models** (diffusers' ``UNet2DModel`` with a ``DDPMScheduler``/``DDIMScheduler``/... config,
or any callable ``model(x, timestep)``): the table :math:`\bar\alpha_n` (``alphas_cumprod``,
:math:`n = 0, \dots, N-1`) defines a VP process, and the model predicts ``"epsilon"``,
``"sample"`` (:math:`x_0`) or ``"v_prediction"`` (:math:`v = \alpha\varepsilon - \sigma x_0`) at a timestep.

The **time map** is explicit: timestep :math:`n` sits at the continuous time

.. math::

    t_n = \frac{-\log\bar\alpha_n}{-\log\bar\alpha_{N-1}} \in (0, 1],

and the process is the VP SDE with the constant rate :math:`\beta = -\log\bar\alpha_{N-1}`
(``VPSDE(schedule=ConstantBeta(beta))``), so :math:`\bar\alpha(t_n) = e^{-\beta t_n} = \bar\alpha_n`: the
process's marginals at :math:`t_n` are exactly the table's, whatever the table (linear, scaled-linear, cosine,
trained betas). The rate is smooth, so every sampler's coefficients, including the quadratures of the
exponential integrators, are exact. Between timesteps the model is called with a fractional timestep
interpolated linearly in the log-SNR :math:`\lambda = \tfrac12\log(\bar\alpha/(1 - \bar\alpha))` between the
two neighbouring entries (as k-diffusion's discrete wrappers do); at the grid times of a discrete timestep
sequence (:meth:`DiscreteDiffusion.grid`) the model sees the exact integer timesteps (within ``1e-6`` of an
integer the timestep is rounded, absorbing the float64 rounding of the map).

The **final step** of diffusers' DDIM (``set_alpha_to_one=True``) and DPM-Solver/UniPC
(``final_sigmas_type="zero"``) schedulers goes from the last timestep to :math:`\bar\alpha = 1`, i.e. returns
the model's data prediction :math:`\hat x_0` there: :meth:`DiscreteDiffusion.sample` does the same
(``final="data"``), instead of splitdyn's default Euler denoising step. DDIM's ``clip_sample`` clips
:math:`\hat x_0` and re-derives the noise from it; the score here is built from the clipped :math:`\hat x_0`,
so every sampler sees the clipped prediction.

**k-diffusion/EDM denoisers** :math:`D(x, \sigma)` (:func:`from_denoiser`): the VE process with
:math:`\sigma(t) = t` (:class:`~splitdyn.schedules.LinearSigma` with ``T = sigma_max``), the score
:math:`(D(x, \sigma) - x)/\sigma^2`, and :func:`karras_sigmas` for Karras et al.'s (2022) grid.

``diffusers`` is an optional dependency (``pip install splitdyn[pretrained]``), imported only by
:func:`load_diffusers` and :func:`from_diffusers` when given a scheduler object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .checks import as_float64, check_callable, check_positive
from .grids import GivenGrid
from .processes import VESDE, VPSDE, DiffusionProcess
from .schedules import ConstantBeta, LinearSigma

__all__ = [
    "PREDICTION_TYPES",
    "DenoiserDiffusion",
    "DiscreteDiffusion",
    "from_denoiser",
    "from_diffusers",
    "karras_sigmas",
    "load_diffusers",
]

F64 = torch.float64

#: The model outputs a :class:`DiscreteDiffusion` understands (diffusers' ``prediction_type``).
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

_SNAP = 1e-6  # fractional timesteps within this of an integer are the integer (float64 rounding of the map)


def _model_output(out: Any) -> torch.Tensor:
    """The tensor of a model's output: a tensor, diffusers' ``*.sample`` output, or the first of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the model must return a tensor (or an object with a .sample tensor), got {type(out).__name__}")


def _batch_times(t, batch: int) -> torch.Tensor:
    """Forward times as a float64 CPU tensor of shape ``(batch,)``."""
    t = torch.as_tensor(t, dtype=F64).detach().cpu()
    if t.ndim == 0:
        return t.expand(batch).clone()
    return t.reshape(-1).expand(batch).clone() if t.numel() == 1 else t.reshape(batch)


def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.ndim - 1)))


class DiscreteDiffusion:
    r"""A discrete-time DDPM model (``model(x, timestep)``) as a VP process and a score in forward time.

    See the module notes for the time map :math:`t_n = \log\bar\alpha_n / \log\bar\alpha_{N-1}` and the
    interpolation between timesteps.

    Parameters
    ----------
    model:
        A callable ``model(x, timestep)`` taking images ``(batch, *event)`` and a ``(batch,)`` float tensor
        of (possibly fractional) timesteps, returning a tensor of the shape of ``x`` or an object with a
        ``.sample`` tensor (diffusers' ``UNet2DModel``).
    alphas_cumprod:
        The table :math:`\bar\alpha_n` (1-D, strictly decreasing, in ``(0, 1)``).
    prediction_type:
        ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
    clip_sample:
        ``None`` or a positive range: clip the data prediction :math:`\hat x_0` to ``[-c, c]`` (DDIM's
        ``clip_sample_range`` when ``clip_sample=True``).

    Attributes
    ----------
    process:
        ``VPSDE(schedule=ConstantBeta(-log alphas_cumprod[-1]))`` on ``[0, 1]``.
    times:
        :math:`t_n` for every timestep (float64).
    """

    def __init__(self, model: Callable[..., Any], alphas_cumprod, prediction_type: str = "epsilon",
                 clip_sample: float | None = None) -> None:
        self.model = check_callable("model", model, "a callable model(x, timestep)")
        table = as_float64("alphas_cumprod", alphas_cumprod, "a 1-D table of cumulative products of alphas")
        if table.ndim != 1 or table.numel() < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with at least 2 entries, got shape {tuple(table.shape)}")
        if not bool(((table > 0) & (table < 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1) (a finite log-SNR at every timestep); a table "
                             "ending at alpha_bar = 0 (zero terminal SNR) has no Gaussian prior")
        if not bool((table[1:] < table[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.prediction_type = prediction_type
        self.clip_sample = None if clip_sample is None else check_positive("clip_sample", clip_sample)
        self.alphas_cumprod = table.clone()
        self.num_train_timesteps = table.numel()
        integrated = -torch.log(table)
        self.beta = float(integrated[-1])
        self.times = integrated / self.beta
        self.process: DiffusionProcess = VPSDE(schedule=ConstantBeta(self.beta))
        self._log_snr = 0.5 * (torch.log(table) - torch.log1p(-table))  # decreasing in n

    def __repr__(self) -> str:
        return (f"DiscreteDiffusion(N={self.num_train_timesteps}, prediction_type={self.prediction_type!r}, "
                f"clip_sample={self.clip_sample})")

    # -- the time map ---------------------------------------------------------------------------------------
    def time(self, timesteps) -> torch.Tensor:
        r"""The continuous times :math:`t_n` of (integer) timesteps ``n`` (float64)."""
        n = torch.as_tensor(timesteps).detach().cpu()
        if n.is_floating_point() and not bool((n == n.round()).all()):
            raise ValueError("timesteps must be integers (diffusers' discrete timesteps)")
        n = n.to(torch.long)
        if n.numel() and (int(n.min()) < 0 or int(n.max()) >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps - 1}], got "
                             f"[{int(n.min())}, {int(n.max())}]")
        return self.times[n]

    def timestep(self, t) -> torch.Tensor:
        r"""The model timestep at forward times ``t`` (float64): fractional between table entries, interpolated
        linearly in the log-SNR, exact integers at :math:`t_n`, clamped to ``[0, N - 1]``."""
        t = as_float64("t", t, "forward times")
        lam = self.process.log_snr(t.clamp(0.0, 1.0))
        knots = self._log_snr
        descending = (-knots).contiguous()
        j = (torch.searchsorted(descending, (-lam).reshape(-1).contiguous(), right=True) - 1)
        j = j.clamp(0, self.num_train_timesteps - 2).reshape(lam.shape)
        fraction = (knots[j] - lam) / (knots[j] - knots[j + 1])
        n = (j.to(F64) + fraction).clamp(0.0, self.num_train_timesteps - 1.0)
        rounded = n.round()
        return torch.where((n - rounded).abs() < _SNAP, rounded, n)

    def grid(self, timesteps) -> tuple[DiffusionProcess, GivenGrid]:
        r"""The process and the grid of a decreasing sequence of timesteps ``n_1 > ... > n_K`` (diffusers'
        ``scheduler.timesteps``): the process cut to the horizon :math:`T = t_{n_1}` (diffusers starts there
        from :math:`\mathcal N(0, I)`) and the reverse times :math:`\tau_i = T - t_{n_i}`; the cutoff is
        :math:`\epsilon = t_{n_K}`."""
        t = self.time(timesteps)
        if t.ndim != 1 or t.numel() < 2:
            raise ValueError("timesteps must be a 1-D sequence of at least 2 timesteps")
        if not bool((t[1:] < t[:-1]).all()):
            raise ValueError("timesteps must be strictly decreasing (from noise to data)")
        T = float(t[0])
        process = self.process if T == self.process.T else VPSDE(schedule=self.process.schedule, T=T)
        reverse = (T - t).clamp_min(0.0)
        reverse[0] = 0.0
        return process, GivenGrid(reverse, T=T)

    # -- the model in splitdyn's convention -------------------------------------------------------------------
    def data_prediction(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The model's :math:`(\hat x_0, \hat\varepsilon)` at images ``x`` ``(batch, *event)`` and forward times
        ``t`` (a scalar or ``(batch,)``), clipped if ``clip_sample`` is set (the noise then re-derived)."""
        times = _batch_times(t, x.shape[0])
        B = self.beta * times
        alpha = torch.exp(-0.5 * B)
        sigma = torch.sqrt(-torch.expm1(-B))
        timestep = self.timestep(times).to(device=x.device, dtype=torch.float32)
        out = _model_output(self.model(x, timestep))
        if out.shape != x.shape:
            raise ValueError(f"the model returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        a, s = _broadcast(alpha, x), _broadcast(sigma, x)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x - s * eps) / a
        elif self.prediction_type == "sample":
            x0 = out
            eps = (x - a * x0) / s
        else:  # v = alpha eps - sigma x0
            x0 = a * x - s * out
            eps = s * x + a * out
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
            eps = (x - a * x0) / s
        return x0, eps

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The score :math:`-\hat\varepsilon/\sigma(t)` for states ``u`` ``(batch, 1, *event)`` (forward time)."""
        x = u[:, 0]
        times = _batch_times(t, x.shape[0])
        sigma = torch.sqrt(-torch.expm1(-self.beta * times))
        _, eps = self.data_prediction(x, times)
        return (-eps / _broadcast(sigma, x)).unsqueeze(1)

    __call__ = score

    def sample(self, initial: torch.Tensor, timesteps=None, step: Any = "dpmpp-2m", *, grid=None,
               final: str = "data", **options: Any) -> torch.Tensor:
        r"""Sample from ``initial`` noise ``(batch, *event)`` with a splitdyn sampler, down the decreasing discrete
        ``timesteps`` or on a continuous ``grid``, and return images ``(batch, *event)``.

        Parameters
        ----------
        initial:
            The starting noise (diffusers: ``randn * scheduler.init_noise_sigma``, which is 1 for VP).
        timesteps:
            Decreasing discrete timesteps (e.g. ``scheduler.timesteps`` after ``set_timesteps``); the noise
            starts at ``timesteps[0]``.
        step:
            Any sampler :func:`splitdyn.sample` accepts (``"dpmpp-1"`` is DDIM, ``"dpmpp-2m"``, ``"heun"``...).
        grid:
            Instead of ``timesteps``: any grid :func:`splitdyn.sample` accepts for :attr:`process` (horizon 1,
            e.g. ``LogSNRGrid(n, adapter.process, eps=float(adapter.times[0]))``); the model is then called at
            fractional timesteps between the table's entries.
        final:
            ``"data"``: finish with the data prediction at the last time (diffusers' DDIM with
            ``set_alpha_to_one=True``, DPM-Solver/UniPC with ``final_sigmas_type="zero"``); ``"none"``: return the
            state at the last time (append timestep ``0`` for DDIM's ``set_alpha_to_one=False``).
        options:
            Passed to :func:`splitdyn.sample` (``generator``, ``progress``, ...; not ``denoise``).
        """
        from .sample import sample

        if final not in ("data", "none"):
            raise ValueError(f"final must be 'data' or 'none', got {final!r}")
        if "denoise" in options:
            raise ValueError("denoise is fixed by final= here ('data': the model's x0 prediction at the last step)")
        if not isinstance(initial, torch.Tensor) or initial.ndim < 2:
            raise TypeError("initial must be a tensor of images (batch, *event)")
        if (timesteps is None) == (grid is None):
            raise ValueError("pass either timesteps (discrete) or grid (continuous), not both or neither")
        if grid is None:
            process, grid = self.grid(timesteps)
        else:
            process = self.process
        solution = sample(process, self.score, initial.unsqueeze(1), grid, step=step, denoise=False, **options)
        x = solution.state[:, 0]
        if final == "data":
            times = grid.reverse_times(process.T) if hasattr(grid, "reverse_times") else torch.as_tensor(grid)
            eps = process.T - float(times[-1])
            with torch.no_grad():
                x, _ = self.data_prediction(x, eps)
        return x


class DenoiserDiffusion:
    r"""A k-diffusion/EDM denoiser :math:`D(x, \sigma)` as the VE process :math:`\sigma(t) = t` and its score.

    Parameters
    ----------
    denoiser:
        A callable ``D(x, sigma)``: images ``(batch, *event)`` and a ``(batch,)`` tensor of noise levels,
        returning the denoised images (tensor or ``.sample``).
    sigma_max:
        The largest noise level (the process's horizon ``T``; EDM: 80).

    Attributes
    ----------
    process:
        ``VESDE(schedule=LinearSigma(sigma_max, T=sigma_max))``: forward time is the noise level.
    """

    def __init__(self, denoiser: Callable[..., Any], sigma_max: float = 80.0) -> None:
        self.denoiser = check_callable("denoiser", denoiser, "a callable D(x, sigma)")
        self.sigma_max = check_positive("sigma_max", sigma_max)
        self.process: DiffusionProcess = VESDE(schedule=LinearSigma(self.sigma_max, T=self.sigma_max))

    def __repr__(self) -> str:
        return f"DenoiserDiffusion(sigma_max={self.sigma_max})"

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """:math:`D(x, \\sigma)` for images ``x`` and a scalar or ``(batch,)`` noise level."""
        sigmas = _batch_times(sigma, x.shape[0]).to(device=x.device, dtype=x.dtype)
        out = _model_output(self.denoiser(x, sigmas))
        if out.shape != x.shape:
            raise ValueError(f"the denoiser returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        return out

    def score(self, u: torch.Tensor, t) -> torch.Tensor:
        r"""The score :math:`(D(x, \sigma) - x)/\sigma^2` at :math:`\sigma = t` for states ``(batch, 1, *event)``."""
        x = u[:, 0]
        sigma = _broadcast(_batch_times(t, x.shape[0]), x)
        return ((self.denoise(x, t) - x) / (sigma * sigma)).unsqueeze(1)

    __call__ = score

    def grid(self, sigmas) -> GivenGrid:
        r"""The reverse-time grid :math:`\tau_i = \sigma_{\max} - \sigma_i` of decreasing noise levels starting at
        ``sigma_max`` and ending at :math:`\sigma_{\min} > 0` (the cutoff)."""
        s = as_float64("sigmas", sigmas, "a decreasing sequence of noise levels")
        if s.ndim != 1 or s.numel() < 2 or not bool((s[1:] < s[:-1]).all()) or float(s[-1]) <= 0:
            raise ValueError("sigmas must be strictly decreasing and positive (drop a final 0: final='data' "
                             "does that step)")
        if abs(float(s[0]) - self.sigma_max) > 1e-12 * self.sigma_max:
            raise ValueError(f"sigmas must start at sigma_max = {self.sigma_max}, got {float(s[0])}")
        reverse = (self.sigma_max - s).clamp_min(0.0)
        reverse[0] = 0.0
        return GivenGrid(reverse, T=self.sigma_max)

    def sample(self, initial: torch.Tensor, sigmas, step: Any = "heun", *, final: str = "data",
               **options: Any) -> torch.Tensor:
        r"""Sample from noise ``initial`` ``(batch, *event)`` of std ``sigma_max`` down the decreasing ``sigmas``;
        ``final="data"`` ends with :math:`D(x, \sigma_{\min})` (k-diffusion's last step to :math:`\sigma = 0`)."""
        from .sample import sample

        if final not in ("data", "none"):
            raise ValueError(f"final must be 'data' or 'none', got {final!r}")
        grid = self.grid(sigmas)
        solution = sample(self.process, self.score, initial.unsqueeze(1), grid, step=step, denoise=False, **options)
        x = solution.state[:, 0]
        if final == "data":
            with torch.no_grad():
                x = self.denoise(x, grid.eps)
        return x


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    r"""Karras et al.'s (2022) noise levels :math:`\sigma_i = (\sigma_{\max}^{1/\rho} + \tfrac{i}{n-1}
    (\sigma_{\min}^{1/\rho} - \sigma_{\max}^{1/\rho}))^\rho`, ``i = 0..n-1`` (float64, without the final 0)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer of at least 2, got {n!r}")
    lo, hi, rho = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max), check_positive("rho", rho)
    if lo >= hi:
        raise ValueError(f"sigma_min must be below sigma_max = {hi}, got {lo}")
    ramp = torch.linspace(0, 1, n, dtype=F64)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def from_denoiser(denoiser: Callable[..., Any], sigma_max: float = 80.0) -> DenoiserDiffusion:
    """A k-diffusion/EDM denoiser ``D(x, sigma)`` as a :class:`DenoiserDiffusion`."""
    return DenoiserDiffusion(denoiser, sigma_max)


def _scheduler_table(scheduler: Any) -> tuple[torch.Tensor, str, float | None]:
    """(alphas_cumprod, prediction_type, clip range or None) of a diffusers scheduler (object or config dict)."""
    if isinstance(scheduler, dict):
        scheduler = _scheduler_from_config(dict(scheduler))
    config = getattr(scheduler, "config", None)
    table = getattr(scheduler, "alphas_cumprod", None)
    if config is None or table is None:
        raise TypeError("scheduler must be a diffusers scheduler with alphas_cumprod (DDPMScheduler, DDIMScheduler, "
                        f"DPMSolverMultistepScheduler, ...) or its config dict, got {type(scheduler).__name__}")
    if getattr(config, "thresholding", False):
        raise ValueError("dynamic thresholding (scheduler config thresholding=True) is not supported")
    if getattr(config, "rescale_betas_zero_snr", False):
        raise ValueError("rescale_betas_zero_snr=True ends at alpha_bar = 0 (infinite noise): not supported")
    clip = None
    if getattr(config, "clip_sample", False):
        clip = float(getattr(config, "clip_sample_range", 1.0))
    return torch.as_tensor(table), str(getattr(config, "prediction_type", "epsilon")), clip


def _scheduler_from_config(config: dict) -> Any:
    import diffusers  # optional dependency

    name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ValueError(f"unknown diffusers scheduler class {name!r}")
    return cls.from_config(config)


def from_diffusers(model: Callable[..., Any], scheduler: Any = None, *, alphas_cumprod=None,
                   prediction_type: str | None = None, clip_sample: float | None | str = "config") -> DiscreteDiffusion:
    r"""A diffusers model (``UNet2DModel`` or any ``model(x, timestep)``) and its scheduler as a
    :class:`DiscreteDiffusion`.

    Parameters
    ----------
    model:
        The noise/data/velocity predictor.
    scheduler:
        A diffusers scheduler (or its config dict): ``alphas_cumprod``, ``prediction_type`` and DDIM's
        ``clip_sample``/``clip_sample_range`` are read from it. Or pass ``alphas_cumprod`` instead.
    alphas_cumprod, prediction_type:
        Override (or replace) what the scheduler gives.
    clip_sample:
        ``"config"`` (the scheduler's ``clip_sample``), ``None`` (no clipping) or a clipping range.
    """
    clip: float | None = None
    kind = "epsilon"
    if scheduler is not None:
        table, kind, clip = _scheduler_table(scheduler)
        if alphas_cumprod is None:
            alphas_cumprod = table
    if alphas_cumprod is None:
        raise ValueError("pass a scheduler or alphas_cumprod")
    if clip_sample != "config":
        clip = None if clip_sample is None else check_positive("clip_sample", clip_sample)
    return DiscreteDiffusion(model, alphas_cumprod, prediction_type or kind, clip)


def load_diffusers(path: str | Path, *, scheduler: str | None = None, device=None,
                   dtype: torch.dtype = torch.float32, **overrides: Any) -> DiscreteDiffusion:
    r"""Load a local diffusers pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``) or model folder
    (``config.json`` and weights, with ``scheduler_config.json`` beside it or in ``scheduler/``) as a
    :class:`DiscreteDiffusion`. Nothing is downloaded.

    Parameters
    ----------
    path:
        The folder.
    scheduler:
        A scheduler folder or ``scheduler_config.json`` to use instead of the one found in ``path``.
    device, dtype:
        Where and in which precision the UNet runs (it is put in ``eval`` mode).
    overrides:
        Passed to :func:`from_diffusers` (``prediction_type``, ``clip_sample``).
    """
    import diffusers  # optional dependency

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"path must be a diffusers pipeline or model folder, got {str(path)!r}")
    unet_dir = root / "unet" if (root / "model_index.json").is_file() and (root / "unet").is_dir() else root
    config_file = unet_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no model config.json in {str(unet_dir)!r} (a diffusers model or pipeline folder)")
    class_name = json.loads(config_file.read_text()).get("_class_name", "UNet2DModel")
    model_class = getattr(diffusers, class_name, None)
    if model_class is None or not hasattr(model_class, "from_pretrained"):
        raise ValueError(f"unknown diffusers model class {class_name!r} in {str(config_file)!r}")
    model = model_class.from_pretrained(str(unet_dir), local_files_only=True, low_cpu_mem_usage=False,
                                        torch_dtype=dtype).to(device=device).eval()
    candidates = [Path(scheduler)] if scheduler is not None else [root / "scheduler", root / "scheduler_config.json",
                                                                    unet_dir / "scheduler_config.json"]
    for candidate in candidates:
        file = candidate / "scheduler_config.json" if candidate.is_dir() else candidate
        if file.is_file():
            config = json.loads(file.read_text())
            break
    else:
        raise FileNotFoundError(f"no scheduler_config.json found for {str(path)!r} (looked in "
                                f"{', '.join(str(c) for c in candidates)}); pass scheduler=")
    return from_diffusers(model, config, **overrides)

