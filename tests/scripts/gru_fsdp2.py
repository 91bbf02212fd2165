"""GRU's rectifier on FSDP2-sharded gradients: launched on 2 CPU processes (gloo) with torchrun by
tests/test_gru_distributed.py, and run in one process without sharding (the same global batches) by the same test.

accelerate runs FSDP only on accelerators, so this drives torch's `fully_shard` and the rectifier directly, as the
trainer does: per micro-batch a forget backward (GA), then a retain backward (NLL) into the retain buffers; at the
optimizer step `rectify()` and SGD. Each rank takes half of every batch; FSDP's reduce-scatter averages the halves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hf_unlearn.demo.tiny import tiny_llama
from hf_unlearn.gru import GradientRectifier, all_reduce_sum_, stats_to_logs

VOCAB, BATCH, LENGTH, STEPS, ACCUMULATION = 64, 4, 12, 3, 2


def _sequence_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return nll.mean()  # equal-length rows: the mean of two halves' means is the mean of the batch


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def run(out_dir: str, sharded: bool, retain_weight: float = 0.0) -> dict:
    rank, world = (dist.get_rank(), dist.get_world_size()) if sharded else (0, 1)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = tiny_llama(VOCAB, num_layers=2, hidden_size=32, seed=0)
    if sharded:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(STEPS * ACCUMULATION):
        forget = torch.randint(4, VOCAB, (BATCH, LENGTH), generator=generator)
        retain = forget.clone()  # sharing the first half of each row makes the two gradients conflict
        retain[:, LENGTH // 2 :] = torch.randint(4, VOCAB, (BATCH, LENGTH - LENGTH // 2), generator=generator)
        batches.append((forget, retain))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rectifier = GradientRectifier(
        params, ema=0.8, retain_weight=retain_weight, reduce_sums=all_reduce_sum_ if sharded else None
    )
    optimizer = torch.optim.SGD([p for _, p in params], lr=0.5)
    logs = []
    for step in range(STEPS):
        for micro in range(ACCUMULATION):
            forget, retain = (b[rank::world] for b in batches[step * ACCUMULATION + micro])
            (-_sequence_nll(model, forget) / ACCUMULATION).backward()
            with rectifier.retain_gradients():
                (_sequence_nll(model, retain) / ACCUMULATION).backward()
        logs.append(stats_to_logs(rectifier.rectify().tolist()))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # The state round-trips through a file: gathered on every rank, written by rank 0, re-sharded on load.
    rectifier.save(out_dir, write=rank == 0)
    if sharded:
        dist.barrier()
    reloaded = GradientRectifier(params, ema=0.8, retain_weight=retain_weight)
    assert reloaded.load(out_dir)
    for before, after in zip(rectifier.retain_ema, reloaded.retain_ema):
        assert type(before) is type(after) and torch.equal(_full(before), _full(after))
    report = {
        "world_size": world,
        "params": torch.cat([_full(p.detach()).flatten() for _, p in params]),
        "retain_ema": torch.cat([_full(b).flatten() for b in rectifier.retain_ema]),
        "gru_logs": logs,
    }
    if rank == 0:
        torch.save(report, Path(out_dir) / f"report-{world}.pt")
    return report


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        run(sys.argv[1], sharded=True, retain_weight=float(sys.argv[2]))
        dist.barrier()  # no rank tears gloo down while the other one still talks to it
    finally:
        dist.destroy_process_group()
