r"""The last step of a sampler, from the cutoff :math:`\epsilon` to :math:`t = 0`.

:func:`~splitdyn.sample.sample`'s ``denoise`` chooses it (:data:`DENOISE_MODES`): the Euler step of the reverse
SDE (paper eq. 107, one score evaluation, :meth:`~splitdyn.reverse.ReverseSDE.denoise`), the score-free map
where the noise does not reach the data (:func:`score_free_denoise`, CLD's eq. 109, no evaluation) or the
data prediction (:func:`tweedie_denoise`, one evaluation).
"""

from __future__ import annotations

import torch

from .checks import check_positive
from .linalg import apply_matrix
from .linear_sde import LinearSDEBase
from .reverse import ReverseSDE
from .steps.exponential_weights import DiffusionGeometry

__all__ = ["DENOISE_MODES", "score_free_denoise", "tweedie_denoise", "check_score_free"]


#: The values of :func:`~splitdyn.sample.sample`'s ``denoise``: ``True`` (or ``"euler"``), ``"score-free"``,
#: ``"tweedie"`` and ``False``.
DENOISE_MODES = (True, False, "euler", "score-free", "tweedie")


def score_free_denoise(process, u: torch.Tensor, eps: float) -> torch.Tensor:
    r"""The denoising step from forward time :math:`\epsilon` to 0 without a score evaluation.

    The denoising Euler step (paper eq. 107) is :math:`u_0 = u_\epsilon - \epsilon F(\epsilon)u_\epsilon +
    \epsilon\,GG^\top(\epsilon)\,s(u_\epsilon, \epsilon)`. Where the noise does not reach the data component
    (row 0 of :math:`GG^\top` is zero: CLD's :math:`x`) the score drops out of the data's update, which is
    then exact without a network call: for CLD :math:`x_0 = x_\epsilon - \epsilon\beta M^{-1}v_\epsilon`
    (eq. 109). This map returns :math:`u_\epsilon - \epsilon F(\epsilon)u_\epsilon`: its data component
    equals the Euler step's; the other components (CLD's :math:`v`) lack the score term and are not the
    denoised ones.

    Parameters
    ----------
    process:
        A linear forward SDE (:class:`~splitdyn.linear_sde.LinearSDEBase`) whose diffusion does not reach the
        data component.
    u:
        States ``(batch, k, *event)`` at forward time ``eps``.
    eps:
        The cutoff :math:`\epsilon > 0`.

    Raises
    ------
    ValueError
        When the noise reaches the data component (VP, VE: the data's update needs the score; use the Euler
        step, one evaluation).
    """
    eps = check_score_free(process, eps)
    return u - eps * apply_matrix(process.drift_matrix(eps).to(u.dtype), u)


def tweedie_denoise(reverse: ReverseSDE, u: torch.Tensor, eps: float) -> torch.Tensor:
    r"""The data prediction :math:`\hat x_0 = E[x_0 \mid u_\epsilon]` as the last step (one score evaluation).

    Tweedie's identity :math:`\nabla\log p_\epsilon(u) = -\Sigma_\epsilon^{-1}(u - \varphi_\epsilon\hat x_0)`
    gives :math:`\hat x_0` from the score (of the score components alone,
    :meth:`~splitdyn.steps.exponential_weights.DiffusionGeometry.tweedie`). It is the data-prediction
    samplers' step from the last node to :math:`t = 0` (DDIM's, and diffusers' last step with
    ``final_sigmas_type="zero"``): for VP an NFE-``n`` sampler takes ``n - 1`` steps and this one. Returns
    ``u`` with its data component (0) replaced by :math:`\hat x_0`; the other components (CLD's :math:`v`)
    are left at :math:`\epsilon`.

    Parameters
    ----------
    reverse:
        The :class:`~splitdyn.reverse.ReverseSDE` of a linear forward SDE (its score and score components).
    u:
        States ``(batch, k, *event)`` at forward time ``eps``.
    eps:
        The cutoff :math:`\epsilon > 0`.
    """
    if not isinstance(reverse, ReverseSDE):
        raise TypeError(f"reverse must be a splitdyn.ReverseSDE, got {type(reverse).__name__}")
    eps = check_positive("eps", eps)
    if not isinstance(reverse.sde, LinearSDEBase):
        raise TypeError(f"the Tweedie estimate needs a linear forward SDE, got {type(reverse.sde).__name__}")
    geometry = DiffusionGeometry(reverse.sde, score_components=reverse.score_components)
    D, E = geometry.tweedie(torch.tensor(eps, dtype=torch.float64))
    x0 = apply_matrix(D.to(u.dtype), u) + apply_matrix(E.to(u.dtype), reverse.evaluate_score(u, eps))
    return torch.cat([x0, u[:, 1:]], dim=1)


def check_score_free(process, eps: float) -> float:
    """Return ``eps`` if :func:`score_free_denoise` applies to ``process`` (a linear SDE whose noise does not reach
    the data component); otherwise raise a ``TypeError`` or ``ValueError`` saying why."""
    eps = check_positive("eps", eps)
    if not isinstance(process, LinearSDEBase):
        raise TypeError(f"process must be a linear forward SDE (splitdyn.LinearSDEBase), got {type(process).__name__}")
    if bool(process.diffusion_covariance(eps)[0].ne(0).any()):
        raise ValueError(f"the noise of {type(process).__name__} reaches its data component, so the denoising "
                         "step needs the score: use denoise=True (one evaluation)")
    return eps
