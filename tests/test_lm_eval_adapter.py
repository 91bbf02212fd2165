"""run_lm_eval: our in-memory models (plain, peft, a bare nn.Module) through lm-eval's HFLM on a local custom task."""

from __future__ import annotations

import copy
import json
import random
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from hf_unlearn import load_tofu
from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.evaluation.harness import DEFAULT_LM_EVAL_TASKS, as_hflm_model, run_lm_eval

NUM_DOCS = 12
TASK = "hfu_tofu_choice"


@pytest.fixture(scope="module")
def lm_eval_task(tmp_path_factory):
    """A 4-way multiple-choice task over bundled TOFU forget questions: the true answer (which the target model was
    fine-tuned on) among 3 shufflings of its words (same tokens, same length, so no length bias), at a rotating
    position; a YAML task config reading a local JSON Lines file: nothing is downloaded."""
    pytest.importorskip("lm_eval")
    root = tmp_path_factory.mktemp("lm_eval_task")
    rows = load_tofu("forget01", data_dir="bundled").select(range(NUM_DOCS))
    rng = random.Random(0)
    docs = []
    for i, row in enumerate(rows):
        words = row["answer"].split()
        distractors = set()
        while len(distractors) < 3:
            rng.shuffle(words)
            if " ".join(words) != row["answer"]:
                distractors.add(" ".join(words))
        choices = sorted(distractors)
        label = i % 4
        choices.insert(label, row["answer"])
        docs.append({"question": row["question"], "choices": choices, "label": label})
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / f"{TASK}.yaml").write_text(
        f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {root / "docs.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
    )
    return root, docs


@torch.no_grad()
def expected_accuracy(model, tokenizer, docs) -> float:
    """Accuracy by hand: the choice with the highest summed log-likelihood of " <choice>" after the question, with
    lm-eval's tokenization (context and context + continuation encoded whole, the continuation is the difference)."""
    correct = 0
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        context_ids = tokenizer(context).input_ids
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer(context + " " + choice).input_ids
            continuation = whole[len(context_ids) :]
            ids = torch.tensor([context_ids + continuation])
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            scores.append(logp[-len(continuation) :].gather(-1, targets[-len(continuation) :, None]).sum().item())
        correct += int(max(range(len(scores)), key=scores.__getitem__) == doc["label"])
    return correct / len(docs)


def run(model, tokenizer, task_dir, **kwargs):
    return run_lm_eval(model, tokenizer, [TASK], include_path=task_dir, include_defaults=False, batch_size=4, **kwargs)


class BareModule(torch.nn.Module):
    """A GRUN-like wrapper: a plain nn.Module (no config, device or tie_weights) holding the causal LM as ``.model``
    (as pyreft's models do), whose forward returns a tuple."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return (self.model(input_ids=input_ids, attention_mask=attention_mask).logits,)


def test_accuracy_matches_hand_computation(lm_eval_task, target_model, tokenizer, tmp_path):
    task_dir, docs = lm_eval_task
    untrained = tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=1)
    target_model.train()
    summary = run(target_model, tokenizer, task_dir, output_dir=tmp_path)
    assert target_model.training, "the model's train mode is restored"
    baseline = run(untrained, tokenizer, task_dir)

    assert summary[TASK]["acc"] == pytest.approx(expected_accuracy(target_model.eval(), tokenizer, docs))
    assert baseline[TASK]["acc"] == pytest.approx(expected_accuracy(untrained, tokenizer, docs))
    # The target model memorised these answers; the untrained one is at chance.
    assert summary[TASK]["acc"] > baseline[TASK]["acc"]
    assert summary[TASK]["acc"] >= 0.75
    written = json.loads((tmp_path / "lm_eval_summary.json").read_text())
    assert written == summary
    assert TASK in json.loads((tmp_path / "lm_eval_results.json").read_text())["results"]


def test_peft_and_bare_modules_give_the_same_results(lm_eval_task, target_model, tokenizer):
    task_dir, _ = lm_eval_task
    plain = run(target_model, tokenizer, task_dir, return_raw=True)
    # A fresh LoRA adapter is the identity (B = 0): the peft model scores exactly like the base model.
    peft_model = get_peft_model(copy.deepcopy(target_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    bare = BareModule(target_model)
    assert not hasattr(bare, "config")
    wrapped = as_hflm_model(bare)
    assert wrapped is not bare and wrapped.config is target_model.config
    assert as_hflm_model(target_model) is target_model and as_hflm_model(peft_model) is peft_model
    for other in (peft_model, bare):
        raw = run(other, tokenizer, task_dir, return_raw=True)
        assert raw["results"][TASK]["acc,none"] == plain["results"][TASK]["acc,none"]


def test_tokenizer_without_pad_token_is_not_modified(lm_eval_task, target_model, tokenizer):
    task_dir, _ = lm_eval_task
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    assert TASK in run(target_model, no_pad, task_dir, limit=2)
    assert no_pad.pad_token_id is None


def test_bad_arguments(lm_eval_task, target_model, tokenizer):
    task_dir, _ = lm_eval_task
    with pytest.raises(ValueError, match="Unknown lm-eval task"):
        run_lm_eval(target_model, tokenizer, ["no_such_task"], include_path=task_dir, include_defaults=False)
    with pytest.raises(ValueError, match="tasks is empty"):
        run_lm_eval(target_model, tokenizer, [], include_defaults=False)
    with pytest.raises(TypeError, match="nn.Module"):
        as_hflm_model("gpt2")


@pytest.mark.slow
def test_default_tasks_are_lm_eval_tasks():
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    assert set(DEFAULT_LM_EVAL_TASKS) <= set(TaskManager().all_tasks)


def test_missing_lm_eval_gives_an_install_hint(monkeypatch, target_model, tokenizer):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", None)
    with pytest.raises(ImportError, match=r"pip install \"hf-unlearn\[lm-eval\]\""):
        run_lm_eval(target_model, tokenizer, ["mmlu"])
