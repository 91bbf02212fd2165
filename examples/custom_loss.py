"""Register your own unlearning loss in your own file and train with it by name.

    python examples/custom_loss.py                # offline: a tiny model on the bundled TOFU subset
    python examples/custom_loss.py --steps 20

The loss below is NPO on per-token mean NLLs. Any class that subclasses ForgetLoss (or RetainLoss) and is decorated
with @register_loss("name") can be selected with UnlearningConfig(forget_loss="name", forget_loss_kwargs={...}).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from hf_unlearn import ForgetLoss, UnlearningConfig, UnlearningTrainer, load_tofu, register_loss
from hf_unlearn.demo.tiny import finetune_on_qa, tiny_llama, train_tokenizer


@register_loss("npo_mean")
class MeanNPO(ForgetLoss):
    """NPO on per-token mean NLLs instead of sequence sums: -(2/beta) log sigmoid(beta (mNLL - mNLL_ref))."""

    needs_ref_model = True  # the trainer then provides ctx.ref_* outputs (adapter-off model or a frozen copy)

    def __init__(self, beta: float = 0.5):  # hyperparameters come from forget_loss_kwargs
        self.beta = beta

    def __call__(self, ctx) -> torch.Tensor:  # ctx caches outputs: one forward per split and batch
        n_tokens = ctx.token_log_probs("forget")[1].sum(-1)
        gap = ctx.mean_nll("forget") - ctx.ref_nll("forget") / n_tokens
        return -(2 / self.beta) * F.logsigmoid(self.beta * gap).mean()


def main(steps: int = 10, finetune_epochs: int = 20, output_dir: str = "custom_loss_output") -> tuple[float, float]:
    full, forget, retain = (load_tofu(name, "bundled") for name in ("full", "forget01", "retain99"))
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in zip(full["question"], full["answer"])], vocab_size=1024)
    model = tiny_llama(len(tokenizer), num_layers=2, hidden_size=128)
    finetune_on_qa(model, tokenizer, full["question"], full["answer"], epochs=finetune_epochs, learning_rate=2e-3)

    args = UnlearningConfig(
        output_dir=output_dir,
        forget_loss="npo_mean",
        forget_loss_kwargs={"beta": 0.5},
        retain_loss="nll",
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=5e-4,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
    )
    trainer = UnlearningTrainer(
        model=model, args=args, forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer
    )
    trainer.train()
    losses = [entry["loss/forget"] for entry in trainer.state.log_history if "loss/forget" in entry]
    print(f"npo_mean forget loss: first step {losses[0]:.3f}, last step {losses[-1]:.3f}")
    return losses[0], losses[-1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--output-dir", default="custom_loss_output")
    cli = parser.parse_args()
    main(cli.steps, cli.finetune_epochs, cli.output_dir)
