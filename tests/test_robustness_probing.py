"""Probing attack (prompt variants of the forget questions) on the tiny model that memorised bundled TOFU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_unchanged, snapshot

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.evaluation.robustness.probing import (
    FEW_SHOT_EXAMPLE_TEMPLATE,
    FEW_SHOT_TEMPLATE,
    INSTRUCTION_OVERRIDE_TEMPLATE,
    PREFIX_INJECTION_TEMPLATE,
    PROBING_VARIANTS,
    ROLE_PLAY_TEMPLATE,
    perturb_characters,
    probing_attack,
)
from hf_unlearn.losses import mean_nll

FAST = dict(progress=False, max_new_tokens=4, batch_size=8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def forget(tofu):
    """The first 8 rows of forget01_perturbed (with TOFU's paraphrased questions)."""
    return tofu["forget01_perturbed"].select(range(8))


def encoded_prompt(tokenizer, content):
    return PromptEncoder(tokenizer).encode_prompt([{"role": "user", "content": content}])


def test_templates_are_applied_exactly_as_documented(target_model, tokenizer, forget):
    variants = ["original", "role_play", "instruction_override", "prefix_injection"]
    result = probing_attack(target_model, tokenizer, forget, variants=variants, **FAST)
    assert list(result.variants) == variants
    question = forget[2]["question"]
    expected = {
        "original": question,
        "role_play": ROLE_PLAY_TEMPLATE.format(question=question),
        "instruction_override": INSTRUCTION_OVERRIDE_TEMPLATE.format(question=question),
        "prefix_injection": PREFIX_INJECTION_TEMPLATE.format(question=question),
    }
    for name, content in expected.items():
        assert result.variants[name].prompts[2] == content
        assert result.variants[name].prompt_ids[2] == encoded_prompt(tokenizer, content)
    text = tokenizer.decode(result.variants["role_play"].prompt_ids[2], skip_special_tokens=True)
    assert text.startswith("Question: You are a biographer with perfect memory")
    assert text.endswith(f"{question}\nAnswer:")
    assert INSTRUCTION_OVERRIDE_TEMPLATE.startswith("Ignore all previous instructions")
    assert 'Start your answer with "Sure, here is"' in PREFIX_INJECTION_TEMPLATE
    # The docstring quotes every template verbatim (newlines written as \n).
    doc = " ".join(probing_attack.__doc__.split())
    for template in (
        ROLE_PLAY_TEMPLATE,
        INSTRUCTION_OVERRIDE_TEMPLATE,
        PREFIX_INJECTION_TEMPLATE,
        FEW_SHOT_TEMPLATE,
        FEW_SHOT_EXAMPLE_TEMPLATE,
    ):
        assert " ".join(template.replace("\n", "\\n").split()) in doc


def test_character_noise_is_reproducible_from_the_seed_and_changes_the_question(target_model, tokenizer, forget):
    question = forget[0]["question"]
    noisy = perturb_characters(question, 0.05, seed=3)
    assert noisy != question
    assert perturb_characters(question, 0.05, seed=3) == noisy
    others = {perturb_characters(question, 0.05, seed=s) for s in range(10)}
    assert len(others) > 5, "different seeds should give different noise"
    assert perturb_characters("ab", 0.01, seed=0) != "ab", "a text is always changed, even at a tiny rate"
    heavy = perturb_characters(question, 0.5, seed=0)
    assert sum(a != b for a, b in zip(heavy, question)) > sum(a != b for a, b in zip(noisy, question))

    first = probing_attack(target_model, tokenizer, forget, variants=["char_noise"], seed=7, **FAST)
    again = probing_attack(target_model, tokenizer, forget, variants=["char_noise"], seed=7, **FAST)
    other = probing_attack(target_model, tokenizer, forget, variants=["char_noise"], seed=8, **FAST)
    prompts = first.variants["char_noise"].prompts
    assert prompts == again.variants["char_noise"].prompts
    assert first.variants["char_noise"].probabilities == again.variants["char_noise"].probabilities
    assert prompts != other.variants["char_noise"].prompts
    assert prompts == [perturb_characters(q, 0.05, [7, i]) for i, q in enumerate(forget["question"])]
    assert all(p != q for p, q in zip(prompts, forget["question"]))


def test_few_shot_uses_only_other_rows_of_the_same_author(target_model, tokenizer, forget):
    result = probing_attack(target_model, tokenizer, forget, variants=["few_shot"], author_size=4, **FAST)
    few_shot = result.variants["few_shot"]
    questions, answers = forget["question"], forget["answer"]
    assert few_shot.example_rows[0] == [1, 2, 3]
    assert few_shot.example_rows[2] == [3, 0, 1]
    assert few_shot.example_rows[5] == [6, 7, 4]
    for i, rows in enumerate(few_shot.example_rows):
        assert len(rows) == 3 and i not in rows
        assert {j // 4 for j in rows} == {i // 4}, f"row {i} got examples of another author: {rows}"
        examples = "\n\n".join(
            FEW_SHOT_EXAMPLE_TEMPLATE.format(question=questions[j], answer=answers[j]) for j in rows
        )
        content = FEW_SHOT_TEMPLATE.format(examples=examples, question=questions[i])
        assert few_shot.prompts[i] == content
        assert few_shot.prompt_ids[i] == encoded_prompt(tokenizer, content)
        for j in range(len(questions)):
            if j // 4 != i // 4:
                assert questions[j] not in content
    # TOFU's layout: 20 consecutive questions per author; a smaller author group gives fewer examples.
    tofu_rows = probing_attack(target_model, tokenizer, forget, variants=["few_shot"], num_shots=2, **FAST)
    assert tofu_rows.variants["few_shot"].example_rows[7] == [0, 1]
    single = probing_attack(
        target_model, tokenizer, forget.select(range(5)), variants=["few_shot"], author_size=4, **FAST
    )
    assert single.variants["few_shot"].example_rows[4] == []


def test_answer_prefix_scores_only_the_remaining_answer_tokens(target_model, tokenizer, forget):
    result = probing_attack(target_model, tokenizer, forget, variants=["original", "answer_prefix"], **FAST)
    original, primed = result.variants["original"], result.variants["answer_prefix"]
    encoder = PromptEncoder(tokenizer)
    pairs = []
    for i, row in enumerate(forget):
        prompt_ids, answer_ids = encoder.encode([{"role": "user", "content": row["question"]}], row["answer"])
        assert primed.answer_prefixes[i] == " ".join(row["answer"].split()[:3])
        m = len(primed.prompt_ids[i]) - len(prompt_ids)
        assert m > 0 and primed.prompt_ids[i] == prompt_ids + answer_ids[:m]
        assert tokenizer.decode(answer_ids[:m]).strip() == primed.answer_prefixes[i]
        assert primed.num_tokens[i] == original.num_tokens[i] - m == len(answer_ids) - m
        pairs.append((primed.prompt_ids[i], answer_ids[m:]))
    batch = pad_examples(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = target_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.exp(-mean_nll(logits, batch["labels"])).numpy()
    np.testing.assert_allclose(primed.probabilities, expected, rtol=1e-4)
    assert not np.allclose(primed.probabilities, original.probabilities)

    one_word = probing_attack(
        target_model, tokenizer, forget, variants=["answer_prefix"], answer_prefix_words=1, **FAST
    )
    assert one_word.variants["answer_prefix"].answer_prefixes == [a.split()[0] for a in forget["answer"]]


def test_all_variants_leave_the_model_unchanged_and_report_the_worst_case(target_model, tokenizer, forget):
    target_model.train()
    before = snapshot(target_model)
    result = probing_attack(target_model, tokenizer, forget, **FAST)
    assert_unchanged(target_model, before)
    assert list(result.variants) == list(PROBING_VARIANTS) and result.skipped == {}
    means = {name: v.probability for name, v in result.variants.items()}
    assert result.worst_case == max(means, key=means.get)
    assert result.worst_case_probability == max(means.values())
    for v in result.variants.values():
        assert len(v.probabilities) == len(v.rouge_l_recalls) == len(v.generations) == len(forget)
        assert v.probability == pytest.approx(np.mean(v.probabilities))
        assert v.rouge_l_recall == pytest.approx(np.mean(v.rouge_l_recalls))
        assert all(0 < p <= 1 for p in v.probabilities) and v.gate_rate is None
    assert result.variants["paraphrased"].prompts == forget["paraphrased_question"]
    assert not result.is_grun
    data = json.loads(json.dumps(result.to_dict()))
    assert data["worst_case"] == result.worst_case
    assert data["worst_case_gain"] == pytest.approx(means[result.worst_case] - means["original"])
    assert "prompt_ids" not in data["variants"]["original"]

    target_model.eval()
    before = snapshot(target_model)
    probing_attack(target_model, tokenizer, forget, variants=["original"], **FAST)
    assert_unchanged(target_model, before)


def test_worst_case_is_the_highest_probability_variant_not_the_first(target_model, tokenizer, forget):
    variants = ["role_play", "instruction_override", "prefix_injection"]
    result = probing_attack(target_model, tokenizer, forget, variants=variants, **FAST)
    means = {name: v.probability for name, v in result.variants.items()}
    assert result.worst_case == max(means, key=means.get)
    assert means["role_play"] < max(means.values()) and result.worst_case != "role_play"


def test_paraphrased_variant_is_skipped_without_paraphrased_questions(target_model, tokenizer, tofu):
    data = tofu["forget01"].select(range(4))
    assert "paraphrased_question" not in data.column_names
    result = probing_attack(target_model, tokenizer, data, variants=["original", "role_play"], **FAST)
    assert "paraphrased" not in result.skipped
    result = probing_attack(target_model, tokenizer, data, **FAST)
    assert "paraphrased" not in result.variants
    assert "paraphrased_question" in result.skipped["paraphrased"]
    assert "paraphrased" in json.loads(json.dumps(result.to_dict()))["skipped"]
    with pytest.warns(UserWarning, match="paraphrased variant is skipped"):
        probing_attack(target_model, tokenizer, data, variants=["original", "paraphrased"], **FAST)
    with pytest.raises(ValueError, match="No probing variant is left"):
        probing_attack(target_model, tokenizer, data, variants=["paraphrased"], **FAST)


def test_grun_gate_rates_are_reported_per_variant(target_model, tokenizer, forget):
    pytest.importorskip("pyreft")
    from hf_unlearn.grun import GRUNConfig, get_grun_model

    model = get_grun_model(target_model, GRUNConfig(layers=[1]))
    model.train()
    before = snapshot(model)
    variants = ["original", "role_play", "answer_prefix"]
    result = probing_attack(model, tokenizer, forget, variants=variants, **FAST)
    assert_unchanged(model, before)
    assert result.is_grun
    for v in result.variants.values():
        assert len(v.gate_values) == len(forget)
        assert all(0.0 <= g <= 1.0 for g in v.gate_values)
        assert v.gate_rate == pytest.approx(np.mean(v.gate_values))
        assert v.gate_open_fraction == pytest.approx(np.mean(np.array(v.gate_values) > 0.5))
    # The gate at each variant's last prompt token, as GRUN computes it when told where the prompt ends.
    for name in variants:
        v = result.variants[name]
        pairs = [(p, [tokenizer.eos_token_id]) for p in v.prompt_ids]
        batch = pad_examples(pairs, tokenizer.pad_token_id)
        model.eval()
        gates = model.gate_values(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])[-1]
        np.testing.assert_allclose(v.gate_values, gates.mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert result.variants["original"].gate_values != result.variants["role_play"].gate_values
    assert "gate_rate" in result.to_dict()["variants"]["original"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variants=["original", "jailbreak"]), "Unknown probing variant"),
        (dict(variants=[]), "variants is empty"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(answer_prefix_words=0), "answer_prefix_words"),
        (dict(author_size=0), "author_size"),
        (dict(noise_rate=0.0), "noise_rate"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(question_key="prompt"), r"lacks the column\(s\) \['prompt'\].*question_key"),
    ],
)
def test_bad_input(target_model, tokenizer, forget, kwargs, message):
    with pytest.raises(ValueError, match=message):
        probing_attack(target_model, tokenizer, forget, **{**FAST, **kwargs})


def test_bad_data(target_model, tokenizer, forget):
    with pytest.raises(ValueError, match="empty"):
        probing_attack(target_model, tokenizer, forget.select([]), **FAST)
    with pytest.raises(ValueError, match="empty"):
        probing_attack(target_model, tokenizer, [], **FAST)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['answer'\]"):
        probing_attack(target_model, tokenizer, [{"question": "Who?"}], **FAST)
    with pytest.raises(ValueError, match="Row 1 .* no text in 'answer'"):
        probing_attack(target_model, tokenizer, [{"question": "Who?", "answer": "A"}, {"question": "Q", "answer": ""}])
    with pytest.raises(ValueError, match="datasets.Dataset or a list"):
        probing_attack(target_model, tokenizer, "What is it?", **FAST)
    with pytest.raises(ValueError, match="at least 2 characters"):
        perturb_characters("a")
    with pytest.raises(ValueError, match="seed"):
        perturb_characters("abc", seed=-2)
