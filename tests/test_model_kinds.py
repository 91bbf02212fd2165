"""Every model kind is scored and analysed the same way.

The matrix: each consumer of teacher-forced scores (the TOFU evaluator's evaluation and its per-shard logs, MUSE's
PrivLeak, the membership-inference attacks, the robustness attacks' answer probability and logit lens, the G-effect's
risks,
TOFU-mini's trajectories and the lm-eval wrapper) x each model kind (full weights, a LoRA adapter, a GRUN model, two
stacked GRUN requests) equals an independent computation: one example at a time, unpadded, through a forward WITH
labels, which is how a GRUN model learns where the prompt ends in training (the edit at the last prompt token). Before
the method registry, a GRUN model scored without labels was edited at the last answer token in every consumer but
`run_tofu_evaluation`, and the G-effect's reference of a GRUN model was a frozen copy of the edited model.
"""

from __future__ import annotations

import copy
import math
import sys

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.evaluation.metrics import mia_loss, mia_min_k
from hf_unlearn.methods import get_method, list_methods, method_for_config, method_of_model

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("full", "lora", "grun", "grun2")
N_QUESTIONS = 4


def _perturb(params, seed: int, scale: float) -> None:
    """Move trainable parameters (a fresh LoRA's B is zero, a fresh GRUN gate half-open) so that each kind scores
    differently from the base model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def make_model(kind: str, base: torch.nn.Module) -> torch.nn.Module:
    base = copy.deepcopy(base).eval()
    if kind == "full":
        _perturb(base.parameters(), 0, 0.01)
        return base
    if kind == "lora":
        model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        _perturb([p for n, p in model.named_parameters() if "lora_B" in n], 1, 0.2)
        return model.eval()
    pytest.importorskip("pyreft")
    from hf_unlearn.grun import GRUNConfig, get_grun_model

    model = get_grun_model(base, GRUNConfig(layers=[1], rank=4), seed=2)
    _perturb([p for p in model.parameters() if p.requires_grad], 3, 0.5)
    if kind == "grun2":
        model = get_grun_model(model, GRUNConfig(layers=[0, 1], rank=4), seed=4)
        _perturb([p for p in model.parameters() if p.requires_grad], 5, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def base_model(target_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module", params=KINDS)
def kind_model(request, base_model):
    return request.param, make_model(request.param, base_model)


@pytest.fixture(scope="module")
def forget_rows(tofu):
    return tofu["forget01_perturbed"].select(range(N_QUESTIONS))


def pairs_of(tokenizer, rows) -> list[tuple[list[int], list[int]]]:
    encoder = PromptEncoder(tokenizer)
    return [encoder.encode([{"role": "user", "content": r["question"]}], r["answer"]) for r in rows]


@torch.no_grad()
def reference_logprobs(model, prompt: list[int], answer: list[int]) -> np.ndarray:
    """The independent computation: one unpadded row, a forward with labels (prompt tokens -100), then the
    log-softmax of each answer position's logits at its token."""
    ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[-100] * len(prompt) + answer])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).logits[0].double()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(-1, torch.tensor(answer)[:, None]).squeeze(-1).numpy()


def reference_mean_nll(model, pairs) -> np.ndarray:
    return np.array([-reference_logprobs(model, p, a).mean() for p, a in pairs])


# -------------------------------------------------------------------------------------------------- the registry
def test_each_kind_is_declared_once_and_found_from_the_model_the_config_and_the_folder(kind_model, tmp_path):
    kind, model = kind_model
    expected = {"full": "full", "lora": "peft", "grun": "grun", "grun2": "grun"}[kind]
    assert method_of_model(model).kind == expected
    assert list_methods() == ["grun", "peft", "full"]  # the default kind is recognised last
    method = get_method(expected)
    assert method.reference == ("frozen_copy" if expected == "full" else "adapters_off")
    assert (method.scoring_inputs is not None) == (expected == "grun")
    # a distributed wrapper is looked through
    wrapper = torch.nn.Module()
    wrapper.module = model
    assert method_of_model(wrapper) is method


