"""Golden tests: every registered loss equals an independent computation of its reference code's quantity.

Each `reference_*` function is written from the formula of the reference code named in its docstring, with plain
torch and the model's own outputs (no hf_unlearn code), on a tiny Llama and batches whose answers have different
lengths (right padding, prompt tokens labelled -100, as the reference data modules make them). The library's value,
with its defaults, must equal it to rtol 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.losses import LossContext, get_loss, list_losses

VOCAB = 160  # > 100: open-unlearning's UNDIAL indexes id -100 as V - 100, which must exist
PAD = 0
RTOL = 1e-5


def make_split(rows: list[tuple[int, int]], seed: int) -> dict[str, torch.Tensor]:
    """Right-padded `(prompt length, answer length)` rows of random tokens; labels on the answer tokens only."""
    generator = torch.Generator().manual_seed(seed)
    width = max(p + a for p, a in rows)
    input_ids = torch.full((len(rows), width), PAD)
    labels = torch.full((len(rows), width), -100)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        ids = torch.randint(1, VOCAB, (prompt + answer,), generator=generator)
        input_ids[i, : prompt + answer] = ids
        labels[i, prompt : prompt + answer] = ids[prompt:]
        attention_mask[i, : prompt + answer] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.fixture(scope="module")
def setup():
    model = tiny_llama(VOCAB, num_layers=2, hidden_size=32, seed=0).eval()
    reference = tiny_llama(VOCAB, num_layers=2, hidden_size=32, seed=1).eval()
    batch = {
        "forget": make_split([(3, 5), (2, 2), (4, 7)], seed=0),
        "retain": make_split([(2, 6), (5, 3), (1, 4)], seed=1),
        "idk": make_split([(3, 3), (2, 1), (4, 2)], seed=2),
    }
    return model, reference, batch


def library_value(setup, name: str, **kwargs) -> float:
    model, reference, batch = setup
    loss = get_loss(name)(**kwargs)
    loss.setup(model, seed=0)
    ctx = LossContext(
        model,
        batch,
        lambda inputs: reference(**inputs, output_hidden_states=True, use_cache=False),
        output_hidden_states=True,
        reference_module=reference,
    )
    with torch.no_grad():
        return float(loss(ctx)), loss


# ------------------------------------------------------------------------------------------- reference building blocks
def forward(model, split):
    return model(input_ids=split["input_ids"], attention_mask=split["attention_mask"]).logits


def hf_loss(model, split) -> torch.Tensor:
    """HF's `outputs.loss` (transformers' `ForCausalLMLoss`: shift, cross-entropy with ignore_index -100, mean over
    the valid tokens of the batch), what every reference code uses as its NLL; computed here in the logits' dtype
    (transformers upcasts to float32, which would round a float64 comparison)."""
    logits = forward(model, split)
    labels = split["labels"][:, 1:]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def per_token_ce(logits, labels) -> torch.Tensor:
    """`CrossEntropyLoss(reduction="none")` on the shifted logits, 0 where the label is -100 (`[batch, len - 1]`)."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")


def batch_nll(model, split) -> torch.Tensor:
    """locuslab/open-unlearning `compute_batch_nll` (= tmlr-group/GRU `get_batch_loss`): per-sequence sums."""
    return per_token_ce(forward(model, split), split["labels"]).sum(-1)


def layer_output(model, split, layer: int) -> torch.Tensor:
    """The decoder layer's output as open-unlearning's RMU reads it: a forward hook on the layer, `output[0]`."""
    box = {}
    hook = model.model.layers[layer].register_forward_hook(
        lambda m, a, out: box.setdefault("h", out[0] if isinstance(out, tuple) else out)
    )
    try:
        forward(model, split)
    finally:
        hook.remove()
    return box["h"]


# ------------------------------------------------------------------------------------------------ reference losses
def reference_ga(model, ref, batch):
    """open-unlearning `GradAscent.compute_loss`, tofu `grad_ascent`: -outputs.loss on the forget batch."""
    return -hf_loss(model, batch["forget"])


