"""Moved to `hf_unlearn.demo.quickstart`; kept importable here."""

from .demo.quickstart import METHODS, Method, QuickstartResult, UnlearningRecipe, run_quickstart, unlearn_copy

__all__ = ["METHODS", "Method", "QuickstartResult", "UnlearningRecipe", "run_quickstart", "unlearn_copy"]
