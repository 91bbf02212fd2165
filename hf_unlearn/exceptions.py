"""Errors raised while unlearning that callers may want to catch (the Hub's are in `hf_unlearn.hub.errors`)."""

from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the model was not updated with it."""
