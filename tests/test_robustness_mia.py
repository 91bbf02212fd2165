"""Reference-model and gradient-norm membership inference on the tiny model that memorised the bundled TOFU subset."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from hf_unlearn.data import PromptEncoder, pad_examples
from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.evaluation.metrics import mia_auc, mia_loss
from hf_unlearn.evaluation.robustness.mia import (
    encode_texts,
    mean_answer_nll,
    mia_gradient_norm,
    mia_reference,
    mia_scores,
)
from hf_unlearn.losses import mean_nll

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def members(tofu):
    """Forget questions the target model was fine-tuned on."""
    return tofu["forget01"].select(range(16))


@pytest.fixture(scope="module")
def nonmembers():
    """TOFU holdout questions: other authors, never seen by the target model."""
    from hf_unlearn import load_tofu

    return load_tofu("holdout01", data_dir="bundled").select(range(16))


@pytest.fixture
def reference(tokenizer):
    """A model that saw nothing (random weights, same vocabulary)."""
    return tiny_llama(len(tokenizer), num_layers=2, hidden_size=64, seed=1)


def manual_nll(model, tokenizer, rows):
    encoder = PromptEncoder(tokenizer)
    pairs = [encoder.encode([{"role": "user", "content": r["question"]}], r["answer"]) for r in rows]
    batch = pad_examples(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return mean_nll(logits, batch["labels"]).double().numpy()


def test_mean_answer_nll_scores_answer_tokens_only(target_model, tokenizer, members):
    rows = members.select(range(5))
    values = mean_answer_nll(target_model, tokenizer, rows, batch_size=2, progress=False)
    np.testing.assert_allclose(values, manual_nll(target_model, tokenizer, rows), rtol=1e-5)
    # Plain strings: every token after the first is scored, as mia_loss over the token log-probabilities.
    text = rows[0]["question"] + " " + rows[0]["answer"]
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(target_model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    token_logprobs = logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    assert mean_answer_nll(target_model, tokenizer, [text], progress=False)[0] == pytest.approx(
        mia_loss(token_logprobs), rel=1e-5
    )
    assert encode_texts(tokenizer, [text]) == [(ids[:1], ids[1:])]
    assert encode_texts(tokenizer, [{"text": text}]) == [(ids[:1], ids[1:])]


def test_reference_attack_recognises_members(target_model, reference, tokenizer, members, nonmembers):
    scores_in = mia_reference(target_model, reference, tokenizer, members, progress=False)
    scores_out = mia_reference(target_model, reference, tokenizer, nonmembers, progress=False)
    assert scores_in.shape == (len(members),) and scores_in.dtype == np.float64
    assert mia_auc(scores_in, scores_out) > 0.5
    # The score is the audited model's mean NLL minus the reference's.
    expected = manual_nll(target_model, tokenizer, members) - manual_nll(reference, tokenizer, members)
    np.testing.assert_allclose(scores_in, expected, rtol=1e-5, atol=1e-6)


def test_reference_attack_against_itself_gives_zeros(target_model, tokenizer, members):
    target_model.train()
    before = [p.detach().clone() for p in target_model.parameters()]
    scores = mia_reference(target_model, target_model, tokenizer, members, batch_size=4, progress=False)
    np.testing.assert_array_equal(scores, np.zeros(len(members)))
    copied = mia_reference(target_model, copy.deepcopy(target_model), tokenizer, members, progress=False)
    np.testing.assert_allclose(copied, 0.0, atol=1e-6)
    assert target_model.training
    assert all(torch.equal(a, b) for a, b in zip(target_model.parameters(), before))


def test_gradient_norm_attack_recognises_members(target_model, tokenizer, members, nonmembers):
    scores_in = mia_gradient_norm(target_model, tokenizer, members, progress=False)
    scores_out = mia_gradient_norm(target_model, tokenizer, nonmembers, progress=False)
    assert scores_in.shape == (len(members),) and (scores_in > 0).all()
    assert mia_auc(scores_in, scores_out) > 0.5


def test_gradient_norm_is_the_norm_of_the_loss_gradient(target_model, tokenizer, members):
    rows = members.select(range(2))
    model = copy.deepcopy(target_model).eval()
    encoder = PromptEncoder(tokenizer)
    expected = {"global2": [], "global1": [], "globalinf": [], "mean2": []}
    for row in rows:
        batch = pad_examples([encoder.encode([{"role": "user", "content": row["question"]}], row["answer"])], 0)
        model.zero_grad()
        mean_nll(model(input_ids=batch["input_ids"]).logits, batch["labels"])[0].backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        flat = torch.cat(grads)
        expected["global2"].append(float(flat.norm(2)))
        expected["global1"].append(float(flat.abs().sum()))
        expected["globalinf"].append(float(flat.abs().max()))
        expected["mean2"].append(float(torch.stack([g.norm(2) for g in grads]).mean()))
    # The whole answer's loss (loss_tokens="all"); the default, open-unlearning's, is in test_golden_muse_mia.py.
    kwargs = dict(loss_tokens="all", progress=False)
    got = {
        "global2": mia_gradient_norm(target_model, tokenizer, rows, reduction="global", **kwargs),
        "global1": mia_gradient_norm(target_model, tokenizer, rows, p=1, reduction="global", **kwargs),
        "globalinf": mia_gradient_norm(target_model, tokenizer, rows, p=math.inf, reduction="global", **kwargs),
        "mean2": mia_gradient_norm(target_model, tokenizer, rows, **kwargs),
    }
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, err_msg=key)
    # Restricted to some parameters: the norm of their gradient only.
    head = target_model.lm_head.weight
    only_head = mia_gradient_norm(target_model, tokenizer, rows, parameters=[head], reduction="global", **kwargs)
    assert (only_head < got["global2"]).all()


def test_gradient_norm_leaves_grads_and_mode_as_they_were(target_model, tokenizer, members):
    target_model.train()
    params = list(target_model.parameters())
    for i, p in enumerate(params[:3]):
        p.grad = torch.full_like(p, float(i + 1))
    grads_before = [None if p.grad is None else p.grad.clone() for p in params]
    weights_before = [p.detach().clone() for p in params]
    mia_gradient_norm(target_model, tokenizer, members.select(range(3)), progress=False)
    assert target_model.training
    for p, grad, weight in zip(params, grads_before, weights_before):
        assert (p.grad is None) == (grad is None)
        if grad is not None:
            assert torch.equal(p.grad, grad)
        assert torch.equal(p.detach(), weight)
    target_model.eval()
    mia_gradient_norm(target_model, tokenizer, members.select(range(1)), progress=False)
    assert not target_model.training


def test_bad_input(target_model, tokenizer, members, reference):
    with pytest.raises(ValueError, match="no text to score"):
        mia_gradient_norm(target_model, tokenizer, [], progress=False)
    with pytest.raises(ValueError, match="no text to score"):
        mia_reference(target_model, reference, tokenizer, members.select([]), progress=False)
    with pytest.raises(ValueError, match="not a single string"):
        mia_reference(target_model, reference, tokenizer, "a text", progress=False)
    with pytest.raises(ValueError, match="needs a reference model"):
        mia_reference(target_model, None, tokenizer, members, progress=False)
    with pytest.raises(ValueError, match=r"question/answer columns .* or a text column"):
        mia_reference(target_model, reference, tokenizer, [{"prompt": "Who?"}], progress=False)
    with pytest.raises(ValueError, match="Row 1 has no text in column 'answer'"):
        mia_gradient_norm(target_model, tokenizer, [{"question": "Q", "answer": "A"}, {"question": "Q"}])
    with pytest.raises(ValueError, match="at least 2 are needed"):
        mia_gradient_norm(target_model, tokenizer, [""], progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        mia_reference(target_model, reference, tokenizer, members, batch_size=0)
    with pytest.raises(ValueError, match="p must be >= 1"):
        mia_gradient_norm(target_model, tokenizer, members, p=0.5)
    with pytest.raises(ValueError, match="reduction must be one of"):
        mia_gradient_norm(target_model, tokenizer, members, reduction="max")
    with pytest.raises(ValueError, match="loss_tokens must be one of"):
        mia_gradient_norm(target_model, tokenizer, members, loss_tokens="last")
    two_tokens = [t for t in ("x", "The", "a") if len(tokenizer(t).input_ids) == 2]
    with pytest.raises(ValueError, match="single scored token"):
        mia_gradient_norm(target_model, tokenizer, two_tokens[:1], progress=False)
    assert mia_gradient_norm(target_model, tokenizer, two_tokens[:1], loss_tokens="all", progress=False)[0] > 0
    with pytest.raises(ValueError, match="single scored token"):
        mia_scores(target_model, tokenizer, two_tokens[:1], progress=False)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        mia_scores(target_model, tokenizer, members, k=0)
    frozen = copy.deepcopy(target_model).requires_grad_(False)
    with pytest.raises(ValueError, match="None of the model's parameters requires grad"):
        mia_gradient_norm(frozen, tokenizer, members)
    small = tiny_llama(16)
    with pytest.raises(ValueError, match="embedding matrix"):
        mia_reference(target_model, small, tokenizer, members)
