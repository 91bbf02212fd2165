"""Robustness audits: does the forgotten knowledge come back? One module per attack.

- [`relearning_attack`]: a few fine-tuning steps on part of the forget data, the rest measured before and after;
- [`quantization_attack`]: a 4-bit (NF4) or k-bit quantized copy, on any device;
- [`logit_lens`]: the answer decoded from every intermediate layer;
- [`probing_attack`]: paraphrased, jailbreak-style, primed and noisy prompts (and, for GRUN, the gate's firing);
- [`mia_scores`], [`mia_reference`], [`mia_gradient_norm`]: membership inference as open-unlearning computes it
  (LOSS, ZLib, Min-K%, Min-K%++), against a reference model, and by gradient norm;
- [`jailbreak_attack`]: the five published TOFU jailbreak templates (uyen-lk/probing-unlearning-robustness);
- [`PRESETS`], [`get_preset`], [`run_preset`]: attacks with the settings of a published paper, chosen by name
  (quantization as Zhang et al. 2024, open-unlearning's robustness meta-evaluation, Unlearn-Smooth's relearning,
  Deeb and Roger's retraining, Łucki et al.'s fine-tuning on unrelated text, the jailbreak templates);
- [`RobustnessEvaluator`]: all of them on the unlearned model, the retain and the target model, with scores, each
  model's strongest attack and open-unlearning's robustness figure.

Each leaves its input model unchanged and reports the forget answers' probability (TOFU's, teacher forced).
"""

from __future__ import annotations

from .evaluator import (
    ATTACKS,
    ROBUSTNESS_FILE,
    RobustnessEvaluator,
    format_robustness_table,
    format_worst_case,
    plot_robustness,
    worst_case,
)
from .jailbreak import JAILBREAK_STRATEGIES, JAILBREAK_TEMPLATES, jailbreak_attack, jailbreak_prompt
from .logit_lens import LogitLensResult, logit_lens
from .mia import mia_gradient_norm, mia_reference, mia_scores
from .presets import PRESETS, AttackPreset, get_preset, open_unlearning_scores, run_preset
from .probing import PROBING_VARIANTS, ProbingResult, perturb_characters, probing_attack
from .quantization import (
    FP4_CODE_BOOK,
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
    "AttackPreset",
    "FP4_CODE_BOOK",
    "JAILBREAK_STRATEGIES",
    "JAILBREAK_TEMPLATES",
    "NF4_CODE_BOOK",
    "PRESETS",
    "ROBUSTNESS_FILE",
    "RobustnessEvaluator",
    "format_robustness_table",
    "format_worst_case",
    "get_preset",
    "jailbreak_attack",
    "jailbreak_prompt",
    "open_unlearning_scores",
    "run_preset",
    "worst_case",
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
