"""Where data came from: the Hub's TOFU, the subset bundled with hf_unlearn, a local file, or rows given in memory.

Evaluation summaries and model cards state it, so that a number computed on the bundled subset or on one's own files
is never reported as a TOFU benchmark result. [`load_tofu`](hf_unlearn.data.load_tofu) tags what it loads; any
other dataset is described by its rows (count and fingerprint).

```python
from hf_unlearn.data import data_source, load_tofu

data_source(load_tofu("forget01", data_dir="bundled")).describe()
# "forget01 of the locuslab/TOFU subset bundled with hf_unlearn (40 rows; not the benchmark)"
```
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["DATA_SOURCE_KINDS", "DataSource", "data_source", "rows_fingerprint", "with_source"]

#: hub: a Hub dataset (a benchmark when it is one); bundled: the TOFU subset shipped with hf_unlearn; local: files
#: on disk; in_memory: rows given directly.
DATA_SOURCE_KINDS = ("hub", "bundled", "local", "in_memory")
# datasets' free-text `DatasetInfo.description` carries the tag, so that it survives `select`, `map`, `shuffle`.
_TAG = "hf_unlearn data source: "


def rows_fingerprint(rows: Any) -> str:
    """A short SHA-256 of the rows' JSON (key order ignored): equal rows, equal fingerprint."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(dict(row), sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DataSource:
    """Where a set of rows came from.

    Attributes:
        kind: one of [`DATA_SOURCE_KINDS`].
        dataset: the Hub dataset id (`"locuslab/TOFU"`), for `hub` and `bundled` (the dataset it is a subset of).
        config: its configuration (`"forget01"`), if any.
        path: the local file or folder, for `local`.
        num_rows: the number of rows.
        fingerprint: [`rows_fingerprint`] of the rows (None when not computed).
    """

    kind: str
    dataset: str | None = None
    config: str | None = None
    path: str | None = None
    num_rows: int | None = None
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_SOURCE_KINDS:
            raise ValueError(f"DataSource.kind must be one of {list(DATA_SOURCE_KINDS)}, got {self.kind!r}.")

    @property
    def is_hub_dataset(self) -> bool:
        """Whether the rows are a Hub dataset's (what a card may list as `datasets` and report results on)."""
        return self.kind == "hub" and bool(self.dataset)

    def describe(self) -> str:
        """One phrase saying what the rows are, for cards and reports."""
        rows = f"{self.num_rows} rows" if self.num_rows is not None else "rows"
        config = f"{self.config} of " if self.config else ""
        if self.kind == "hub":
            return f"{config}{self.dataset} from the Hugging Face Hub ({rows})"
        if self.kind == "bundled":
            return f"{config}the {self.dataset or 'TOFU'} subset bundled with hf_unlearn ({rows}; not the benchmark)"
        fingerprint = f", sha256 {self.fingerprint}" if self.fingerprint else ""
        if self.kind == "local":
            return f"{config}local data {self.path} ({rows}{fingerprint})"
        return f"{config}rows given in memory ({rows}{fingerprint})"

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSource:
        known = {
            key: data[key] for key in ("kind", "dataset", "config", "path", "num_rows", "fingerprint") if key in data
        }
        return cls(**known)


def with_source(dataset: Any, source: DataSource) -> Any:
    """Tag a `datasets.Dataset` with where it came from (in place; returns it). Its row count and fingerprint are
    filled in when missing. Anything without `datasets`' info is returned untouched."""
    if not hasattr(getattr(dataset, "info", None), "description"):
        return dataset
    if source.num_rows is None or source.fingerprint is None:
        source = replace(source, num_rows=len(dataset), fingerprint=source.fingerprint or rows_fingerprint(dataset))
    dataset.info.description = _TAG + json.dumps(source.to_dict(), sort_keys=True)
    return dataset


def data_source(data: Any) -> DataSource:
    """Where `data` came from: the tag of [`with_source`] (which [`load_tofu`](hf_unlearn.data.load_tofu) sets; a
    selection of tagged rows keeps their origin with its own count and fingerprint), else rows given in memory,
    described by their count and fingerprint. `data` is a `datasets.Dataset` or a sequence of
    row mappings."""
    info = getattr(data, "info", None)
    description = getattr(info, "description", None) or ""
    if description.startswith(_TAG):
        try:
            source = DataSource.from_dict(json.loads(description[len(_TAG) :]))
        except (ValueError, TypeError):
            source = None  # a tag someone edited: describe the rows instead
        if source is not None and source.num_rows is not None and source.num_rows != len(data):
            # a selection of the tagged rows: the same origin, these rows
            source = replace(source, num_rows=len(data), fingerprint=rows_fingerprint(data))
        if source is not None:
            return source
    rows: Sequence[Any] = data
    # a datasets.Dataset carries a fingerprint of its own: no need to hash every row of a large one
    fingerprint = getattr(data, "_fingerprint", None) or rows_fingerprint(rows)
    return DataSource(kind="in_memory", num_rows=len(rows), fingerprint=str(fingerprint)[:16])
