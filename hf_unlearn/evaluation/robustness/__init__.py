"""Robustness audits: does the forgotten knowledge come back? One module per attack.

- [`relearning_attack`]: a few fine-tuning steps on part of the forget data, the rest measured before and after;
- [`quantization_attack`]: a 4-bit (NF4) or k-bit quantized copy, on any device;
- [`logit_lens`]: the answer decoded from every intermediate layer;
- [`RobustnessEvaluator`]: all of them on the unlearned model, the retain and the target model, with scores.

Each leaves its input model unchanged and reports the forget answers' probability (TOFU's, teacher forced).
"""

from __future__ import annotations

from .evaluator import ATTACKS, ROBUSTNESS_FILE, RobustnessEvaluator, format_robustness_table, plot_robustness
from .logit_lens import LogitLensResult, logit_lens
from .quantization import (
    NF4_CODE_BOOK,
    QuantizationAttackResult,
    quantization_attack,
    quantize_dequantize,
    quantized_copy,
)
from .relearning import RelearningAttackResult, relearning_attack, relearning_score
from .scoring import answer_probabilities, encode_qa, robustness_score, stability_score

__all__ = [
    "ATTACKS",
    "NF4_CODE_BOOK",
    "ROBUSTNESS_FILE",
    "RobustnessEvaluator",
    "format_robustness_table",
    "plot_robustness",
    "LogitLensResult",
    "QuantizationAttackResult",
    "RelearningAttackResult",
    "answer_probabilities",
    "encode_qa",
    "logit_lens",
    "quantization_attack",
    "quantize_dequantize",
    "quantized_copy",
    "relearning_attack",
    "relearning_score",
    "robustness_score",
    "stability_score",
]