def reference_nll(model, ref, batch):
    """open-unlearning `GradDiff.compute_retain_loss` (retain_loss_type NLL): outputs.loss on the retain batch."""
    return hf_loss(model, batch["retain"])


def reference_idk(model, ref, batch):
    """open-unlearning IdkNLL's forget term: outputs.loss on the forget prompts with refusal answers."""
    return hf_loss(model, batch["idk"])


def reference_npo(model, ref, batch, beta=0.1):
    """open-unlearning `NPO` via `compute_dpo_loss(win=None)`: -(2/beta) mean log sigmoid(beta (NLL - NLL_ref))."""
    gap = batch_nll(model, batch["forget"]) - batch_nll(ref, batch["forget"])
    return -(2 / beta) * F.logsigmoid(beta * gap).mean()


def reference_simnpo(model, ref, batch, beta=4.5, delta=0.0):
    """open-unlearning `SimNPO.compute_loss`: sigmoid(beta * (NLL / |y| - delta)), |y| the answer tokens."""
    lengths = (batch["forget"]["labels"] != -100).sum(-1)
    x = batch_nll(model, batch["forget"]) / lengths - delta
    return -(2 / beta) * F.logsigmoid(beta * x).mean()


def reference_dpo(model, ref, batch, beta=0.1):
    """open-unlearning `compute_dpo_loss` (IdkDPO): win = refusal, lose = the true answer; sequence sums."""
    win = -(batch_nll(model, batch["idk"]) - batch_nll(ref, batch["idk"]))
    lose = -(batch_nll(model, batch["forget"]) - batch_nll(ref, batch["forget"]))
    return -(2 / beta) * F.logsigmoid(beta * (win - lose)).mean()


def _weighted_ga(model, batch, weight_of):
    labels = batch["forget"]["labels"]
    ce = per_token_ce(forward(model, batch["forget"]), labels).reshape(-1)
    valid = labels[:, 1:].reshape(-1) != -100
    return -(weight_of(ce) * ce)[valid].mean()


def reference_wga(model, ref, batch, beta=1.0):
    """open-unlearning `compute_wga_loss` (= tmlr-group/G-effect `wga`): -mean over valid tokens of p^beta * CE."""
    return _weighted_ga(model, batch, lambda ce: torch.exp(-ce).detach() ** beta)


def _tnpo_weights(model, ref, batch, beta, extra):
    labels = batch["forget"]["labels"]
    ref_ce = per_token_ce(forward(ref, batch["forget"]), labels).reshape(-1)
    q = torch.exp(-ref_ce).detach()

    def weights(ce):
        p = torch.exp(-ce).detach()
        return 2 * p ** (beta + extra) / (p**beta + q**beta + 1e-5)

    return _weighted_ga(model, batch, weights)


def reference_tnpo(model, ref, batch, beta=4.0):
    """tmlr-group/G-effect `CustomTrainerForgetting.compute_loss`, `ins_npo`: w = 2 p^b / (p^b + p_ref^b + 1e-5)."""
    return _tnpo_weights(model, ref, batch, beta, 0.0)


def reference_wtnpo(model, ref, batch, beta=0.1, a=2.0):
    """tmlr-group/G-effect `compute_loss`, `w_ins_npo`: w = 2 p^(b + a) / (p^b + p_ref^b + 1e-5), beta 0.1."""
    return _tnpo_weights(model, ref, batch, beta, a)


def reference_satimp(model, ref, batch, b1=5.0, b2=1.0):
    """open-unlearning `compute_satimp_loss`: -mean over valid tokens of p^b1 (1 - p)^b2 * CE, weights detached."""
    return _weighted_ga(model, batch, lambda ce: (torch.exp(-ce) ** b1 * (1 - torch.exp(-ce)) ** b2).detach())


def reference_ceu(model, ref, batch, n=1):
    """open-unlearning `CEU.compute_loss` (`ignore_first_n_answer_tokens=1`): drop the first answer label, then
    `cross_entropy(z, softmax(z.detach() with the true logit at -inf))` pooled over the remaining tokens."""
    labels = batch["forget"]["labels"].clone()
    valid = labels != -100
    labels[valid & (valid.cumsum(-1) <= n)] = -100
    logits = forward(model, batch["forget"])[:, :-1]
    shifted = labels[:, 1:]
    keep = shifted != -100
    z, y = logits[keep], shifted[keep]
    target = z.detach().clone()
    target[torch.arange(len(y)), y] = float("-inf")
    return F.cross_entropy(z, F.softmax(target, dim=-1))


