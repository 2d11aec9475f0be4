"""splitdyn_cld: critically-damped Langevin diffusion score-based generative models on top of splitdyn."""

from .process import CLD

__all__ = ["CLD"]
