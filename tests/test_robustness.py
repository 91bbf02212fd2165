"""Robustness attacks (relearning, quantization, logit lens) on the tiny model that memorised the TOFU subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DEVICES, assert_unchanged, make_trainer, snapshot
from scipy.stats import norm

from hf_unlearn.evaluation.robustness import (
    FP4_CODE_BOOK,
    NF4_CODE_BOOK,
    answer_probabilities,
    encode_qa,
    logit_lens,
    quantization_attack,
    quantize_dequantize,
    quantized_copy,
    relearning_attack,
    relearning_score,
    resolve_backend,
    robustness_score,
    stability_score,
)


# ---------------------------------------------------------------------------------------------- quantization
def test_nf4_code_book_is_qlora_normal_float():
    """QLoRA's construction (Dettmers et al. 2023, bitsandbytes `create_normal_map(offset=0.9677083)`): 8 positive
    and 7 negative quantiles of N(0, 1), an exact zero, normalised to [-1, 1]."""
    offset = 0.9677083
    positive = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    negative = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([positive, [0.0], negative]))
    np.testing.assert_allclose(np.array(NF4_CODE_BOOK), values / np.abs(values).max(), atol=1e-6)
    assert len(NF4_CODE_BOOK) == 16 and 0.0 in NF4_CODE_BOOK


def test_quantize_dequantize_round_trips():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 96, generator=generator)
    # a group made of code-book values times its absmax comes back exactly
    exact = torch.tensor(NF4_CODE_BOOK * 4) * 0.37
    torch.testing.assert_close(quantize_dequantize(exact, bits=4, scheme="nf4", group_size=64), exact)
    for bits, tolerance in ((8, 1 / 127), (4, 1 / 7), (2, 1.0)):
        restored = quantize_dequantize(weight, bits=bits, scheme="int", group_size=32)
        groups, absmax = weight.reshape(-1, 32), weight.reshape(-1, 32).abs().amax(1, keepdim=True)
        error = (restored.reshape(-1, 32) - groups).abs()
        assert (error <= absmax * tolerance / 2 + 1e-6).all(), bits
    assert quantize_dequantize(weight, 8, "int").shape == weight.shape
    errors = {b: (quantize_dequantize(weight, b, "int") - weight).abs().mean().item() for b in (2, 4, 8)}
    assert errors[8] < errors[4] < errors[2]
    nf4 = (quantize_dequantize(weight, 4, "nf4") - weight).abs().mean().item()
    assert nf4 < errors[4], "NF4 fits normally distributed weights better than uniform 4-bit integers"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_our_round_trips_equal_bitsandbytes(dtype, device):
    """Golden test against bitsandbytes itself (`bitsandbytes.functional.quantize_4bit` / `dequantize_4bit` with
    quant_type="nf4", blocksize 64; `int8_vectorwise_quant`, LLM.int8()'s row-wise absmax): its CPU code, and its
    CUDA kernels on a GPU."""
    bnb = pytest.importorskip("bitsandbytes.functional")
    weight = torch.randn(96, 256, generator=torch.Generator().manual_seed(1)).to(device=device, dtype=dtype)
    packed, state = bnb.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    ours = quantize_dequantize(weight, 4, "nf4", 64)
    assert (ours.device.type, ours.dtype) == (device, dtype)
    torch.testing.assert_close(ours, bnb.dequantize_4bit(packed, state), rtol=1e-5, atol=0)
    np.testing.assert_allclose(bnb.get_4bit_type("nf4", device="cpu")[:16].numpy(), NF4_CODE_BOOK, rtol=1e-6)
    # FP4, the quant type of BitsAndBytesConfig(load_in_4bit=True) at its defaults (arXiv 2410.16454's setting): a
    # tensor whose size is no multiple of the block (bitsandbytes scales the last, partial block by division), and
    # values around the midpoint between the zero code and the subnormal 1/192
    np.testing.assert_allclose(bnb.get_4bit_type("fp4", device="cpu")[:16].numpy(), FP4_CODE_BOOK, rtol=1e-6)
    odd = torch.randn(7, 37, generator=torch.Generator().manual_seed(2)).to(device=device, dtype=dtype)
    near_zero = torch.cat([torch.ones(1), torch.linspace(0.0025, 0.0027, 63)]).to(device=device, dtype=dtype)
    for tensor in (weight, odd, near_zero):
        packed, state = bnb.quantize_4bit(tensor, blocksize=64, quant_type="fp4")
        theirs = bnb.dequantize_4bit(packed, state).reshape(tensor.shape)
        torch.testing.assert_close(quantize_dequantize(tensor, 4, "fp4", 64), theirs, rtol=1e-5, atol=0)
    assert not torch.equal(quantize_dequantize(weight, 4, "fp4"), quantize_dequantize(weight, 4, "nf4"))
    codes, row_absmax, _ = bnb.int8_vectorwise_quant(weight.float())
    theirs = codes.float() * row_absmax.float().unsqueeze(1) / 127
    torch.testing.assert_close(quantize_dequantize(weight.float(), 8, "int", 256), theirs, rtol=1e-5, atol=1e-6)


def test_quantization_attack_through_bitsandbytes_matches_ours(target_model, tokenizer, tofu):
    pytest.importorskip("bitsandbytes")
    forget = tofu["forget01"].select(range(8))
    ours = quantization_attack(target_model, tokenizer, forget, bits=4, backend="ours")
    theirs = quantization_attack(target_model, tokenizer, forget, bits=4, backend="bitsandbytes")
    assert (ours.backend, theirs.backend) == ("ours", "bitsandbytes")
    assert theirs.after == pytest.approx(ours.after, rel=1e-5) and theirs.before == ours.before
    # auto: bitsandbytes only for a model on CUDA
    assert quantization_attack(target_model, tokenizer, forget, bits=8).backend == "ours"
    with pytest.raises(ValueError, match="needs backend='ours'"):
        quantization_attack(target_model, tokenizer, forget, bits=2, backend="bitsandbytes")
    with pytest.raises(ValueError, match="Unknown quantization backend"):
        quantized_copy(target_model, backend="gptq")


def test_bitsandbytes_backend_without_bitsandbytes_says_what_to_do(target_model, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        quantized_copy(target_model, backend="bitsandbytes")
    assert resolve_backend(target_model, "auto", 4, "nf4") == "ours"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 3, "scheme": "nf4"}, "NF4 is a 4-bit code book"),
        ({"bits": 1, "scheme": "int"}, "2 to 8 bits"),
        ({"bits": 4, "scheme": "fp8"}, "Unknown quantization scheme"),
        ({"bits": 8, "scheme": "fp4"}, "FP4 is a 4-bit code book"),
        ({"bits": 4, "group_size": 0}, "group_size must be >= 1"),
    ],
)
def test_quantization_refuses_unsupported_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_dequantize(torch.ones(4, 4), **kwargs)


def test_quantized_copy_changes_only_the_copys_linear_weights(target_model):
    before = snapshot(target_model)
    copy = quantized_copy(target_model, bits=4)
    assert_unchanged(target_model, before)
    embeddings = dict(target_model.named_parameters())
    for name, param in copy.named_parameters():
        if "embed_tokens" in name or "norm" in name:
            assert torch.equal(param, embeddings[name]), name
    assert not torch.equal(copy.lm_head.weight, target_model.lm_head.weight)
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantized_copy(torch.nn.Embedding(4, 4))


def test_eight_bits_barely_move_the_forget_metric_and_two_bits_move_it_a_lot(target_model, tokenizer, tofu):
    forget = tofu["forget01"].select(range(12))
    before = snapshot(target_model)
    q8 = quantization_attack(target_model, tokenizer, forget, bits=8)
    q2 = quantization_attack(target_model, tokenizer, forget, bits=2)
    assert_unchanged(target_model, before)
    assert q8.before == pytest.approx(q2.before)
    # measured: 8 bits move it by 0.02% (Q 0.9999), 2 bits by 42% (Q 0.74)
    assert abs(q8.after - q8.before) < 0.01 * q8.before and q8.score > 0.999
    assert q2.after < 0.7 * q2.before and q2.score < 0.8
    assert q8.to_dict()["scheme"] == "int" and quantization_attack(target_model, tokenizer, forget).scheme == "nf4"


def test_scores():
    assert stability_score(0.5, 0.5) == 1.0 and stability_score(0.0, 0.0) == 1.0
    assert stability_score(0.2, 0.6) == pytest.approx(1 - 0.4 / 0.8)
    assert robustness_score(0.3, 0.3) == 1.0 and robustness_score(0.4, 0.0) == 0.0


# ---------------------------------------------------------------------------------------------- logit lens
def test_logit_lens_last_layer_is_the_models_own_probability(target_model, tokenizer, tofu):
    forget = tofu["forget01"].select(range(6))
    before = snapshot(target_model)
    result = logit_lens(target_model, tokenizer, forget, batch_size=4)
    assert_unchanged(target_model, before)
    assert len(result.probabilities) == target_model.config.num_hidden_layers
    own = answer_probabilities(target_model, tokenizer, encode_qa(tokenizer, forget))
    np.testing.assert_allclose(result.per_question[-1], own, rtol=1e-6)
    assert result.probabilities[-1] > result.probabilities[0], "the memorised answers are decodable at the end"
    assert 0 <= result.peak_layer < len(result.probabilities)


def test_logit_lens_refuses_bad_input(target_model, tokenizer, tofu):
    with pytest.raises(ValueError, match="is empty"):
        logit_lens(target_model, tokenizer, tofu["forget01"].select([]))
    with pytest.raises(ValueError, match="lacks the column"):
        logit_lens(target_model, tokenizer, tofu["forget01"].remove_columns("answer"))
    with pytest.raises(ValueError, match="final norm and LM head"):
        logit_lens(torch.nn.Linear(2, 2), tokenizer, tofu["forget01"])


# ---------------------------------------------------------------------------------------------- relearning
@pytest.mark.parametrize("lora", [False, True])
def test_relearning_raises_the_forget_probability_and_leaves_the_model_alone(target_model, tokenizer, tofu, lora):
    # a model that has forgotten: the target after a few gradient-ascent steps on the forget set
    forget = tofu["forget01"]
    model = target_model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    pairs = encode_qa(tokenizer, forget.select(range(16)))
    from hf_unlearn.data import pad_examples

    for _ in range(3):
        batch = pad_examples(pairs, tokenizer.pad_token_id)
        (-model(**batch).loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    before = snapshot(model)
    relearn, held_out = forget.select(range(0, 40, 2)), forget.select(range(1, 40, 2))
    result = relearning_attack(model, tokenizer, relearn, held_out, steps=8, learning_rate=3e-3, lora=lora)
    assert_unchanged(model, before)
    assert result.after > result.before and result.change > 0
    retain_like = relearning_attack(model, tokenizer, relearn, held_out, steps=1, learning_rate=1e-6, lora=lora)
    assert relearning_score(result, result) == 1.0 and relearning_score(result, retain_like) < 1.0
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        relearning_attack(model, tokenizer, relearn, held_out, steps=0)


# ---------------------------------------------------------------------------------------------- the evaluator
def test_robustness_evaluator_writes_json_table_and_plot(target_model_dir, target_model, tokenizer, tofu, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from hf_unlearn.evaluation.robustness import ROBUSTNESS_FILE, RobustnessEvaluator

    forget = tofu["forget01"].select(range(8))
    retain_like = AutoModelForCausalLM.from_pretrained(target_model_dir)
    with torch.no_grad():  # a model that does not know these answers: noise on the target's weights
        for param in retain_like.parameters():
            param.add_(0.05 * torch.randn_like(param))
    before = snapshot(target_model)
    from hf_unlearn import load_tofu

    holdout = load_tofu("holdout01", data_dir="bundled").select(range(8))
    evaluator = RobustnessEvaluator(
        target_model,
        tokenizer,
        forget,
        retain_model=retain_like,
        holdout_dataset=holdout,
        attacks=["relearning", "quantization", "logit_lens", "probing", "mia"],
        bits=(8, 2),
        relearn_steps=2,
        progress=False,
    )
    results = evaluator.evaluate(tmp_path)
    assert_unchanged(target_model, before)
    saved = json.loads((tmp_path / ROBUSTNESS_FILE).read_text())
    assert saved["format"] == "hf_unlearn.robustness" and set(saved["models"]) == {"unlearned", "retain"}
    default_scores = {"relearning", "quantization_8bit", "quantization_2bit", "logit_lens", "probing"}
    # open-unlearning's R from the default relearning (no 4-bit run here, so no Q and no robustness figure)
    assert set(results["scores"]) == default_scores | {"open_unlearning_relearning"}
    figure = results["open_unlearning"]
    assert "default attacks" in figure["source"] and figure["models"]["retain"]["relearning"] == 1.0
    unlearned_figure = figure["models"]["unlearned"]
    assert unlearned_figure["quantization"] is None and unlearned_figure["robustness"] is None
    # each model's strongest attack: the table row with the highest forget probability
    worst = results["worst_case"]["unlearned"]
    rows = {
        "relearning": results["models"]["unlearned"]["relearning"]["after"],
        "quantization 2-bit": results["models"]["unlearned"]["quantization"]["2"]["after"],
        "quantization 8-bit": results["models"]["unlearned"]["quantization"]["8"]["after"],
        "logit lens (best layer)": max(results["models"]["unlearned"]["logit_lens"]["probabilities"]),
        "probing (worst prompt)": results["models"]["unlearned"]["probing"]["worst_case_probability"],
    }
    assert worst["attack"] == max(rows, key=rows.get) and worst["probability"] == max(rows.values())
    assert worst["increase"] == pytest.approx(worst["probability"] - results["models"]["unlearned"]["original"])
    assert saved["worst_case"] == results["worst_case"]
    assert set(results["models"]["unlearned"]["mia"]) == {"gradient_norm", "reference"}
    assert results["models"]["unlearned"]["mia"]["gradient_norm"] > 0.5, "the target memorised the forget rows"
    assert "role_play" in results["models"]["unlearned"]["probing"]["variants"]
    assert results["scores"]["quantization_8bit"] > results["scores"]["quantization_2bit"]
    table = (tmp_path / "robustness.md").read_text()
    assert "| probing (worst prompt) |" in table
    assert "| quantization 2-bit |" in table and "| attack | unlearned model | retain model | score |" in table
    assert f"unlearned: {worst['attack']}, {worst['probability']:.4f}" in table
    assert "open-unlearning robustness" in table
    assert (tmp_path / "robustness.png").stat().st_size > 0
    with pytest.raises(ValueError, match="Unknown or no robustness attack"):
        RobustnessEvaluator(target_model, tokenizer, forget, attacks=["fgsm"])
    with pytest.raises(ValueError, match="needs holdout_dataset"):
        RobustnessEvaluator(target_model, tokenizer, forget, attacks=["mia"])
    with pytest.raises(ValueError, match="at least 2 forget questions"):
        RobustnessEvaluator(target_model, tokenizer, forget.select([0]))


def test_cli_robustness(target_model_dir, tmp_path, capsys):
    import json

    from hf_unlearn.cli import main
    from hf_unlearn.io import weights_fingerprint

    argv = ["robustness", "--model", str(target_model_dir), "--retain-model", str(target_model_dir)]
    argv += ["--dataset", "bundled", "--forget-split", "forget01", "--max-questions", "6", "--bits", "8"]
    argv += ["--relearn-steps", "1", "--output-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| quantization 8-bit |" in out and (tmp_path / "robustness.json").is_file()
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["weights_fingerprint"] == weights_fingerprint(target_model_dir)
    assert main(argv) == 2 and "Pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--bits", "4,x"]) == 2 and "--bits must be" in capsys.readouterr().err


def test_model_cards_carry_the_robustness_scores(tmp_path):
    import json

    from hf_unlearn.demo.tiny import tiny_llama
    from hf_unlearn.hub import build_model_card

    folder = tmp_path / "model"
    tiny_llama(64, num_layers=1, hidden_size=32).save_pretrained(folder)
    (folder / "unlearning.json").write_text(json.dumps({"forget_loss": "npo", "retain_loss": "nll"}))
    assert "## Robustness" not in str(build_model_card(folder, base_model="org/base"))
    (folder / "robustness").mkdir()
    scores = {"relearning": 0.25, "quantization_4bit": 0.5, "logit_lens": 0.9}
    (folder / "robustness" / "robustness.json").write_text(
        json.dumps({"format": "hf_unlearn.robustness", "scores": scores})
    )
    card = build_model_card(folder, base_model="org/base")
    assert "## Robustness" in str(card) and "| Robustness to quantization (4-bit) | 0.500 |" in str(card)
    entries = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert entries == {
        "robustness_relearning": 0.25,
        "robustness_quantization_4bit": 0.5,
        "robustness_logit_lens": 0.9,
    }


def test_grun_models_are_scored_with_the_edit_at_the_last_prompt_token(target_model, tokenizer, tofu):
    """A GRUN model edits the end of the prompt; the attacks' probability must be the TOFU evaluator's, not the one
    of an edit at the end of the answer (what a forward without labels or known prompts would do)."""
    pytest.importorskip("pyreft")
    from hf_unlearn.evaluation.tofu import TOFUEvaluator
    from hf_unlearn.grun import GRUNConfig, get_grun_model

    forget = tofu["forget01_perturbed"].select(range(6))
    model = get_grun_model(target_model, GRUNConfig(layers=[1], rank=4))
    with torch.no_grad():  # an edit that matters, with the gate open
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.5)
    ours = answer_probabilities(model, tokenizer, encode_qa(tokenizer, forget))
    summary = TOFUEvaluator(
        model, tokenizer, datasets={"forget": forget}, splits=["forget"], max_new_tokens=1, progress=False
    ).evaluate()
    assert float(ours.mean()) == pytest.approx(summary["forget_probability"], rel=1e-5)
    plain = answer_probabilities(target_model, tokenizer, encode_qa(tokenizer, forget))
    assert not np.allclose(ours, plain, rtol=1e-3), "the edit changes the answers' probability"


def test_copies_of_a_model_trl_patched_run_their_own_weights(target_model, tokenizer, tofu, tmp_path):
    """trl's SFTTrainer patches the model's forward with a closure over the model itself (add_fused_lm_head); a
    deep copy then ran the ORIGINAL's weights, so quantized and relearned copies measured the unattacked model
    (every attack of TOFU-mini v2's first run came out exactly unchanged). Copies now run their own weights, and the
    unlearning trainer leaves no such patch on the model it trains."""
    trl_utils = pytest.importorskip("trl.trainer.utils")
    if not hasattr(trl_utils, "add_fused_lm_head"):
        pytest.skip("this trl has no fused LM head")
    from hf_unlearn.reference import independent_copy

    forget = tofu["forget01"].select(range(8))
    plain = quantization_attack(target_model, tokenizer, forget, bits=2)
    trl_utils.add_fused_lm_head(target_model)
    assert "forward" in target_model.__dict__
    patched = quantization_attack(target_model, tokenizer, forget, bits=2)
    assert patched.after == pytest.approx(plain.after, rel=1e-6) and patched.after != patched.before
    copy = independent_copy(target_model)
    with torch.no_grad():
        copy.lm_head.weight.zero_()
    ids = torch.tensor([[1, 5, 7, 9]])
    assert copy(input_ids=ids).logits.abs().max() == 0 and target_model(input_ids=ids).logits.abs().max() > 0
    trainer = make_trainer(
        target_model, tokenizer, forget, None, tmp_path, forget_loss="ga", retain_loss="none", max_steps=1
    )
    assert "forward" not in trainer.model.__dict__
