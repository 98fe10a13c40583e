"""Engine names the CLI accepts, and how each is built."""

from __future__ import annotations

from swapcli.core.errors import UsageError
from swapcli.core.options import EngineOptions
from swapcli.swap.base import SwapEngine

ENGINE_NAMES = ("auto", "morph")


def create_engine(options: EngineOptions) -> SwapEngine:
    name = options.engine
    if name in ("auto", "morph"):
        # 'auto' picks the best installed engine; the embedded morph is the
        # only one that needs no downloaded weights.
        from swapcli.swap.morph import MorphEngine

        return MorphEngine(colour=options.colour)
    raise UsageError(f"unknown engine '{name}' (choose from {', '.join(ENGINE_NAMES)})")