def test_configs_choose_the_trainer_builder():
    pytest.importorskip("pyreft")
    from hf_unlearn.grun import GRUNConfig

    assert method_for_config(None).kind == "full"
    assert method_for_config(LoraConfig(r=2)).kind == "peft"
    assert method_for_config(GRUNConfig(layers=[0])).kind == "grun"
    with pytest.raises(TypeError, match="No registered unlearning method trains with a dict"):
        method_for_config({"r": 2})


def test_a_registered_kind_is_asked_by_the_scoring_path(base_model, tokenizer, tofu):
    """A method of one's own: a model class that edits nothing but records what it was told; its declaration is
    all it takes for every consumer to pass it the prompt lengths."""
    from hf_unlearn.evaluation.scoring import score_answers
    from hf_unlearn.methods import UnlearningMethod, register_method
    from hf_unlearn.methods.registry import _METHODS

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, prompt_lengths=None, **kwargs):
            seen.append(prompt_lengths.tolist())
            return self.inner(**kwargs)

    module = sys.modules[__name__]
    module.Recorder = Recorder  # importable by path, as registered classes are
    register_method(
        UnlearningMethod(
            kind="recorder",
            marker_file="recorder.json",
            noun="a recorder",
            description="a recorder",
            resave="-",
            trainer="hf_unlearn.trainer.factory:build_unlearning_trainer",
            recorded_in=lambda state: state.get("method") == "recorder",
            model_class=f"{__name__}:Recorder",
            scoring_inputs=lambda lengths: {"prompt_lengths": lengths},
        )
    )
    try:
        pairs = pairs_of(tokenizer, tofu["forget01_perturbed"].select(range(3)))
        scores = score_answers(Recorder(base_model), pairs, pad_token_id=tokenizer.pad_token_id, batch_size=8)
        assert sorted(x for batch in seen for x in batch) == sorted(len(p) for p, _ in pairs)
        np.testing.assert_allclose(scores.mean_nll, reference_mean_nll(base_model, pairs), rtol=1e-5)
    finally:
        del _METHODS["recorder"]


# -------------------------------------------------------------------------------------------------- the consumers
def test_tofu_evaluator_every_entry_point(kind_model, tokenizer, forget_rows):
    from hf_unlearn.evaluation.tofu import TOFUEvaluator

    _, model = kind_model
    evaluator = TOFUEvaluator(
        model, tokenizer, datasets={"forget": forget_rows}, splits=["forget"], max_new_tokens=2, progress=False
    )
    expected = reference_mean_nll(model, pairs_of(tokenizer, forget_rows))
    summary = evaluator.evaluate()
    losses = evaluator.logs["forget"]["avg_gt_loss"]
    np.testing.assert_allclose([losses[str(i)] for i in range(N_QUESTIONS)], expected, rtol=1e-5)
    assert summary["forget_probability"] == pytest.approx(float(np.exp(-expected).mean()), rel=1e-5)
    # per-shard logs (the evaluation callback's path, data-parallel evaluation)
    shard = evaluator.compute_logs(shard=(1, 2))["forget"]["avg_gt_loss"]
    np.testing.assert_allclose([shard["1"], shard["3"]], expected[1::2], rtol=1e-5)


def test_muse_privleak(kind_model, tokenizer, forget_rows):
    from hf_unlearn.evaluation.muse import MUSEEvaluator

    _, model = kind_model
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in forget_rows]
    data = {"privleak/forget": [{"text": t} for t in texts], "privleak/holdout": [{"text": t} for t in texts[:2]]}
    evaluator = MUSEEvaluator(model, tokenizer, metrics=["privleak"], datasets=data, progress=False, batch_size=3)
    evaluator.evaluate()
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        logp = reference_logprobs(model, ids[:1], ids[1:])  # every token after the first is scored
        row = evaluator.logs["privleak_forget"][i]
        assert row["loss"] == pytest.approx(mia_loss(logp), rel=1e-5)
        assert row["min_k"] == pytest.approx(mia_min_k(logp, evaluator.min_k), rel=1e-5)


