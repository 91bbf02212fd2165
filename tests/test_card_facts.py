"""Cards tell what was trained: the data actually used, the schedule and batch, the base model by name, a usage
snippet that fits the model kind and prompt format, and only complete evaluations on the benchmark's data in
`model-index`; a card is written at every final save, and results of other weights are refused."""

from __future__ import annotations

import json

import pytest
from helpers import make_trainer
from huggingface_hub import ModelCard
from peft import LoraConfig

from hf_unlearn.evaluation.tofu import TOFUEvaluator
from hf_unlearn.hub import build_model_card
from hf_unlearn.io import record_weights_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained_full(target_model_dir, tokenizer, small_forget, small_retain, tmp_path_factory):
    """A full-weights run on the bundled subset, saved with save_strategy="no" (the recipes' setting)."""
    out = tmp_path_factory.mktemp("full")
    trainer = make_trainer(
        str(target_model_dir), tokenizer, small_forget, small_retain, out, forget_loss="npo",
        per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=2,
    )  # fmt: skip
    trainer.train()
    trainer.save_model()
    return out, trainer


def test_unlearning_json_records_the_data_base_model_schedule_and_prompt_format(trained_full, target_model_dir):
    out, _ = trained_full
    state = json.loads((out / "unlearning.json").read_text())
    assert state["base_model"] == str(target_model_dir)
    assert state["forget_data"]["kind"] == "bundled" and state["forget_data"]["config"] == "forget01"
    assert state["retain_data"]["config"] == "retain99" and state["use_chat_template"] is False
    training = state["training"]
    assert (training["steps"], training["max_steps"], training["per_device_train_batch_size"]) == (2, 2, 2)
    assert training["gradient_accumulation_steps"] == 2 and training["lr_scheduler_type"] == "linear"


def test_a_card_is_written_at_the_final_save_and_says_what_was_trained(trained_full, target_model_dir):
    out, _ = trained_full
    card = ModelCard((out / "README.md").read_text())  # save_strategy="no": written by save_model
    assert card.data.datasets is None  # the bundled subset is not locuslab/TOFU
    assert (
        "Trained on forget01 of the locuslab/TOFU subset bundled with hf_unlearn (16 rows; not the benchmark)"
        in card.text
    )
    assert f"This model is `{target_model_dir.name}` (a local model)" in card.text
    assert "| Training | 2 optimizer steps (max_steps 2) |" in card.text
    assert "| Batch size | 2 per device x 2 accumulation x 1 process(es) = 4 forget examples per step |" in card.text
    assert "retain99 of the locuslab/TOFU subset bundled with hf_unlearn" in card.text
    # full weights need no base model to load, and the snippet prompts as training did
    assert f'load_unlearned("{out.name}")' in card.text and "base_model=" not in card.text.split("## Usage")[1]
    assert "PromptEncoder(tokenizer, use_chat_template=False)" in card.text


def test_a_partial_evaluation_is_labelled_and_stays_out_of_model_index(trained_full, tokenizer):
    out, trainer = trained_full
    summary = TOFUEvaluator(
        trainer.model, tokenizer, forget_split="forget01", data_dir="bundled", max_questions=4, max_new_tokens=8,
        progress=False,
    ).evaluate(output_dir=out / "eval")  # fmt: skip
    record_weights_fingerprint(out / "eval", out)
    card = build_model_card(out)
    assert card.data.eval_results is None
    section = card.text.split("## Evaluation")[1]
    assert "Not a benchmark result" in section and "partial: the first 4 of 40 forget questions" in section
    assert "max_new_tokens=8" in section
    assert f"| Forget probability | {summary['forget_probability']:.4g} |" in section
    # the same numbers on the Hub's data and complete: a benchmark result
    complete = dict(summary)
    hub = {"kind": "hub", "dataset": "locuslab/TOFU"}
    complete["evaluation"] = {**summary["evaluation"], "partial": [], "data": {"forget": hub, "retain": hub}}
    card = build_model_card(out, eval_results=complete)
    assert {result.metric_type for result in card.data.eval_results} >= {"forget_probability", "model_utility"}


def test_a_lora_folder_gets_our_card_not_pefts_template(
    target_model_dir, tokenizer, small_forget, small_retain, tmp_path
):
    trainer = make_trainer(
        str(target_model_dir), tokenizer, small_forget, small_retain, tmp_path / "lora", forget_loss="ga",
        max_steps=1, peft_config=LoraConfig(r=2, target_modules=["q_proj"]),
    )  # fmt: skip
    trainer.train()
    trainer.save_model()
    card = ModelCard((tmp_path / "lora" / "README.md").read_text())
    assert "hf-unlearn" in card.data.tags and card.data.library_name == "peft"
    assert 'base_model="<the base model' in card.text  # an adapter on a local base model
    assert "[More Information Needed]" not in card.text  # peft's template


def test_push_eval_results_of_other_weights_is_refused(trained_full, target_model, tokenizer, tmp_path):
    out, _ = trained_full
    other = tmp_path / "other"
    target_model.save_pretrained(other)
    TOFUEvaluator(
        target_model, tokenizer, forget_split="forget01", data_dir="bundled", splits=["forget"], max_new_tokens=2,
        progress=False,
    ).evaluate(output_dir=other / "eval")  # fmt: skip
    record_weights_fingerprint(other / "eval", other)
    with pytest.raises(ValueError, match="evaluated other weights than those in"):
        build_model_card(out, eval_results=other / "eval" / "summary.json")
