r"""Tiny ``k x k`` linear algebra, vectorised over a large batch, for the exact oracles.

The oracles of :mod:`splitdyn.oracles` factorise one ``k x k`` covariance (``k = 1`` for VP diffusions, ``k = 2``
for CLD) per distinct time, mixture component and coordinate, and apply it to millions of states. Batched LAPACK
calls and ``bmm`` over such tiny matrices are slow on the CPU; these helpers unroll the ``k x k`` loops into a few
elementwise tensor operations over the whole batch instead. They work in the dtype they are given (the oracles
use float64).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = [
    "LOG_2PI",
    "CHUNK_ELEMENTS",
    "draw_device",
    "chunk_size",
    "small_cholesky",
    "small_tril_inverse",
    "gram",
    "small_bmm",
    "entries",
    "tril_apply",
    "tril_t_apply",
]

#: :math:`\log 2\pi`.
LOG_2PI = math.log(2.0 * math.pi)
#: Upper bound on the number of float64 entries of the largest temporary of one evaluation chunk (32 MiB).
CHUNK_ELEMENTS = 2**22


def draw_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers are drawn on: ``generator``'s, or the CPU without one."""
    return generator.device if generator is not None else torch.device("cpu")


def chunk_size(per_row: int) -> int:
    """Rows per evaluation chunk so that a temporary of ``per_row`` float64 entries per row stays within
    :data:`CHUNK_ELEMENTS`."""
    return max(1, CHUNK_ELEMENTS // max(1, per_row))


def small_cholesky(S: torch.Tensor, semidefinite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Lower Cholesky factors of a batch ``(..., k, k)`` of tiny symmetric matrices (Cholesky-Banachiewicz).

    The recursion runs over the ``k`` rows with vectorised tensor operations over the batch, which is much
    faster than batched LAPACK calls on millions of ``2 x 2`` matrices. Returns ``(L, ok)`` where ``ok`` marks
    the positive-definite matrices. With ``semidefinite=True`` a non-positive pivot is set to zero together
    with the rest of its column (a valid factor :math:`LL^\top = S` of a positive semi-definite ``S``, used for
    sampling degenerate Gaussians); otherwise the factor of a failing matrix is meaningless (check ``ok``).
    """
    k = S.shape[-1]
    L = torch.zeros_like(S)
    ok = torch.ones(S.shape[:-2], dtype=torch.bool, device=S.device)
    for j in range(k):
        pivot = S[..., j, j] - (L[..., j, :j] ** 2).sum(-1)
        positive = pivot > 0
        ok &= positive
        diag = torch.sqrt(torch.where(positive, pivot, torch.ones_like(pivot)))
        L[..., j, j] = torch.where(positive, diag, torch.zeros_like(diag))
        for i in range(j + 1, k):
            off = (S[..., i, j] - (L[..., i, :j] * L[..., j, :j]).sum(-1)) / diag
            L[..., i, j] = torch.where(positive, off, torch.zeros_like(off)) if semidefinite else off
    return L, ok


def small_tril_inverse(L: torch.Tensor) -> torch.Tensor:
    """Inverse of a batch ``(..., k, k)`` of tiny lower-triangular matrices with positive diagonals."""
    k = L.shape[-1]
    inv = torch.zeros_like(L)
    for i in range(k):
        inv[..., i, i] = 1.0 / L[..., i, i]
        for j in range(i):
            acc = (L[..., i, j:i] * inv[..., j:i, j]).sum(-1)
            inv[..., i, j] = -acc / L[..., i, i]
    return inv


def gram(x: torch.Tensor) -> torch.Tensor:
    """``G[b, a, c] = sum_j x[b, a, j] x[b, c, j]`` for ``x`` of shape ``(b, k, d)`` with small ``k``.

    Elementwise products: a batched ``bmm`` over ``b`` tiny matrices is much slower on the CPU.
    """
    k = x.shape[1]
    G = x.new_empty(x.shape[0], k, k)
    for a in range(k):
        for c in range(a, k):
            G[:, a, c] = (x[:, a] * x[:, c]).sum(-1)
            if c != a:
                G[:, c, a] = G[:, a, c]
    return G


def small_bmm(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[b, c] = sum_a A[b, c, a] x[b, a]`` for ``A (b, c, k)`` and ``x (b, k, d)``, elementwise."""
    out = A[:, :, 0, None] * x[:, None, 0]
    for a in range(1, x.shape[1]):
        out = out + A[:, :, a, None] * x[:, None, a]
    return out


def entries(M: torch.Tensor) -> list[list[torch.Tensor]]:
    """The entries ``M[..., a, c]`` of a batch of ``k x k`` matrices as a nested list of contiguous tensors.

    The oracles work component-major (one contiguous tensor per component) so that the tiny ``k x k``
    products become a few fast elementwise operations over the whole batch.
    """
    k = M.shape[-1]
    return [[M[..., a, c].contiguous() for c in range(k)] for a in range(k)]


def tril_apply(A: list[list[torch.Tensor]], r: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    r"""``z_a = sum_{c <= a} A[a][c] * r[c]`` for a lower-triangular ``A`` given by its entries (broadcasting)."""
    out = []
    for a in range(len(r)):
        acc = A[a][0] * r[0]
        for c in range(1, a + 1):
            acc = acc + A[a][c] * r[c]
        out.append(acc)
    return out


def tril_t_apply(A: list[list[torch.Tensor]], z: Sequence[torch.Tensor], rows: Sequence[int]) -> list[torch.Tensor]:
    r"""Rows ``rows`` of :math:`A^\top z` for lower-triangular ``A``: ``sum_{a >= c} A[a][c] * z[a]``."""
    out = []
    for c in rows:
        acc = A[c][c] * z[c]
        for a in range(c + 1, len(z)):
            acc = acc + A[a][c] * z[a]
        out.append(acc)
    return out
