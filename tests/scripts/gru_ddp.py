"""GRU under data parallelism: launched on 2 CPU processes by tests/test_gru_distributed.py, and run in-process
(one process, the same global batch) by the same test for comparison.

Both ranks draw their retain examples as rank 0 would (`process_index = 0` on the collator): a rank's retain draws
depend on (seed, rank, epoch, forget row), so this makes the 2-process run see exactly the forget and retain
examples of the single-process run.

With `fsdp2` as the 4th argument, the 2 processes run FSDP2 instead of DDP (`fsdp2-resume`: a run saving at step 2,
then one resumed from that checkpoint). Sharded state dicts: on the CPU, torch cannot load a full optimizer state dict
into FSDP2 ("Expected device to be set"). accelerate runs FSDP only on
accelerators, so the state it builds for a CPU launch is switched to FSDP2 before the trainer is created (see
`use_fsdp2_on_cpu`); everything after that (sharding, GRU, clipping, checkpoints) is accelerate's and ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import make_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import load_tofu


def use_fsdp2_on_cpu() -> None:
    """Make accelerate's state for a 2-process CPU launch FSDP2 (decoder layers wrapped, full state dicts)."""
    import accelerate.state
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    build = accelerate.state.AcceleratorState.__init__

    def build_fsdp2(self, *args, **kwargs):
        build(self, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = FullyShardedDataParallelPlugin(
                fsdp_version=2,
                auto_wrap_policy="transformer_based_wrap",
                transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
                state_dict_type="SHARDED_STATE_DICT",
                reshard_after_forward=True,
                cpu_ram_efficient_loading=False,
            )

    accelerate.state.AcceleratorState.__init__ = build_fsdp2


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


# Per-answer averaging: a pooled token mean is per rank's batch, so 2 ranks equal one process only per answer.
OBJECTIVES = {
    # GA + 0.05 NLL conflicts with the retain NLL here, so that GRU projects (the retain NLL's gradient is reused)
    "gd": dict(forget_loss="ga", retain_loss="nll", alpha=0.05),
    # a retain term that is not the direction: three backward passes, the retain forward's graph used twice
    "npo_kl": dict(forget_loss="npo", retain_loss="kl", retain_loss_kwargs={"positions": "answer"}),
}


def run(
    model_dir: str,
    out_dir: str,
    per_device_batch: int,
    max_steps: int = 3,
    save_steps: int | None = None,
    resume_from: str | None = None,
    objective: str = "gd",
) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    forget = load_tofu("forget01", "bundled").select(range(16))
    retain = load_tofu("retain99", "bundled").select(range(64))
    trainer = make_trainer(
        model,
        tokenizer,
        forget,
        retain,
        out_dir,
        **OBJECTIVES[objective],
        rectification="gru",
        token_average="answer",
        per_device_train_batch_size=per_device_batch,
        max_steps=max_steps,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        **({"save_strategy": "steps", "save_steps": save_steps} if save_steps else {}),
    )
    trainer.unlearning_collator.process_index = 0
    trainer.train(resume_from_checkpoint=resume_from)
    report = {
        "rank": trainer.accelerator.process_index,
        "world_size": trainer.accelerator.num_processes,
        "sharded": trainer._gru_sharded,
        "params": torch.cat([_full(p.detach()).flatten() for p in trainer.model.parameters()]),
        "gru_logs": [e for e in trainer.state.log_history if "gru/cosine" in e],
    }
    torch.save(report, Path(out_dir) / f"rank{report['rank']}-of-{report['world_size']}.pt")
    return report


if __name__ == "__main__":
    model_dir, out_dir, per_device_batch, *mode = sys.argv[1:]
    if mode and mode[0].startswith("fsdp2"):
        use_fsdp2_on_cpu()
    if mode == ["fsdp2-resume"]:  # an uninterrupted run saving at step 2, then a run resumed from that checkpoint
        run(model_dir, f"{out_dir}/uninterrupted", int(per_device_batch), save_steps=2)
        checkpoint = f"{out_dir}/uninterrupted/checkpoint-2"
        run(model_dir, f"{out_dir}/resumed", int(per_device_batch), resume_from=checkpoint)
    else:
        run(model_dir, out_dir, int(per_device_batch), objective=mode[1] if len(mode) > 1 else "gd")
