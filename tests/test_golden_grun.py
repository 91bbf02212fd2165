"""Golden test of GRUN's training objective against its reference code, renjie3/GRUN.

The reference trains on TOFU with `TofuReftTrainer.compute_loss` (pyreft/reft_trainer.py), its edits being
`GatedLoreftIntervention_Linear` / `GatedLoreftIntervention` (pyreft/interventions.py, the `linear` and `mlp_3`
gates of grun.py) on the block output of the chosen layers at the last prompt position
(`make_last_position_supervised_tofu_data_module`). Here that computation is rewritten from the reference, on a plain
copy of the base model with forward hooks (no hf_unlearn GRUN code), and compared with `GRUNTrainer.compute_loss`:

- edit: h' = h + ((W h + b) - h R) R^T * sigmoid(g(h)), R the d x r orthonormal rotation, g the gate;
- `gated_grad_diff` (GA): -(w_f * -CE_forget) ... i.e. loss = -w_f * CE_forget + w_r * CE_retain + w_g * BCE;
- `gated_npo_grad_diff` (NPO): forget_loss = npo_coeff * mean(logsigmoid(beta * (NLL_cur - NLL_base))) * 2 / beta with
  NLL the summed per-sequence cross-entropy (`get_batch_loss`) and NLL_base from the model without edits; loss =
  -forget_loss + w_r * CE_retain + w_g * BCE;
- BCE: one `nn.BCELoss` over the sigmoid gates of every edited layer, forget rows labelled 1, retain rows 0;
- CE: HF's `outputs.loss` (mean over the batch's answer tokens) of the edited model.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import make_trainer
from transformers import AutoModelForCausalLM

pytest.importorskip("pyreft")

from hf_unlearn.grun import GRUNConfig, GRUNTrainer, get_grun_model  # noqa: E402  (needs pyreft)

IGNORE = -100


def reference_edit(module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`GatedLoreftIntervention*.forward` of renjie3/GRUN on hidden states `[n, d]`: (edited states, sigmoid gate)."""
    rotation = module.rotate_layer.weight.detach()  # [d, r], orthonormal columns (LowRankRotateLayer's weight)
    source = F.linear(hidden, module.learned_source.weight.detach(), module.learned_source.bias.detach())
    gate = torch.sigmoid(module.gate(hidden))  # a Linear(d, 1) or the d-h1-h2-1 ReLU MLP, as gate_func
    return hidden + ((source - hidden @ rotation) @ rotation.T) * gate, gate


def last_prompt_positions(labels: torch.Tensor) -> list[int]:
    """The reference's intervention location: the last prompt token, just before the first answer label."""
    return [int((row != IGNORE).nonzero()[0]) - 1 for row in labels]


def edited_forward(base, modules: dict[int, torch.nn.Module], batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits of `base` with each layer's block output edited at the last prompt token, and the gates per layer."""
    positions = last_prompt_positions(batch["labels"])
    rows = torch.arange(len(positions))
    gates: list[torch.Tensor] = []

    def hook_for(module):
        def hook(layer, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden.clone()
            edited, gate = reference_edit(module, hidden[rows, positions])
            hidden[rows, positions] = edited
            gates.append(gate.reshape(-1))
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    handles = [base.model.layers[layer].register_forward_hook(hook_for(m)) for layer, m in modules.items()]
    try:
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, gates


def batch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """renjie3/GRUN's `get_batch_loss`: the summed cross-entropy of each sequence (shifted)."""
    shifted_logits, shifted_labels = logits[:, :-1].transpose(1, 2), labels[:, 1:]
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE, reduction="none").sum(-1)


def hf_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """HF's causal-LM `outputs.loss`: mean cross-entropy over the batch's answer tokens."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE)


def reference_loss(base, modules, config: GRUNConfig, batch: dict) -> torch.Tensor:
    forget, retain = batch["forget"], batch["retain"]
    forget_logits, forget_gates = edited_forward(base, modules, forget)
    retain_logits, retain_gates = edited_forward(base, modules, retain)
    if config.forget_loss == "npo":
        beta = config.forget_loss_kwargs.get("beta", 0.1)
        with torch.no_grad():
            oracle = base(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"]).logits
        neg_log_ratios = batch_loss(forget_logits, forget["labels"]) - batch_loss(oracle, forget["labels"])
        forget_loss = config.forget_weight * F.logsigmoid(beta * neg_log_ratios).mean() * 2 / beta
    else:  # gated_grad_diff
        forget_loss = hf_loss(forget_logits, forget["labels"]) * config.forget_weight
    gate_values = torch.cat([torch.cat(forget_gates), torch.cat(retain_gates)]).view(-1, 1)
    gate_labels = torch.cat([torch.ones(sum(map(len, forget_gates))), torch.zeros(sum(map(len, retain_gates)))])
    gated_loss = torch.nn.BCELoss()(gate_values, gate_labels.view(-1, 1))
    unlearning_loss = -forget_loss + config.retain_weight * hf_loss(retain_logits, retain["labels"])
    return unlearning_loss + gated_loss * config.gate_weight


@pytest.mark.parametrize(
    "forget_loss, gate", [("npo", "linear"), ("ga", "linear"), ("npo", "mlp")], ids=["npo", "ga", "npo-mlp-gate"]
)
def test_grun_loss_equals_the_reference_code(forget_loss, gate, target_model_dir, tokenizer, tofu, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(target_model_dir, dtype=torch.float32)
    plain = copy.deepcopy(base)
    config = GRUNConfig(layers=[0, 1], forget_loss=forget_loss, gate=gate, gate_hidden_sizes=(16, 8))
    grun = get_grun_model(base, config, seed=0)
    with torch.no_grad():  # a trained-looking edit: gates neither shut nor saturated, a sizeable source term
        generator = torch.Generator().manual_seed(1)
        for module in grun.trainable_modules():
            for name, param in module.named_parameters():
                if "rotate" not in name:
                    param.add_(0.3 * torch.randn(param.shape, generator=generator))
    # forget and retain rows of different lengths (the per-sequence NPO sum and the pooled CE differ then)
    forget, retain = tofu["forget01"].select(range(6)), tofu["retain99"].select(range(6))
    trainer = make_trainer(
        grun, tokenizer, forget, retain, tmp_path, trainer_cls=GRUNTrainer, max_steps=1, per_device_train_batch_size=6
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert len({int((row != IGNORE).sum()) for row in batch["forget"]["labels"]}) > 1
    grun.eval()
    ours = trainer.compute_loss(grun, batch)

    modules = dict(grun.requests[-1].modules)  # layer -> its gated module
    assert sorted(modules) == config.layers
    theirs = reference_loss(plain.eval(), modules, config, batch)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
