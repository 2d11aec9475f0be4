"""Command-line helpers shared by the scripts in ``examples/``: user errors end in one clear line and exit
status 2, never a traceback.

* :class:`ScriptParser` -- an :class:`argparse.ArgumentParser` whose errors are one line
  ``<prog>: error: <message>`` (exit status 2);
* argument types that check values as they are parsed: :func:`positive_int`, :func:`nonnegative_int`,
  :func:`positive_float`, :func:`nonnegative_float`, :func:`open_unit_float`, :func:`device_name`;
* :func:`user_errors` -- a context manager turning the errors a user can cause (a missing or corrupt file, a
  bad setting: :data:`USER_ERRORS`) into that one line and exit status 2. Set the environment variable
  ``SPLITDYN_TRACEBACK=1`` to see the traceback instead.

Examples
--------
>>> from splitdyn_cld.cli import ScriptParser, positive_int
>>> parser = ScriptParser(prog="demo")
>>> _ = parser.add_argument("--steps", type=positive_int, default=10)
>>> parser.parse_args(["--steps", "3"]).steps
3
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn

from splitdyn.checks import check_device

from .checkpoints import CheckpointError

__all__ = ["ScriptParser", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float",
           "open_unit_float", "device_name", "BETA_TIED", "beta_value", "resolve_beta", "USER_ERRORS", "one_line", "user_errors"]

#: The exceptions :func:`user_errors` reports in one line: missing files (:class:`OSError` and its
#: subclasses such as :class:`FileNotFoundError`), unusable checkpoints
#: (:class:`~splitdyn_cld.checkpoints.CheckpointError`), bad values and corrupt data (:class:`ValueError`),
#: and missing optional packages (:class:`ImportError`).
USER_ERRORS = (OSError, CheckpointError, ValueError, ImportError)


def one_line(message: object) -> str:
    """``str(message)`` with its lines joined by ``"; "`` (blank lines dropped)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


class ScriptParser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` whose :meth:`error` prints one line ``<prog>: error: <message>`` to
    stderr and exits with status 2 (``--help`` explains the usage)."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def _number(kind: type, text: str, what: str, ok) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and value != value:  # NaN
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, text, "an integer >= 1", lambda v: v >= 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, text, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, text, "a finite number > 0", lambda v: 0 < v < float("inf"))


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, text, "a finite number >= 0", lambda v: 0 <= v < float("inf"))


def open_unit_float(text: str) -> float:
    """argparse type: a number in the open interval (0, 1)."""
    return _number(float, text, "a number in (0, 1)", lambda v: 0 < v < 1)


def device_name(text: str) -> str:
    """argparse type: a device that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``), checked with
    ``splitdyn.checks.check_device`` (``cuda`` without CUDA and unknown names are refused)."""
    try:
        check_device("device", text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


#: The value of a ``--beta`` option that ties the CLD rate to the mass, :math:`\beta = 8\sqrt{M}` (paper Sec. 5.3,
#: the setting of Table 4).
BETA_TIED = "8sqrtM"


def beta_value(text: str) -> float | str:
    """argparse type of a ``--beta`` option: a finite number > 0, or :data:`BETA_TIED` (case-insensitive)."""
    if text.strip().lower() == BETA_TIED.lower():
        return BETA_TIED
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or {BETA_TIED}, got {text!r}") from None


def resolve_beta(beta: float | str | None, mass: float) -> float | None:
    r"""``beta`` itself, or :math:`8\sqrt{M}` when it is :data:`BETA_TIED` (``None`` stays ``None``)."""
    if beta == BETA_TIED:
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not mass > 0:
            raise ValueError(f"mass must be a number > 0 to tie beta = 8 sqrt(M), got {mass!r}")
        return 8.0 * math.sqrt(mass)
    return beta


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Report the :data:`USER_ERRORS` raised inside the block as one line ``<prog>: error: <message>`` on stderr
    and exit with status 2 (a :class:`SystemExit`); other exceptions pass through. With the environment
    variable ``SPLITDYN_TRACEBACK=1`` nothing is caught."""
    try:
        yield
    except USER_ERRORS as exc:
        if os.environ.get("SPLITDYN_TRACEBACK") == "1":
            raise
        print(f"{prog}: error: {one_line(exc) or type(exc).__name__}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
