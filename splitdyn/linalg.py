r"""Small linear algebra on states: applying a ``k x m`` matrix to the component axis of ``(batch, k, *event)``.

Kernel coefficients are tiny ``k x k`` float64 matrices; states are batch-major tensors. :func:`apply_matrix`
is the one place that applies such a matrix to a state (the planned steps of :mod:`splitdyn.steps` prepare
their per-step tables in the same layouts once per grid, see :class:`splitdyn.steps.base.AffineMap`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["apply_matrix"]


def apply_matrix(matrix: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""Apply a ``k x m`` matrix to the component axis of ``u``: :math:`(A \otimes I_d)\,u`.

    Parameters
    ----------
    matrix:
        Shape ``(k, m)`` (one matrix for the whole batch) or ``(batch, k, m)`` (one per sample). It is cast
        to ``u``'s dtype and device.
    u:
        State of shape ``(batch, m, *event_shape)``.

    Notes
    -----
    ``einsum`` computes the product as one matrix multiply over ``(m, batch * d)`` and returns a
    component-major view; elementwise operations between such a view and the batch-major states then run
    with cache-hostile strides, which for small ``d`` cost more than the product itself. On the CPU, for a
    small constant matrix (at most 16 entries, no autograd through it) the result is built batch-major:
    for tiny events (:math:`k d \le 16`) as one small matrix product with :math:`A \otimes I_d` on the
    flattened state, otherwise as scalar multiply-adds over the components that skip zero entries (CLD's
    :math:`G` and :math:`GG^\top` are mostly zeros). A CLD Euler-Maruyama step at :math:`d = 2` took half
    the time at batch :math:`10^4` and :math:`10^6` (2-core CPU).
    """
    for name, value in (("matrix", matrix), ("u", u)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got "
                            f"{value.dtype if isinstance(value, torch.Tensor) else type(value).__name__}")
    if u.ndim < 2:
        raise ValueError(f"u must have shape (batch, m, *event_shape), got {tuple(u.shape)}")
    if matrix.ndim not in (2, 3) or matrix.shape[-1] != u.shape[1]:
        raise ValueError(
            f"matrix must have shape (k, m) or (batch, k, m) with m = {u.shape[1]} (the components of u), "
            f"got {tuple(matrix.shape)}"
        )
    if matrix.ndim == 3 and matrix.shape[0] != u.shape[0]:
        raise ValueError(
            f"a batch of matrices must have shape (batch, k, m) with batch = {u.shape[0]} (the batch of u), "
            f"got matrix of shape {tuple(matrix.shape)}"
        )
    if (
        matrix.ndim == 2
        and u.device.type == "cpu"
        and matrix.device.type == "cpu"
        and matrix.numel() <= _UNROLL_MAX_ENTRIES
        and not matrix.requires_grad
    ):
        d = math.prod(u.shape[2:])
        if max(matrix.shape) * d <= _KRON_MAX_SIZE:
            # tiny events: one small GEMM with A (x) I_d on the flattened state; writing k rows of d numbers
            # each into a batch-major result would be an interleave with a tiny inner stride
            kron = torch.kron(matrix.to(u.dtype).contiguous(), torch.eye(d, dtype=u.dtype))
            return torch.nn.functional.linear(u.reshape(u.shape[0], -1), kron).reshape(
                u.shape[0], matrix.shape[0], *u.shape[2:])
        rows = []
        for row in matrix.to(u.dtype).tolist():
            terms = [u[:, j] * a for j, a in enumerate(row) if a != 0.0]
            if terms:
                rows.append(sum(terms[1:], terms[0]))
            else:  # a zero row; multiplying keeps the graph when autograd needs one
                rows.append(u[:, 0] * 0.0 if u.requires_grad else torch.zeros_like(u[:, 0]))
        return torch.stack(rows, dim=1)
    matrix = matrix.to(dtype=u.dtype, device=u.device)
    flat = u.reshape(u.shape[0], u.shape[1], -1)
    out = torch.einsum("ij,bjn->bin" if matrix.ndim == 2 else "bij,bjn->bin", matrix, flat)
    return out.reshape(u.shape[0], matrix.shape[-2], *u.shape[2:])


# apply_matrix writes constant CPU matrices with at most this many entries out as multiply-adds, or, where
# k * d is at most _KRON_MAX_SIZE, applies A (x) I_d as one small matrix product
_UNROLL_MAX_ENTRIES = 16
_KRON_MAX_SIZE = 16
