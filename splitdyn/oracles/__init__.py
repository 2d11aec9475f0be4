r"""Exact score oracles: Gaussian-mixture data diffused by a linear SDE.

Let the data :math:`x_0 \in \mathbb{R}^d` follow a mixture of diagonal Gaussians

.. math::

    p_0(x) = \sum_{i=1}^K w_i\,\mathcal{N}\big(x;\ m_i,\ \mathrm{diag}(s_{i1}^2, \dots, s_{id}^2)\big),

and let the state :math:`u_0 \in \mathbb{R}^{k \times d}` carry :math:`x_0` in component 0 and, in components
:math:`1, \dots, k-1`, auxiliary variables that are independent of :math:`x_0` and :math:`\mathcal{N}(0, C)`
per coordinate (CLD: the velocity, :math:`C = \gamma M`). A linear SDE (:class:`~splitdyn.LinearSDE`) acts on
every coordinate :math:`j` with the same :math:`k \times k` kernel :math:`(\Phi(t), Q(t))`, so the law of
:math:`u_t` is again a mixture with the same weights (paper, App. E.1, eq. 98):

.. math::

    p_t(u) = \sum_{i=1}^K w_i \prod_{j=1}^d
    \mathcal{N}\big(u_{\cdot j};\ \mu_{ij}(t),\ \Sigma_{ij}(t)\big),\qquad
    \mu_{ij}(t) = \Phi(t)\,(m_{ij}, 0, \dots, 0)^\top = m_{ij}\,\Phi(t) e_0,

.. math::

    \Sigma_{ij}(t) = \Phi(t)\,S_{ij}\,\Phi(t)^\top + Q(t),\qquad
    S_{ij} = \mathrm{blockdiag}(s_{ij}^2, C),

where :math:`u_{\cdot j} \in \mathbb{R}^k` collects the ``k`` components of coordinate ``j``. With the
Cholesky factor :math:`\Sigma_{ij} = L_{ij} L_{ij}^\top`, whitened residuals
:math:`z_{ij} = L_{ij}^{-1}(u_{\cdot j} - \mu_{ij})` and responsibilities
:math:`r_i(u) = \mathrm{softmax}_i\big(\log w_i + \sum_j \log\mathcal{N}_{ij}\big)`, the score is

.. math::

    \nabla_{u_{\cdot j}} \log p_t(u) = -\sum_i r_i(u)\,L_{ij}^{-\top} z_{ij}.

Everything is evaluated in float64 with a log-sum-exp over the mixture components and per-coordinate
:math:`k \times k` Cholesky factorisations, vectorised over the batch (in chunks, to bound memory), so
samplers and likelihoods can be tested and benchmarked without training a network.

Examples
--------
>>> import torch
>>> from splitdyn.oracles import DiffusedGaussianMixture, diamond_mixture
>>> from splitdyn_cld import CLD
>>> cld = CLD()
>>> oracle = DiffusedGaussianMixture(diamond_mixture(), cld, initial_covariance=[[cld.gamma * cld.mass]])
>>> u = oracle.sample(4, 0.5, torch.Generator().manual_seed(0))
>>> u.shape, oracle.score(u, 0.5).shape, oracle.component_score(u, 0.5, [1]).shape
(torch.Size([4, 2, 2]), torch.Size([4, 2, 2]), torch.Size([4, 1, 2]))

Modules
-------
- :mod:`splitdyn.oracles.mixture`: the data law :class:`GaussianMixture` and the standard test mixtures;
- :mod:`splitdyn.oracles.diffused`: :class:`DiffusedGaussianMixture`, its exact density, score, samples and
  moments at time ``t``;
- :mod:`splitdyn.oracles.strategies`: the two evaluation strategies (matrix-product expansion, whitened
  residuals) behind :class:`DiffusedGaussianMixture`;
- ``splitdyn.oracles.small_matrices`` (internal, documented in its source): tiny ``k x k`` linear algebra
  vectorised over a large batch.
"""

from .diffused import DiffusedGaussianMixture
from .mixture import GaussianMixture, diamond_mixture, random_mixture

__all__ = ["GaussianMixture", "DiffusedGaussianMixture", "diamond_mixture", "random_mixture"]
