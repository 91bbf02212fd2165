"""Robustness audits: does the forgotten knowledge come back? One module per attack.

- [`relearning_attack`]: a few fine-tuning steps on part of the forget data, the rest measured before and after;
- [`quantization_attack`]: a 4-bit (NF4) or k-bit quantized copy, on any device;
- [`logit_lens`]: the answer decoded from every intermediate layer;
- [`probing_attack`]: paraphrased, jailbreak-style, primed and noisy prompts (and, for GRUN, the gate's firing);
- [`mia_scores`], [`mia_reference`], [`mia_gradient_norm`]: membership inference as open-unlearning computes it
  (LOSS, ZLib, Min-K%, Min-K%++), against a reference model, and by gradient norm;
- [`RobustnessEvaluator`]: all of them on the unlearned model, the retain and the target model, with scores.

Each leaves its input model unchanged and reports the forget answers' probability (TOFU's, teacher forced).
"""

from __future__ import annotations

from .evaluator import ATTACKS, ROBUSTNESS_FILE, RobustnessEvaluator, format_robustness_table, plot_robustness
from .logit_lens import LogitLensResult, logit_lens
from .mia import mia_gradient_norm, mia_reference, mia_scores
from .probing import PROBING_VARIANTS, ProbingResult, perturb_characters, probing_attack
from .quantization import (
    NF4_CODE_BOOK,
    QuantizationAttackResult,
    quantization_attack,
    quantize_dequantize,
    quantized_copy,
    resolve_backend,
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
    "PROBING_VARIANTS",
    "ProbingResult",
    "QuantizationAttackResult",
    "RelearningAttackResult",
    "answer_probabilities",
    "encode_qa",
    "logit_lens",
    "mia_gradient_norm",
    "mia_reference",
    "mia_scores",
    "perturb_characters",
    "probing_attack",
    "quantization_attack",
    "quantize_dequantize",
    "quantized_copy",
    "resolve_backend",
    "relearning_attack",
    "relearning_score",
    "robustness_score",
    "stability_score",
]