def test_membership_inference_and_robustness_scores(kind_model, tokenizer, forget_rows):
    from hf_unlearn.evaluation.robustness.logit_lens import logit_lens
    from hf_unlearn.evaluation.robustness.mia import mean_answer_nll, mia_gradient_norm
    from hf_unlearn.evaluation.robustness.scoring import answer_probabilities, encode_qa

    _, model = kind_model
    pairs = pairs_of(tokenizer, forget_rows)
    expected = reference_mean_nll(model, pairs)
    np.testing.assert_allclose(mean_answer_nll(model, tokenizer, forget_rows, progress=False), expected, rtol=1e-5)
    probabilities = answer_probabilities(model, tokenizer, encode_qa(tokenizer, forget_rows), batch_size=3)
    np.testing.assert_allclose(probabilities, np.exp(-expected), rtol=1e-5)
    lens = logit_lens(model, tokenizer, forget_rows, batch_size=3)
    np.testing.assert_allclose(lens.per_question[-1], np.exp(-expected), rtol=1e-5)  # the last layer: the model's

    # the gradient-norm attack: the gradient of the mean answer NLL of a forward with labels
    params = [p for n, p in model.named_parameters() if n.endswith("lm_head.weight")]
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(True)
    try:
        rows = forget_rows.select(range(2))
        scores = mia_gradient_norm(model, tokenizer, rows, parameters=params, loss_tokens="all", progress=False)
        for score, (prompt, answer) in zip(scores, pairs[:2]):
            ids = torch.tensor([prompt + answer])
            labels = torch.tensor([[-100] * len(prompt) + answer])
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            (grad,) = torch.autograd.grad(loss, params)
            assert score == pytest.approx(float(torch.linalg.vector_norm(grad)), rel=1e-4)
    finally:
        for p in params:
            p.requires_grad_(any(p is t for t in trainable))


def test_g_effect_risks(kind_model, tokenizer, tofu):
    from hf_unlearn.analysis import build_geffect_batch, compute_g_effect

    _, model = kind_model
    model = copy.deepcopy(model)
    method = method_of_model(model)
    method.make_trainable(model)
    forget, retain = tofu["forget01"].select(range(3)), tofu["retain99"].select(range(3))
    batch = build_geffect_batch(tokenizer, forget, retain, num_samples=3, seed=0)
    result = compute_g_effect(model, "ga", batch, token_average="answer")
    for split, data in (("forget", forget), ("retain", retain)):
        expected = reference_mean_nll(model, pairs_of(tokenizer, data)).mean()
        assert getattr(result, f"{split}_risk") == pytest.approx(expected, rel=1e-5)


def test_target_evaluation(kind_model, tokenizer, tofu):
    """The cheap evaluation of stop-at-target runs and of hf_unlearn.compare's trajectories (`target_logs`)."""
    from hf_unlearn.evaluation import TOFUEvaluator, target_logs, target_metrics

    _, model = kind_model
    forget = tofu["forget01_perturbed"].select(range(N_QUESTIONS)).to_list()
    retain = tofu["retain_perturbed"].select(range(2)).to_list()
    rows = {"forget": forget, "retain": retain}
    evaluator = TOFUEvaluator(model, tokenizer, datasets=rows, splits=["retain", "forget"], forget_split="forget01",
                              data_dir="bundled", max_new_tokens=1, progress=False)  # fmt: skip
    metrics = ["forget_probability", "retain_probability"]
    point = target_metrics(target_logs(evaluator, metrics), metrics)
    for split, rows in (("forget", forget), ("retain", retain)):
        expected = float(np.exp(-reference_mean_nll(model, pairs_of(tokenizer, rows))).mean())
        assert point[f"{split}_probability"] == pytest.approx(expected, rel=1e-5)


def test_lm_eval_log_likelihoods(kind_model, tokenizer):
    pytest.importorskip("lm_eval")
    from hf_unlearn.evaluation.harness import make_hflm

    _, model = kind_model
    lm = make_hflm(model, tokenizer, batch_size=2)
    contexts = ["Question: Who wrote it?\nAnswer:", "Question: Where was she born?\nAnswer:"]
    continuations = [" The author", " In a city far away"]
    requests = []
    for context, continuation in zip(contexts, continuations):
        context_ids = tokenizer(context)["input_ids"]
        continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        requests.append(((context, continuation), context_ids, continuation_ids))
    results = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    for (_, context_ids, continuation_ids), (loglikelihood, greedy) in zip(requests, results):
        logp = reference_logprobs(model, context_ids, continuation_ids)
        assert loglikelihood == pytest.approx(float(logp.sum()), rel=1e-5)
        ids = torch.tensor([context_ids + continuation_ids])
        labels = torch.tensor([[-100] * len(context_ids) + continuation_ids])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).logits[0]
        argmax = logits[len(context_ids) - 1 : -1].argmax(-1).tolist()
        assert greedy == (argmax == continuation_ids)