def reference_undial_all(model, ref, batch, beta=10.0):
    """open-unlearning `compute_undial_loss`: teacher logits minus beta at the label (index -100 wraps to V - 100),
    soft cross-entropy averaged over EVERY position of the padded batch."""
    labels = batch["forget"]["labels"][:, 1:]
    student = forward(model, batch["forget"])[:, :-1]
    teacher = forward(ref, batch["forget"])[:, :-1]
    mask = torch.zeros_like(teacher)
    rows, cols = torch.meshgrid(torch.arange(labels.shape[0]), torch.arange(labels.shape[1]), indexing="ij")
    mask[rows, cols, labels] = 1  # labels of -100 index V - 100, as Python's negative indices
    target = F.softmax(teacher - beta * mask, dim=-1)
    return F.cross_entropy(student.reshape(-1, VOCAB), target.reshape(-1, VOCAB))


def reference_undial(model, ref, batch, beta=10.0):
    """`compute_undial_loss`'s soft cross-entropy at the answer tokens, pooled over the batch (the library's default
    averaging; `positions="all"` is checked against the reference's own averaging below)."""
    labels = batch["forget"]["labels"][:, 1:]
    keep = labels != -100
    student = forward(model, batch["forget"])[:, :-1][keep]
    teacher = forward(ref, batch["forget"])[:, :-1][keep]
    adjusted = teacher.clone()
    adjusted[torch.arange(len(student)), labels[keep]] -= beta
    return F.cross_entropy(student, F.softmax(adjusted, dim=-1))


def _activation_loss(a, b, labels):
    """open-unlearning `RMU.compute_activation_loss`: mean over hidden units, per-sequence mean over the answer
    positions (labels != -100, unshifted), mean over the batch."""
    mask = (labels != -100).float()
    per_token = F.mse_loss(a, b.expand_as(a), reduction="none").mean(-1)
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def reference_rmu(model, ref, batch, loss):
    """open-unlearning `RMU.compute_loss`: the hooked output of decoder layer l against c * u."""
    h = layer_output(model, batch["forget"], loss.layer)
    return _activation_loss(h, loss.steering_coeff * loss.direction, batch["forget"]["labels"])


def reference_embed_diff(model, ref, batch, loss):
    """open-unlearning `RMU.compute_retain_loss` (EMBED_DIFF): hooked layer outputs, model against reference."""
    split = batch["retain"]
    hidden, ref_hidden = layer_output(model, split, loss.layer), layer_output(ref, split, loss.layer)
    return _activation_loss(hidden, ref_hidden, split["labels"])


def reference_kl(model, ref, batch):
    """open-unlearning / tofu `compute_kl_divergence`: kl_div(log q, log p_ref, batchmean, log_target) over the
    logits of every position (rows = batch x length), i.e. KL(p_ref || q) summed and divided by batch x length."""
    logits = forward(model, batch["retain"])
    vocab = logits.shape[-1]
    log_q = F.log_softmax(logits, -1).view(-1, vocab)
    log_p = F.log_softmax(forward(ref, batch["retain"]), -1).view(-1, vocab)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def reference_none(model, ref, batch):
    """No retain term."""
    return torch.zeros(())


# name -> (library kwargs, reference function, whether the reference needs the loss object)
GOLDEN = {
    "ga": ({}, reference_ga),
    "nll": ({}, reference_nll),
    "idk": ({}, reference_idk),
    "npo": ({}, reference_npo),
    "simnpo": ({}, reference_simnpo),
    "dpo": ({}, reference_dpo),
    "wga": ({}, reference_wga),
    "tnpo": ({}, reference_tnpo),
    "wtnpo": ({}, reference_wtnpo),
    "satimp": ({}, reference_satimp),
    "ceu": ({}, reference_ceu),
    "undial": ({}, reference_undial),
    "rmu": ({"layer": 1, "steering_coeff": 2.0}, reference_rmu),
    "embed_diff": ({"layer": 1}, reference_embed_diff),
    "kl": ({}, reference_kl),
    "none": ({}, reference_none),
}
NEEDS_LOSS_OBJECT = {"rmu", "embed_diff"}


