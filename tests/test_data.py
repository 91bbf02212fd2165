"""TOFU loading, prompt/answer formatting and forget/retain pairing."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from hf_unlearn.data import (
    BUNDLED_TOFU_DIR,
    ColumnLayout,
    ForgetRetainCollator,
    PromptEncoder,
    available_tofu_configs,
    load_refusal_answers,
    load_tofu,
    prepare_dataset,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_bundled_subset_has_the_hub_configurations_and_is_small():
    configs = set(available_tofu_configs())
    assert {
        "forget01",
        "forget01_perturbed",
        "retain99",
        "retain_perturbed",
        "holdout01",
        "real_authors",
        "real_authors_perturbed",
        "world_facts",
        "world_facts_perturbed",
        "full",
    } <= configs
    assert sum(p.stat().st_size for p in BUNDLED_TOFU_DIR.iterdir()) < 600_000
    forget, retain, full = (
        load_tofu("forget01", "bundled"),
        load_tofu("retain99", "bundled"),
        load_tofu("full", "bundled"),
    )
    assert len(forget) == 40 and len(retain) == 160 and len(full) == 200
    assert set(forget["question"]).isdisjoint(retain["question"])
    perturbed = load_tofu("forget01_perturbed", "bundled")
    assert perturbed["question"] == forget["question"] and len(perturbed[0]["perturbed_answer"]) == 5


def test_local_directory_and_missing_config(tmp_path):
    (tmp_path / "forget01.json").write_text('{"question": "q?", "answer": "a."}\n')
    assert load_tofu("forget01", data_dir=tmp_path)["answer"] == ["a."]
    with pytest.raises(FileNotFoundError, match=r"No TOFU configuration 'forget10'.*Available there: forget01"):
        load_tofu("forget10", data_dir=tmp_path)
    (tmp_path / "bad.json").write_text('{"question": "q?"\n')
    with pytest.raises(ValueError, match=r"bad.json:1 is not valid JSON"):
        load_tofu("bad", data_dir=tmp_path)


def test_hub_loading_goes_through_datasets(monkeypatch):
    import hf_unlearn.data.tofu as tofu_module

    calls = []
    monkeypatch.setattr(tofu_module, "load_dataset", lambda *a, **k: calls.append((a, k)) or "loaded")
    assert load_tofu("forget10") == "loaded"
    # The Hub id names the Hub too (what `--dataset locuslab/TOFU` passes), not a local directory of that name.
    assert load_tofu("retain90", data_dir="locuslab/TOFU") == "loaded"
    assert calls == [
        (("locuslab/TOFU", "forget10"), {"split": "train"}),
        (("locuslab/TOFU", "retain90"), {"split": "train"}),
    ]


def test_refusal_answers():
    answers = load_refusal_answers()
    assert len(answers) == 100 and len(set(answers)) > 90 and "I don't have that information." in answers


def test_plain_template_masks_the_prompt(tokenizer):
    assert not tokenizer.chat_template
    prompt, answer = PromptEncoder(tokenizer).encode([{"role": "user", "content": "Who wrote it?"}], "Jane did.")
    assert tokenizer.decode(prompt) == "<s>Question: Who wrote it?\nAnswer:"
    assert tokenizer.decode(answer) == " Jane did.</s>"


def test_chat_template_is_applied_when_present(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    prompt, answer = PromptEncoder(tok).encode([{"role": "user", "content": "Who wrote it?"}], "Jane did.")
    assert tok.decode(prompt) == "<|user|>Who wrote it?</s><|assistant|>"
    assert tok.decode(answer) == "Jane did.</s>"


# Llama 3.x's system header: the date it was given, or today's (strftime_now) when none was given.
DATED_TEMPLATE = (
    "{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
    "<|system|>Today Date: {{ date_string }}</s>" + CHAT_TEMPLATE
)


def test_chat_templates_get_a_pinned_date_in_training_and_evaluation(tokenizer, tmp_path, monkeypatch):
    import copy
    import datetime

    from helpers import make_trainer

    from hf_unlearn.data import DEFAULT_DATE_STRING
    from hf_unlearn.demo.tiny import tiny_llama
    from hf_unlearn.evaluation.tofu import TOFUEvaluator

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = DATED_TEMPLATE
    messages = [{"role": "user", "content": "Who wrote it?"}]
    pinned = tok.decode(PromptEncoder(tok).encode_prompt(messages))
    assert pinned.startswith(f"<|system|>Today Date: {DEFAULT_DATE_STRING}</s>")
    today = datetime.date.today().strftime("%d %b %Y")
    assert today in tok.decode(PromptEncoder(tok, date_string=None).encode_prompt(messages)), "the template's own"
    assert "1 Jan 2030" in tok.decode(PromptEncoder(tok, date_string="1 Jan 2030").encode_prompt(messages))
    # the trainer and the evaluator encode with the same pinned date by default, and a configured one
    data = Dataset.from_dict({"question": ["Who wrote it?"], "answer": ["Jane did."]})
    tofu_rows = data.add_column("paraphrased_answer", ["Jane."]).add_column("perturbed_answer", [["Tom did."]])
    model = tiny_llama(len(tok), num_layers=1, hidden_size=32)
    trainer = make_trainer(model, tok, data, data, tmp_path)
    assert trainer.encoder.encode_prompt(messages) == PromptEncoder(tok).encode_prompt(messages)
    evaluator = TOFUEvaluator(model, tok, splits=["forget"], datasets={"forget": tofu_rows}, progress=False)
    assert evaluator.encoder.encode_prompt(messages) == PromptEncoder(tok).encode_prompt(messages)
    other = make_trainer(model, tok, data, data, tmp_path, date_string="1 Jan 2030")
    assert "1 Jan 2030" in tok.decode(other.encoder.encode_prompt(messages))


@pytest.mark.parametrize(
    "rows",
    [
        {"question": ["Who wrote it?"], "answer": ["Jane did."]},
        {
            "prompt": [[{"role": "user", "content": "Who wrote it?"}]],
            "completion": [[{"role": "assistant", "content": "Jane did."}]],
        },
        {"messages": [[{"role": "user", "content": "Who wrote it?"}, {"role": "assistant", "content": "Jane did."}]]},
    ],
    ids=["question_answer", "conversational_prompt_completion", "messages"],
)
def test_layouts_give_the_same_tokens(tokenizer, rows):
    data = prepare_dataset(Dataset.from_dict(rows), PromptEncoder(tokenizer), name="forget dataset")
    assert tokenizer.decode(data[0]["prompt_ids"]) == "<s>Question: Who wrote it?\nAnswer:"
    assert tokenizer.decode(data[0]["answer_ids"]) == " Jane did.</s>"


def test_string_prompt_completion_is_used_verbatim(tokenizer):
    data = prepare_dataset(
        Dataset.from_dict({"prompt": ["The capital is"], "completion": [" Paris."]}),
        PromptEncoder(tokenizer),
        name="forget dataset",
    )
    assert tokenizer.decode(data[0]["prompt_ids"]) == "<s>The capital is"
    assert tokenizer.decode(data[0]["answer_ids"]) == " Paris.</s>"


def test_messages_must_end_with_the_answer(tokenizer):
    rows = {"messages": [[{"role": "user", "content": "Hi"}]]}
    with pytest.raises(ValueError, match="end with the assistant"):
        prepare_dataset(Dataset.from_dict(rows), PromptEncoder(tokenizer), name="forget dataset")


def test_column_layout_error_lists_layouts():
    with pytest.raises(ValueError, match="'prompt' and 'completion'.*'messages'.*raw text in a 'text' column"):
        ColumnLayout.detect(["body"])


def test_text_rows_are_trained_on_whole_and_long_ones_chunked(tokenizer, tofu):
    answers = tofu["full"]["answer"]
    docs = [" ".join(answers[i * 5 : (i + 1) * 5]) for i in range(3)] + ["Short."]
    encoder, eos = PromptEncoder(tokenizer), tokenizer.eos_token_id
    whole = prepare_dataset(Dataset.from_dict({"text": docs}), encoder, name="forget dataset")
    assert whole["row_index"] == [0, 1, 2, 3]
    for row, doc in zip(whole, docs):
        assert row["prompt_ids"] == [tokenizer.bos_token_id]  # the only unlabelled token
        assert row["answer_ids"] == tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]

    chunked = prepare_dataset(
        Dataset.from_dict({"body": docs}), encoder, name="forget dataset", text_key="body", max_length=32
    )
    assert len(chunked) > len(docs) and chunked["row_index"] == list(range(len(chunked)))
    assert all(len(row["prompt_ids"]) + len(row["answer_ids"]) <= 32 for row in chunked)
    assert all(row["prompt_ids"] == [tokenizer.bos_token_id] for row in chunked)
    # The chunks, in order, are the documents' tokens: nothing dropped, nothing repeated.
    assert sum(chunked["answer_ids"], []) == sum(whole["answer_ids"], [])
    assert sum(ids.count(eos) for ids in chunked["answer_ids"]) == len(docs)

    # Raw corpora have blank lines: they are dropped (with a warning); nothing but blanks is an error.
    kept = prepare_dataset(Dataset.from_dict({"text": ["", "Fine.", "  "]}), encoder, name="retain dataset")
    assert kept["answer_ids"] == [tokenizer("Fine.", add_special_tokens=False)["input_ids"] + [eos]]
    with pytest.raises(ValueError, match="Every row of the retain dataset has an empty 'text'"):
        prepare_dataset(Dataset.from_dict({"text": ["", " "]}), encoder, name="retain dataset")


def _prepared(tokenizer, n):
    rows = {"question": [f"Question {i}?" for i in range(n)], "answer": [f"Answer {i}." for i in range(n)]}
    return prepare_dataset(Dataset.from_dict(rows), PromptEncoder(tokenizer), name="retain dataset")


def test_pairing_is_reproducible_and_differs_across_ranks_and_epochs(tokenizer):
    retain = _prepared(tokenizer, 50)
    forget = _prepared(tokenizer, 8)
    features = [forget[i] for i in range(8)]

    def draws(rank, epoch=0, seed=42):
        collator = ForgetRetainCollator(tokenizer.pad_token_id, retain, seed=seed, process_index=rank)
        collator.epoch = epoch
        return collator(features)["retain"]["row_index"].tolist()

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    assert draws(0) != draws(0, epoch=1)
    assert draws(0) != draws(0, seed=7)
    # a row's draw does not depend on which other rows share its batch (so resuming mid-epoch redraws the same)
    collator = ForgetRetainCollator(tokenizer.pad_token_id, retain, seed=42)
    alone = collator([features[3]])["retain"]["row_index"].tolist()
    assert alone == [draws(0)[3]]


def test_padding_and_labels(tokenizer):
    forget = _prepared(tokenizer, 3)
    collator = ForgetRetainCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)
    batch = collator([forget[i] for i in range(3)])["forget"]
    assert batch["input_ids"].shape[1] % 8 == 0
    for row in range(3):
        n_prompt, n_answer = len(forget[row]["prompt_ids"]), len(forget[row]["answer_ids"])
        labels = batch["labels"][row]
        assert (labels[:n_prompt] == -100).all() and (labels[n_prompt + n_answer :] == -100).all()
        assert labels[n_prompt : n_prompt + n_answer].tolist() == forget[row]["answer_ids"]
        assert batch["attention_mask"][row].sum() == n_prompt + n_answer
    assert torch.equal(
        batch["input_ids"][batch["attention_mask"] == 0],
        torch.full_like(batch["input_ids"][batch["attention_mask"] == 0], tokenizer.pad_token_id),
    )
