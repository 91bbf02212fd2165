"""Loading TOFU (Maini et al. 2024): from the Hub, from local JSON Lines files, or from the bundled subset."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, load_dataset

from ..constants import REFUSALS_FILE
from .source import DataSource, with_source

TOFU_HUB_ID = "locuslab/TOFU"

#: A small TOFU subset shipped with the package (MIT, CMU Locus Lab), in the Hub's layout and configuration names:
#: `forget01` / `forget01_perturbed` (the 2 forget authors of TOFU's forget01, 40 questions), `holdout01`,
#: `retain99` and `retain_perturbed` reduced to TOFU authors 0-7 (160 questions), `full` (those 10 authors),
#: and the first 40 rows of `real_authors`, `world_facts` and their `_perturbed` configurations.
BUNDLED_TOFU_DIR = Path(__file__).parent / "tofu_subset"
BUNDLED = "bundled"

#: TOFU's forget configurations and the retain configuration that complements each.
TOFU_RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def _resolve_dir(data_dir: str | Path) -> Path:
    return BUNDLED_TOFU_DIR if str(data_dir) == BUNDLED else Path(data_dir)


def available_tofu_configs(data_dir: str | Path = BUNDLED) -> list[str]:
    """Configuration names found in a local TOFU directory (default: the bundled subset)."""
    return sorted(p.stem for p in _resolve_dir(data_dir).glob("*.json"))


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line raises an error naming the file and line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not valid JSON: {err.msg}.") from err
    return rows


def load_tofu(config_name: str, data_dir: str | Path | None = None, split: str = "train") -> Dataset:
    """Load one TOFU configuration (`"forget10"`, `"retain90"`, `"forget10_perturbed"`, `"real_authors"`, ...).

    Args:
        config_name: the Hub's configuration name.
        data_dir: None (or `"locuslab/TOFU"`) loads TOFU from the Hub with `datasets.load_dataset`. A directory
            loads the JSON Lines file `<data_dir>/<config_name>.json` (the Hub's layout). `"bundled"` loads the small
            subset shipped with hf_unlearn (offline; see `BUNDLED_TOFU_DIR`).
        split: the Hub split (TOFU has only `"train"`).

    The dataset is tagged with where it came from ([`~hf_unlearn.data.source.data_source`]), which evaluation
    summaries and model cards state.
    """
    if data_dir is None or str(data_dir) == TOFU_HUB_ID:
        data = load_dataset(TOFU_HUB_ID, config_name, split=split)
        return with_source(data, DataSource("hub", dataset=TOFU_HUB_ID, config=config_name))
    path = _resolve_dir(data_dir) / f"{config_name}.json"
    if not path.is_file():
        found = available_tofu_configs(data_dir)
        raise FileNotFoundError(
            f"No TOFU configuration {config_name!r} in {_resolve_dir(data_dir)} (expected {path.name}). "
            f"Available there: {', '.join(found) if found else 'none'}."
        )
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} holds no rows.")
    if str(data_dir) == BUNDLED:
        source = DataSource("bundled", dataset=TOFU_HUB_ID, config=config_name)
    else:
        source = DataSource("local", config=config_name, path=str(path.resolve()))
    return with_source(Dataset.from_list(rows), source)


def load_refusal_answers(path: str | Path | None = None) -> list[str]:
    """Refusal answers for IDK-style losses: one plain-text answer a line (default: TOFU's `idontknow.jsonl`)."""
    path = Path(path) if path is not None else BUNDLED_TOFU_DIR / REFUSALS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Refusal answers file {path} does not exist.")
    answers = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not answers:
        raise ValueError(f"Refusal answers file {path} is empty; it needs one answer per line.")
    return answers
