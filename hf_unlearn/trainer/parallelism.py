"""Which parallelism a training step that reads or perturbs each rank's full gradients cannot run under.

GRU (it projects the full gradient) and SAM/RS smoothing (they perturb each rank's full copy of the weights) share
these checks; they differ only in what they say about DeepSpeed and FSDP, and whether FSDP2 is allowed.
"""

from __future__ import annotations

from typing import Any


def unsupported_parallelism(
    trainer: Any, *, deepspeed: str, fsdp: str | None, check_optimizer: bool = False
) -> str | None:
    """Describe the parallelism of `trainer` that a full-gradient step cannot run under, or None when it can.

    Args:
        trainer: a transformers `Trainer` after its accelerator was prepared.
        deepspeed: why DeepSpeed is refused (appended to its name).
        fsdp: why FSDP is refused, or None when the caller supports it (it then decides on FSDP1 vs FSDP2 itself).
        check_optimizer: also refuse optimizers that update weights during the backward pass (LOMO).
    """
    from accelerate.utils import DistributedType

    kind = trainer.accelerator.distributed_type
    if trainer.is_deepspeed_enabled or kind == DistributedType.DEEPSPEED:
        return f"DeepSpeed ({deepspeed})"
    if fsdp is not None and (trainer.is_fsdp_enabled or kind == DistributedType.FSDP):
        return f"FSDP ({fsdp})"
    if kind in (DistributedType.MEGATRON_LM, DistributedType.XLA):
        return str(kind.value)
    if trainer.args.n_gpu > 1:
        return "torch.nn.DataParallel (several GPUs in one process)"
    sharded_loading = getattr(trainer, "is_distributed_loading_by_transformers", False)
    if trainer.args.parallelism_config is not None or sharded_loading:
        return "tensor/context/sequence parallelism or a sharded parallelism_config"
    if check_optimizer and "lomo" in str(trainer.args.optim).lower():
        return f"optim={trainer.args.optim!r} (LOMO updates the weights during the backward pass)"
    return None
