"""Reading the JSON files beside a saved unlearned model (`unlearning.json`, configurations, summaries)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..unlearning_state import UnlearningState

__all__ = ["load_unlearning_state", "read_json"]


def read_json(path: str | Path) -> Any:
    """The content of a JSON file; a ValueError naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def load_unlearning_state(folder: str | Path) -> dict[str, Any] | None:
    """`unlearning.json` of a saved model (what was unlearned and how) as the dict model cards read, or None if there
    is none (see [`~hf_unlearn.unlearning_state.UnlearningState`])."""
    state = UnlearningState.read(folder)
    return state.to_dict() if state is not None else None
