"""Compare unlearning methods fairly on any model: at matched forgetting, with one learning-rate rule for all and
paired verdicts over seeds (`hf-unlearn compare --config FILE`).

```python
from hf_unlearn.compare import CompareConfig, run_comparison

config = CompareConfig.from_yaml("examples/compare/tofu_mini_quick.yaml")
results = run_comparison(config, "compare_output")   # results.json, report.md, plots
```
"""

from .config import AttackSpec, Claim, CompareConfig, DataSpec, MethodSpec, NamedTarget
from .rules import MatchedValue, Verdict, choose_learning_rate, paired_verdict

__all__ = [
    "AttackSpec",
    "Claim",
    "CompareConfig",
    "DataSpec",
    "MatchedValue",
    "MethodSpec",
    "NamedTarget",
    "Verdict",
    "choose_learning_rate",
    "format_plan",
    "paired_verdict",
    "run_comparison",
    "write_report",
]


def __getattr__(name: str):
    # The runner, the plan and the report import torch, transformers and matplotlib: only when asked for.
    if name == "run_comparison":
        from .runner import run_comparison

        return run_comparison
    if name == "format_plan":
        from .plan import format_plan

        return format_plan
    if name == "write_report":
        from .report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