def builtin_losses() -> list[str]:
    return [name for name in list_losses() if get_loss(name).__module__.startswith("hf_unlearn.")]


def test_hf_loss_is_transformers_outputs_loss(setup):
    model, _, batch = setup
    split = batch["forget"]
    with torch.no_grad():
        outputs = model(input_ids=split["input_ids"], attention_mask=split["attention_mask"], labels=split["labels"])
        assert float(hf_loss(model, split)) == pytest.approx(float(outputs.loss), rel=1e-6)


def test_every_builtin_loss_has_a_golden_reference():
    assert sorted(builtin_losses()) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_loss_equals_its_reference(setup, name):
    model, reference, batch = setup
    kwargs, reference_fn = GOLDEN[name]
    value, loss = library_value(setup, name, **kwargs)
    with torch.no_grad():
        extra = (loss,) if name in NEEDS_LOSS_OBJECT else ()
        expected = float(reference_fn(model, reference, batch, *extra))
    assert value == pytest.approx(expected, rel=RTOL, abs=1e-7)


def test_the_batch_has_answers_of_different_lengths(setup):
    _, _, batch = setup
    for split in batch.values():
        lengths = (split["labels"] != -100).sum(-1)
        assert len(set(lengths.tolist())) == len(lengths)
        assert (split["attention_mask"] == 0).any(), "right padding"


def test_pooled_and_per_answer_averages_differ_on_this_batch(setup):
    """The default follows the references (pooled); "answer" is the per-answer variant, and they differ here."""
    model, reference, batch = setup
    ctx = LossContext(model, batch, token_average="answer")
    with torch.no_grad():
        per_answer = float(get_loss("ga")()(ctx))
        logits = forward(model, batch["forget"])
        ce = per_token_ce(logits, batch["forget"]["labels"])
        lengths = (batch["forget"]["labels"][:, 1:] != -100).sum(-1)
        pooled = float(reference_ga(model, reference, batch))
    assert per_answer == pytest.approx(float(-(ce.sum(-1) / lengths).mean()), rel=RTOL)
    assert per_answer != pytest.approx(pooled, rel=RTOL)


def test_undial_all_positions_equals_open_unlearning(setup):
    model, reference, batch = setup
    value, _ = library_value(setup, "undial", positions="all")
    with torch.no_grad():
        assert value == pytest.approx(float(reference_undial_all(model, reference, batch)), rel=RTOL)


def test_kl_answer_positions_variant(setup):
    model, reference, batch = setup
    value, _ = library_value(setup, "kl", positions="answer")
    with torch.no_grad():
        labels = batch["retain"]["labels"][:, 1:]
        log_q = F.log_softmax(forward(model, batch["retain"])[:, :-1], -1)
        log_p = F.log_softmax(forward(reference, batch["retain"])[:, :-1], -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        expected = kl[labels != -100].mean()
    assert value == pytest.approx(float(expected), rel=RTOL)


@pytest.mark.parametrize("layer", [0, 1])
def test_rmu_reads_the_residual_stream_before_the_final_norm(setup, layer):
    """At the last layer HF's hidden_states[-1] is after the final norm; RMU must read the layer's own output."""
    model, reference, batch = setup
    value, loss = library_value(setup, "rmu", layer=layer, steering_coeff=2.0)
    with torch.no_grad():
        assert value == pytest.approx(float(reference_rmu(model, reference, batch, loss)), rel=RTOL)
        if layer == 1:
            inputs = {k: batch["forget"][k] for k in ("input_ids", "attention_mask")}
            normed = model(**inputs, output_hidden_states=True)
            wrong = _activation_loss(normed.hidden_states[-1], 2.0 * loss.direction, batch["forget"]["labels"])
            assert value != pytest.approx(float(wrong), rel=1e-3)
