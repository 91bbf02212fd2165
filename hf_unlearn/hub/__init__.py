"""Publish unlearned models to the Hugging Face Hub with a model card, and load them back in one call.

```python
from hf_unlearn.hub import load_unlearned, push_unlearned

push_unlearned("npo-out", "me/llama-tofu-npo", forget_data="locuslab/TOFU:forget10")
model, tokenizer = load_unlearned("me/llama-tofu-npo")
```
"""

from __future__ import annotations

from ..citations import Paper
from .card import build_model_card, render_model_card, write_model_card
from .errors import HubAuthenticationError, HubError, HubNetworkError, HubServerError
from .eval_summary import TOFU_METRICS, eval_results_from_summary, find_eval_summary, load_eval_summary
from .facts import CardFacts, gather_card_facts
from .loading import load_unlearned, resolve_model_folder
from .papers import PAPERS
from .push import files_to_push, push_unlearned

__all__ = [
    "PAPERS",
    "TOFU_METRICS",
    "HubAuthenticationError",
    "HubError",
    "HubNetworkError",
    "HubServerError",
    "CardFacts",
    "Paper",
    "build_model_card",
    "eval_results_from_summary",
    "files_to_push",
    "find_eval_summary",
    "gather_card_facts",
    "load_eval_summary",
    "load_unlearned",
    "push_unlearned",
    "render_model_card",
    "resolve_model_folder",
    "write_model_card",
]
