r"""Plan once, sample many: the plans :func:`~splitdyn.sample.sample` made, kept for later calls.

A plan holds all the float64 host work of a step for a grid (coefficient tables, closed-form kernels, Cholesky
factors); :class:`PlanCache` keeps the plans of recent calls under a key of everything they depend on
(:func:`cache_key`), so that repeated calls with the same setup pay no host work.
"""

from __future__ import annotations

from collections import OrderedDict

from .checks import check_count
from .steps.base import Step

__all__ = ["PlanCache", "SAMPLE_PLANS", "cache_key"]


class PlanCache:
    """The plans :func:`~splitdyn.sample.sample` made, reused by later calls with the same setup.

    A call with the same ``process`` and ``score`` objects, the same ``step`` (name or object), score
    components, grid times, state shape, dtype and device, fusion and ``compile`` setting reuses the reverse SDE,
    the step and its plan: no host work (coefficient tables, closed-form kernels, Cholesky factors) is
    repeated. The least recently used entry goes beyond ``maxsize``. Entries keep their process and score
    alive; a process changed in place after a call is not seen by its cached plan: call :meth:`clear` (or pass
    ``cache=False`` to :func:`~splitdyn.sample.sample`). Reference solvers are not cached (they plan nothing).

    Parameters
    ----------
    maxsize:
        Most plans kept (0 disables the cache).

    Attributes
    ----------
    builds:
        Plans built through this cache so far.
    """

    def __init__(self, maxsize: int = 8) -> None:
        self.maxsize = check_count("maxsize", maxsize, minimum=0)
        self.entries: OrderedDict[tuple, tuple] = OrderedDict()
        self.builds = 0

    def lookup(self, key: tuple) -> tuple | None:
        """The entry stored under ``key`` (made the most recent), or ``None``."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def store(self, key: tuple, entry: tuple) -> None:
        """Keep ``entry`` under ``key``, dropping the least recently used beyond ``maxsize``."""
        self.builds += 1
        if self.maxsize == 0:
            return
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.maxsize:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every plan (and release the processes and scores they hold)."""
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)


#: The :class:`PlanCache` :func:`~splitdyn.sample.sample` uses by default (``splitdyn.SAMPLE_PLANS.clear()``
#: empties it).
#:
#: :meta hide-value:
SAMPLE_PLANS = PlanCache()


def cache_key(process, score, step, score_components, times, u, fusable: bool, compile) -> tuple | None:
    """The key of a :func:`~splitdyn.sample.sample` call's plan in a :class:`PlanCache`, or ``None`` when the
    call has nothing stable to key on (a step factory, unhashable score components)."""
    if not isinstance(step, (str, Step)):
        return None  # a factory (often a new partial each call): nothing stable to key on
    options = compile if not isinstance(compile, dict) else tuple(sorted((k, repr(v)) for k, v in compile.items()))
    try:
        components = None if score_components is None else tuple(score_components)
        hash(components)
    except TypeError:
        return None  # not a sequence of indices: ReverseSDE says what is wrong
    return (id(process), id(score), step if isinstance(step, str) else id(step), components, tuple(times),
            tuple(u.shape), u.dtype, u.device, fusable, options)