# -------------------------------------------------------------------------------------------------- GRUN specifics
def test_grun_scores_differ_from_an_edit_at_the_last_answer_token(base_model, tokenizer, forget_rows):
    """What the matrix guards against: without the prompt's end, a GRUN forward edits the last attended token."""
    from hf_unlearn.evaluation.tofu import TOFUEvaluator

    model = make_model("grun", base_model)
    pairs = pairs_of(tokenizer, forget_rows)
    scored = TOFUEvaluator(
        model, tokenizer, datasets={"forget": forget_rows}, splits=["forget"], max_new_tokens=1, progress=False
    ).score(pairs)
    batch = pad_examples(pairs[:1], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # no labels
    logp = torch.log_softmax(logits[0, :-1].double(), -1).gather(-1, batch["input_ids"][0, 1:, None]).squeeze(-1)
    edited_at_end = -float(logp[len(pairs[0][0]) - 1 :].sum())
    assert not math.isclose(scored[0][0], edited_at_end, rel_tol=1e-4)
    assert scored[0][0] == pytest.approx(-reference_logprobs(model, *pairs[0]).sum(), rel=1e-5)


@pytest.mark.parametrize("kind", ["grun", "grun2"])
def test_g_effect_of_a_grun_model_uses_its_edits_off_reference(kind, base_model, tokenizer, tofu):
    """NPO's reference for a GRUN model is the model with its edits switched off (as GRUNTrainer trains it), not a
    frozen copy of the edited model: the G-effect equals the one computed with the base model as `ref_model`."""
    from hf_unlearn.analysis import build_geffect_batch, compute_g_effect

    model = make_model(kind, base_model)
    get_method("grun").make_trainable(model)
    batch = build_geffect_batch(tokenizer, tofu["forget01"].select(range(3)), tofu["retain99"].select(range(3)))
    default = compute_g_effect(model, "npo", batch)
    with_base = compute_g_effect(model, "npo", batch, ref_model=copy.deepcopy(base_model))
    assert default.forget == pytest.approx(with_base.forget, rel=1e-5)
    assert default.retain == pytest.approx(with_base.retain, rel=1e-5)
    frozen_copy = compute_g_effect(model, "npo", batch, ref_model=copy.deepcopy(model))
    assert frozen_copy.forget != pytest.approx(default.forget, rel=1e-3)


def test_analyze_on_a_saved_grun_folder_uses_the_edits_off_reference(
    base_model, target_model_dir, tokenizer, tmp_path
):
    """`hf-unlearn analyze` on a saved GRUN folder: the edits-off reference, and the newest request's parameters."""
    import json

    from hf_unlearn.cli import main
    from hf_unlearn.grun import save_grun_model

    model = make_model("grun", base_model)
    folder = tmp_path / "grun"
    save_grun_model(model, folder)
    config = json.loads((folder / "grun_config.json").read_text())
    config["base_model_name_or_path"] = str(target_model_dir)
    (folder / "grun_config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    common = ["analyze", "--model", str(folder), "--objective", "npo", "--forget-split", "forget01"]
    common += ["--retain-split", "retain99", "--data-dir", "bundled", "--num-samples", "3", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "default.json")]) == 0
    assert main([*common, "--ref-model", str(target_model_dir), "--output", str(tmp_path / "base.json")]) == 0
    default = json.loads((tmp_path / "default.json").read_text())
    with_base = json.loads((tmp_path / "base.json").read_text())
    assert default["forget"] == pytest.approx(with_base["forget"], rel=1e-5)
    assert default["retain"] == pytest.approx(with_base["retain"], rel=1e-5)
    assert default["grad_norms"]["objective"] > 0, "the GRUN modules' parameters were analysed"
