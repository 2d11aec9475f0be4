"""An O-B-A-B-O Langevin sampler for a double well, and its weak order measured against torchsde.

Underdamped Langevin dynamics with unit mass, friction FRICTION and potential U(q) = (q^2 - 1)^2:

    dq = p dt,    dp = -U'(q) dt - FRICTION p dt + sqrt(2 FRICTION) dW.

Run ``python docs/tutorials/langevin_obabo.py`` (under a minute on 2 CPU cores; ``--help``).
docs/tutorials/custom_splitting.rst shows this file; tests/test_docs.py runs it with small
settings.
"""

from __future__ import annotations

import argparse
import math

import torch
import torchsde

from splitdyn import EulerDrift, ExactLinearFlow, LinearSDE, integrate, splitting

FRICTION = 1.0
T = 1.0
Q0 = -1.0  # every path starts at rest in the left well: (q, p) = (-1, 0)


def force(q: torch.Tensor) -> torch.Tensor:
    """-U'(q) for the double well U(q) = (q^2 - 1)^2."""
    return -4.0 * q * (q * q - 1.0)


# --- the three sub-steps; states are (batch, 2, 1): q in component 0, p in component 1 ---------
def langevin_parts() -> dict:
    # O: dp = -FRICTION p dt + sqrt(2 FRICTION) dW, a linear SDE, followed exactly
    O = ExactLinearFlow(LinearSDE(  # noqa: E741 - the letter of the splitting
        drift_matrix=[[0.0, 0.0], [0.0, -FRICTION]],
        diffusion_matrix=[[0.0, 0.0], [0.0, math.sqrt(2 * FRICTION)]],
        T=T,
    ))
    # B: the kick p += h * (-U'(q)); the only part that evaluates the force
    B = EulerDrift(lambda u, t: torch.stack([torch.zeros_like(u[:, 0]), force(u[:, 0])], 1), nfe=1)
    # A: the drift q += h * p; exact for this sub-dynamics, and free
    A = EulerDrift(lambda u, t: torch.stack([u[:, 1], torch.zeros_like(u[:, 1])], 1), nfe=0)
    return {"O": O, "B": B, "A": A}


def make_sampler(sequence: str = "OBABO"):
    """``"OBABO"`` is O(h/2) B(h/2) A(h) B(h/2) O(h/2): a letter gets 1/count of the step."""
    return splitting(sequence, langevin_parts())


def run_splitting(sequence: str, n_steps: int, n_paths: int, seed: int = 0) -> torch.Tensor:
    """Final positions q_T of ``n_paths`` paths, ``n_steps`` steps of the splitting."""
    u = torch.zeros(n_paths, 2, 1, dtype=torch.float64)
    u[:, 0] = Q0
    grid = torch.linspace(0.0, T, n_steps + 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return integrate(make_sampler(sequence), u, grid, generator=generator).state[:, 0, 0]


# --- the reference: the same SDE in torchsde's protocol, Euler-Maruyama with a small step -------
class LangevinSDE(torch.nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def f(self, t, y):  # y = (q, p), shape (batch, 2)
        q, p = y[:, :1], y[:, 1:]
        return torch.cat([p, force(q) - FRICTION * p], dim=1)

    def g(self, t, y):  # the diagonal of the diffusion matrix
        noise = torch.full_like(y[:, 1:], math.sqrt(2 * FRICTION))
        return torch.cat([torch.zeros_like(y[:, :1]), noise], dim=1)


def run_torchsde(n_paths: int, dt: float, seed: int = 1) -> torch.Tensor:
    """Final positions from ``torchsde.sdeint(method="euler")``; ``seed`` fixes the noise."""
    y0 = torch.zeros(n_paths, 2, dtype=torch.float64)
    y0[:, 0] = Q0
    bm = torchsde.BrownianInterval(t0=0.0, t1=T, size=(n_paths, 2), dtype=torch.float64,
                                   entropy=seed)
    times = torch.tensor([0.0, T], dtype=torch.float64)
    return torchsde.sdeint(LangevinSDE(), y0, times, method="euler", dt=dt, bm=bm)[-1, :, 0]


# --- weak errors in E[q_T^2], with Monte Carlo standard errors -----------------------------------
def second_moment(q: torch.Tensor) -> tuple[float, float]:
    """E[q^2] and its Monte Carlo standard error."""
    q2 = q * q
    return q2.mean().item(), q2.std().item() / math.sqrt(q2.numel())


def weak_errors(sequences=("OBABO", "OBA", "BAOAB"), steps=(4, 8, 16), n_paths=400_000,
                dt=1e-2) -> dict:
    """``{sequence: [(n_steps, error, standard error), ...]}``: E[q_T^2] against torchsde."""
    reference, reference_se = second_moment(run_torchsde(n_paths, dt))
    table = {}
    for sequence in sequences:
        rows = []
        for n in steps:
            value, se = second_moment(run_splitting(sequence, n, n_paths, seed=n))
            rows.append((n, value - reference, math.hypot(se, reference_se)))
        table[sequence] = rows
    return table


def observed_orders(rows) -> list[float]:
    """log2 of successive error ratios (the step is halved each time)."""
    return [math.log2(abs(a[1]) / abs(b[1])) for a, b in zip(rows[:-1], rows[1:], strict=True)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", type=int, default=400_000, help="paths per estimate")
    parser.add_argument("--dt", type=float, default=1e-2, help="torchsde reference step")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16], help="steps in [0, T]")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = weak_errors(steps=args.steps, n_paths=args.paths, dt=args.dt)
    print(f"error of E[q_T^2] against torchsde Euler-Maruyama (dt = {args.dt}), "
          f"{args.paths} paths, +- 2 s.e.")
    print(("steps  " + "".join(f"{sequence:22s}" for sequence in table)).rstrip())
    for i, n in enumerate(args.steps):
        cells = "".join(f"{r[i][1]:+.4f} +- {2 * r[i][2]:.4f}     " for r in table.values())
        print((f"{n:<7d}" + cells).rstrip())
    orders = [f"{seq} " + ", ".join(f"{p:.2f}" for p in observed_orders(rows))
              for seq, rows in table.items()]
    print("observed orders: " + "   ".join(orders))


if __name__ == "__main__":
    main()
