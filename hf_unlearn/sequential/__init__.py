"""Sequential (continual) unlearning: deletion requests that keep arriving, each unlearned from the model the
previous one left, measured after each (`hf-unlearn sequential --config FILE`).

```python
from hf_unlearn.sequential import SequentialConfig, run_sequence

config = SequentialConfig.from_yaml("examples/sequential/tofu_forget05_llama32_1b.yaml")
results = run_sequence(config, "sequential_output")   # results.json, report.md, sequential.png
```

`examples/sequential/muse_news_sust.yaml`: MUSE-News's sustainability folds (`data: {source: muse}`).
"""

from .config import MUSE_FOLDS, REFERENCES, RequestsSpec, SequentialClaim, SequentialConfig

__all__ = [
    "MUSE_FOLDS",
    "REFERENCES",
    "RequestsSpec",
    "SequentialClaim",
    "SequentialConfig",
    "format_plan",
    "run_sequence",
    "write_report",
]


def __getattr__(name: str):
    # The runner, the plan and the report import torch, datasets and matplotlib: only when asked for.
    if name == "run_sequence":
        from .runner import run_sequence

        return run_sequence
    if name == "format_plan":
        from .plan import format_plan

        return format_plan
    if name == "write_report":
        from .report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
