"""The optional pyreft / pyvene dependency, imported with an error that says how to install it."""

from __future__ import annotations

import contextlib
import importlib
import io
from types import ModuleType

INSTALL_HINT = (
    "GRUN needs pyreft and pyvene, installed without their declared dependencies (which do not resolve with "
    "transformers 5): `pip install 'hf-unlearn[grun]' && pip install --no-deps pyreft==0.0.7 pyvene==0.1.8` "
    "(see hf_unlearn.grun's documentation)."
)


def import_pyreft() -> ModuleType:
    """Import and return `pyreft`; raise an ImportError with the install command when it (or pyvene) is missing."""
    try:
        # pyvene prints a note about its optional nnsight backend on import; GRUN does not use that backend.
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("pyreft")
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} (import failed: {err})") from err
