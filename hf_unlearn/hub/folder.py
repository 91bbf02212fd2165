"""Reading the JSON files beside a saved unlearned model (`unlearning.json`, configurations, summaries)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..constants import UNLEARNING_STATE_FILE

__all__ = ["load_unlearning_state", "read_json"]


def read_json(path: str | Path) -> Any:
    """The content of a JSON file; a ValueError naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def load_unlearning_state(folder: str | Path) -> dict[str, Any] | None:
    """`unlearning.json` of a saved model (what was unlearned and how), or None if there is none."""
    path = Path(folder) / UNLEARNING_STATE_FILE
    if not path.is_file():
        return None
    state = read_json(path)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} must hold a JSON object, got {type(state).__name__}.")
    return dict(state)
