"""GRU: gradient rectified unlearning (Wang et al. 2025, "GRU: Mitigating the Trade-off between Unlearning and
Retention for LLMs", arXiv 2503.09117).

Once per optimizer step, the accumulated gradient g_o of the method's whole objective (gamma * L_forget +
alpha * L_retain, as the reference code tmlr-group/GRU does for `gd_gru`, `npo_gd_gru`, `npo_KL_gru`, `idk_gru`) is
projected so that it does not conflict with a moving average of the gradient g_r of the retain NLL:

    gbar_r <- m * g_r + (1 - m) * gbar_r          (m = `gru_ema`, gbar_r starts at 0)
    d = <g_o, gbar_r>                             (ONE scalar over all trainable parameters)
    g_o <- g_o - d / ||gbar_r||^2 * gbar_r        (only if d < 0)

and the optimizer steps on g_o (+ lambda * g_r with `gru_retain_weight` lambda > 0, the reference's "+ce" variant).
When the objective's retain term is the retain NLL itself, its gradient is not backpropagated twice: the rectifier
adds alpha * g_r to g_o (`objective_retain_weight`).

The math works on lists of gradient tensors (one per trainable parameter), in place, on their device: nothing is
flattened, copied to the CPU or upcast as a whole. The dot product and the two squared norms are taken per tensor in
float32 (low-precision tensors are upcast slice by slice, once for all three; float64 tensors in float64) and summed
in float64. [`GradientRectifier`] holds the state between optimizer steps.

Sharded gradients (FSDP2's DTensors): each rank works on its local shards; the three sums (dot product and the two
squared norms) are partial, and ONE all-reduce of those three scalars makes them global before the decision, so
every rank projects its shards with the same coefficient, as if the full gradients were on one device.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from .constants import GRU_STATE_FILE, GRU_WEIGHTS_FILE
from .io import write_json_atomic

#: Layout of the statistics tensor returned by [`rectify_`] and [`GradientRectifier.rectify`].
STATS_FIELDS = ("dot", "objective_sq_norm", "retain_sq_norm", "projected")

TensorList = Sequence[torch.Tensor | None]


def _local(t: torch.Tensor | None) -> torch.Tensor | None:
    """The local shard of a DTensor (a view: in-place changes reach the DTensor), else the tensor itself."""
    return t.to_local() if t is not None and hasattr(t, "to_local") else t


#: Elements upcast at a time when a low-precision gradient enters [`rectify_`]'s sums: on the CPU a slice that stays
#: in the caches (one pass over memory instead of six), on an accelerator large slices (few kernel launches).
UPCAST_CHUNK = {"cpu": 1 << 18}
UPCAST_CHUNK_ACCELERATOR = 1 << 26


def _pair_sums(g: torch.Tensor | None, r: torch.Tensor | None) -> torch.Tensor:
    """`[<g, r>, ||g||^2, ||r||^2]` as float64 (None counts as zeros), each tensor upcast once, slice by slice, and
    the three sums taken from the same slice: float32 sums (float64 for float64 tensors) added up in float64.
    Upcasting whole tensors once per sum moved six copies of every bfloat16 gradient through memory."""
    flat_g, flat_r = (t.reshape(-1) if t is not None else None for t in (g, r))
    present = [t for t in (flat_g, flat_r) if t is not None]
    if len(present) == 2 and flat_g.numel() != flat_r.numel():
        raise ValueError(f"A gradient and its retain direction differ in size ({g.numel()} and {r.numel()}).")
    dtype = torch.float64 if all(t.dtype == torch.float64 for t in present) else torch.float32
    numel, device = present[0].numel(), present[0].device
    if all(t.dtype == dtype for t in present):
        step = max(numel, 1)  # nothing to upcast
    else:
        step = UPCAST_CHUNK.get(device.type, UPCAST_CHUNK_ACCELERATOR)
    zero = torch.zeros((), dtype=dtype, device=device)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    for start in range(0, numel, step):
        gs = flat_g[start : start + step].to(dtype) if flat_g is not None else None
        rs = flat_r[start : start + step].to(dtype) if flat_r is not None else None
        parts = (
            torch.dot(gs, rs) if gs is not None and rs is not None else zero,
            torch.dot(gs, gs) if gs is not None else zero,
            torch.dot(rs, rs) if rs is not None else zero,
        )
        totals += torch.stack(parts).double()
    return totals


def _first_device(*lists: TensorList) -> torch.device:
    for tensors in lists:
        for t in tensors:
            if t is not None:
                return t.device
    return torch.device("cpu")


def rectify_(
    grads: TensorList,
    retain: TensorList,
    eps: float = 1e-30,
    reduce_sums: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Project `grads` (g_f) in place onto the orthogonal complement of `retain` (gbar_r) when they conflict.

    If d = <g_f, gbar_r> < 0: g_f <- g_f - d / ||gbar_r||^2 * gbar_r, the smallest change that makes the dot product
    zero; otherwise g_f is left as it is (bit for bit). The decision is taken on the device: no CPU synchronisation.
    Entries that are None count as zeros (a None gradient stays None). DTensors are handled through their local
    shards; `reduce_sums` (sums a float64 tensor in place over the ranks holding the other shards) then turns the
    partial sums into global ones.

    Returns a float64 tensor `[d, ||g_f||^2, ||gbar_r||^2, projected]` (see `STATS_FIELDS`), the norms before the
    projection, `projected` 1.0 or 0.0.
    """
    grads, retain = [_local(g) for g in grads], [_local(r) for r in retain]
    if len(grads) != len(retain):
        raise ValueError(f"The two gradient lists have different lengths ({len(grads)} and {len(retain)}).")
    device = _first_device(grads, retain)
    pairs = [_pair_sums(g, r) for g, r in zip(grads, retain) if g is not None or r is not None]
    sums = (
        torch.stack([p.to(device) for p in pairs]).sum(dim=0)
        if pairs
        else torch.zeros(3, dtype=torch.float64, device=device)
    )
    if reduce_sums is not None:
        reduce_sums(sums)
    dot, forget_sq, retain_sq = sums.unbind()
    projected = (dot < 0) & (retain_sq > eps)
    coef = torch.where(projected, dot / retain_sq.clamp_min(eps), torch.zeros_like(dot))
    for g, r in zip(grads, retain):
        if g is not None and r is not None:
            g.addcmul_(r, coef.to(device=g.device, dtype=g.dtype), value=-1.0)
    return torch.stack([dot, forget_sq, retain_sq, projected.float()])


def rectified(grads: TensorList, retain: TensorList) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """Out-of-place [`rectify_`]: returns `(projected copy of grads, stats)`."""
    out = [g.clone() if g is not None else None for g in grads]
    return out, rectify_(out, retain)


def stats_to_logs(stats: Sequence[float]) -> dict[str, float]:
    """The per-step log entries of GRU from a stats tensor turned into floats (one sync for all)."""
    dot, objective_sq, retain_sq, projected = (float(v) for v in stats)
    objective_norm, retain_norm = max(objective_sq, 0.0) ** 0.5, max(retain_sq, 0.0) ** 0.5
    denom = objective_norm * retain_norm
    return {
        "gru/cosine": dot / denom if denom > 0 else 0.0,
        "gru/projected": projected,
        "gru/objective_grad_norm": objective_norm,
        "gru/retain_grad_norm": retain_norm,
    }


def all_reduce_mean_(tensors: Sequence[torch.Tensor], group: Any = None) -> None:
    """Average tensors in place over the ranks of a torch.distributed process group (one async op per tensor,
    no staging copies)."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    handles = [dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group, async_op=True) for t in tensors]
    for handle in handles:
        handle.wait()
    if world > 1 and tensors:
        torch._foreach_mul_(list(tensors), 1.0 / world)


def all_reduce_sum_(tensor: torch.Tensor, group: Any = None) -> None:
    """Sum a tensor in place over the ranks of a torch.distributed process group."""
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)


class GradientRectifier:
    """State and steps of GRU over a fixed list of trainable parameters.

    Use per micro-batch: backpropagate the objective normally (into `param.grad`), then the retain NLL inside
    `with rectifier.retain_gradients():`, which swaps each `param.grad` with this object's retain buffer (tensor
    swaps, no copies), so the two gradients are never mixed. At the optimizer step call [`rectify`]: it finishes the
    moving average, adds `objective_retain_weight * g_r` to `param.grad`, projects it and returns the statistics.

    Memory: the retain gradient accumulates directly into the moving-average buffer, which is pre-scaled by
    (1 - m) / m at the start of each optimizer step and multiplied by m at its end, so that the buffer ends as
    m * g_r + (1 - m) * gbar_r. To add alpha * g_r to the objective without a second buffer, `param.grad` is
    offset by -alpha times the pre-scaled buffer when the step begins; adding alpha times the buffer at the step
    cancels the offset and leaves alpha * g_r (a rounding of the order of 1e-7 of gbar_r in float32). GRU therefore
    costs ONE extra gradient-sized buffer (two with `retain_weight > 0`, which needs the raw g_r as well).

    Args:
        named_params: `(name, parameter)` of the trainable parameters (the names key the checkpoint).
        ema: m, the weight of the NEW retain gradient in the moving average, in (0, 1].
        retain_weight: lambda, the weight of the retain gradient added to the update after the projection (0 = pure
            projection; the reference's "+ce" variant).
        objective_retain_weight: alpha, the weight of the retain gradient in the projected objective, for when the
            objective's retain term is the retain NLL itself (its gradient is then not backpropagated twice); 0 when
            `param.grad` already holds the whole objective.
        all_reduce: averages a list of tensors in place over the data-parallel ranks (None on one process); called
            on both gradients at each optimizer step, so the projection uses the global gradients.
        reduce_sums: for sharded gradients (FSDP2, already averaged by its reduce-scatter): sums a tensor of partial
            sums in place over the ranks (see [`rectify_`]). The state is then saved and loaded as full tensors.
    """

    def __init__(
        self,
        named_params: Sequence[tuple[str, torch.nn.Parameter]],
        ema: float = 0.8,
        retain_weight: float = 0.0,
        all_reduce: Callable[[Sequence[torch.Tensor]], None] | None = None,
        reduce_sums: Callable[[torch.Tensor], None] | None = None,
        objective_retain_weight: float = 0.0,
    ):
        if not 0.0 < ema <= 1.0:
            raise ValueError(f"The GRU moving-average weight must be in (0, 1], got {ema}.")
        if retain_weight < 0 or objective_retain_weight < 0:
            raise ValueError(
                f"The GRU retain weights must be >= 0, got retain_weight={retain_weight}, "
                f"objective_retain_weight={objective_retain_weight}."
            )
        self.names = [name for name, _ in named_params]
        self.params = [param for _, param in named_params]
        if not self.params:
            raise ValueError("GRU found no trainable parameter (none has requires_grad=True).")
        self.ema = float(ema)
        self.retain_weight = float(retain_weight)
        self.objective_retain_weight = float(objective_retain_weight)
        if all_reduce is not None and reduce_sums is not None:
            raise ValueError("GRU takes either all_reduce (replicated gradients) or reduce_sums (sharded), not both.")
        self.all_reduce = all_reduce
        self.reduce_sums = reduce_sums
        self.step = 0
        #: gbar_r per parameter (None = zeros); during an accumulation it holds (1 - m) / m * gbar_r + sum g_r.
        self.retain_ema: list[torch.Tensor | None] = [None] * len(self.params)
        #: the raw retain gradient of the current step, only kept when retain_weight > 0.
        self._retain_acc: list[torch.Tensor | None] = [None] * len(self.params)
        self._in_step = False

    @property
    def _fused(self) -> bool:
        return self.retain_weight == 0.0

    def _begin_step(self) -> None:
        if self._fused:
            scale = (1.0 - self.ema) / self.ema
            buffers = [_local(b) for b in self.retain_ema if b is not None]
            if buffers:
                if scale == 0.0:
                    torch._foreach_zero_(buffers)
                else:
                    torch._foreach_mul_(buffers, scale)
            if self.objective_retain_weight and scale != 0.0:
                self._offset_objective(-self.objective_retain_weight)
        else:
            self._retain_acc = [None] * len(self.params)
        self._in_step = True

    @contextlib.contextmanager
    def retain_gradients(self) -> Iterator[None]:
        """Within this context, backward passes accumulate into the retain buffers instead of the gradients."""
        if not self._in_step:
            self._begin_step()
        target = self.retain_ema if self._fused else self._retain_acc
        self._swap(target)
        try:
            yield
        finally:
            self._swap(target)

    def _offset_objective(self, weight: float) -> None:
        """param.grad += weight * (pre-scaled moving-average buffer), creating gradients that do not exist yet."""
        for param, buffer in zip(self.params, self.retain_ema):
            if buffer is None:
                continue
            if param.grad is None:
                param.grad = buffer * weight
            else:
                _local(param.grad).add_(_local(buffer), alpha=weight)

    def _swap(self, target: list[torch.Tensor | None]) -> None:
        for i, param in enumerate(self.params):
            param.grad, target[i] = target[i], param.grad

    def _materialize(self, tensors: list[torch.Tensor | None]) -> None:
        for i, param in enumerate(self.params):
            if tensors[i] is None:
                tensors[i] = torch.zeros_like(param)

    @torch.no_grad()
    def rectify(self) -> torch.Tensor:
        """At the optimizer step: average over ranks, finish the moving average, project `param.grad` if it
        conflicts, add `retain_weight * g_r`. Returns the stats tensor of [`rectify_`] (on the device, not synced)."""
        if not self._in_step:  # no retain backward since the last step: g_r = 0
            self._begin_step()
        grads = [p.grad for p in self.params]
        retain = self.retain_ema if self._fused else self._retain_acc
        if self.all_reduce is not None:
            # Every rank must reduce the same tensors, whatever it did or did not backpropagate into.
            self._materialize(grads)
            for param, grad in zip(self.params, grads):
                param.grad = grad
            self._materialize(retain)
            self.all_reduce([*grads, *retain])
        if self.reduce_sums is not None:
            # Every rank must save and load the same buffers (gathering a sharded buffer is a collective).
            self._materialize(retain)
        if self._fused:
            if self.objective_retain_weight:
                # cancels the offset of _begin_step: param.grad += alpha * g_r
                self._offset_objective(self.objective_retain_weight)
            torch._foreach_mul_([_local(b) for b in self.retain_ema if b is not None], self.ema)
        else:
            if self.objective_retain_weight:
                for param, acc in zip(self.params, self._retain_acc):
                    if acc is None:
                        continue
                    if param.grad is None:
                        param.grad = acc * self.objective_retain_weight
                    else:
                        _local(param.grad).add_(_local(acc), alpha=self.objective_retain_weight)
            for i, acc in enumerate(self._retain_acc):
                if acc is None:
                    if self.retain_ema[i] is not None:
                        _local(self.retain_ema[i]).mul_(1.0 - self.ema)
                elif self.retain_ema[i] is None:
                    self.retain_ema[i] = acc * self.ema
                else:
                    _local(self.retain_ema[i]).mul_(1.0 - self.ema).add_(_local(acc), alpha=self.ema)
            if self.reduce_sums is not None:
                self._materialize(self.retain_ema)
        grads = [p.grad for p in self.params]  # the objective may have created gradients above
        stats = rectify_(grads, self.retain_ema, reduce_sums=self.reduce_sums)
        if not self._fused:
            for param, acc in zip(self.params, self._retain_acc):
                if acc is None:
                    continue
                if param.grad is None:
                    param.grad = acc.mul_(self.retain_weight)
                else:
                    _local(param.grad).add_(_local(acc), alpha=self.retain_weight)
            self._retain_acc = [None] * len(self.params)
        self.step += 1
        self._in_step = False
        return stats

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """`{"step", "ema", "retain_weight", "retain_ema": {name: tensor}}` (zero buffers are omitted). Sharded
        buffers are gathered into full tensors: with sharded gradients, every rank must call this."""
        if self._in_step:
            raise RuntimeError("The GRU state can only be saved between optimizer steps.")
        return {
            "step": self.step,
            "ema": self.ema,
            "retain_weight": self.retain_weight,
            "retain_ema": {
                n: b.full_tensor() if hasattr(b, "full_tensor") else b
                for n, b in zip(self.names, self.retain_ema)
                if b is not None
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        buffers = state["retain_ema"]
        unknown = sorted(set(buffers) - set(self.names))
        if unknown:
            raise ValueError(
                f"The GRU state holds gradients of parameters this model does not train: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}. Resume with the same model and peft configuration."
            )
        loaded: list[torch.Tensor | None] = []
        for name, param in zip(self.names, self.params):
            buffer = buffers.get(name)
            if buffer is not None and buffer.shape != param.shape:
                raise ValueError(
                    f"The GRU state of {name} has shape {tuple(buffer.shape)}, the parameter {tuple(param.shape)}."
                )
            if buffer is None:
                loaded.append(None)
                continue
            buffer = buffer.to(device=_local(param).device, dtype=param.dtype).clone()
            if hasattr(param, "device_mesh"):  # sharded like its parameter; every rank holds the full tensor
                from torch.distributed.tensor import distribute_tensor

                buffer = distribute_tensor(buffer, param.device_mesh, param.placements, src_data_rank=None)
            loaded.append(buffer)
        self.retain_ema = loaded
        self.step = int(state["step"])
        self._retain_acc = [None] * len(self.params)
        self._in_step = False

    def save(self, directory: str | os.PathLike, write: bool = True) -> None:
        """Write the state as `gru_state.safetensors` (the moving average) and `gru_state.json` into `directory`.
        With sharded gradients every rank calls this (to gather the buffers) and only those with `write` write."""
        from safetensors.torch import save_file

        state = self.state_dict()
        if not write:
            return
        tensors = {name: t.detach().contiguous() for name, t in state.pop("retain_ema").items()}
        save_file(tensors, os.path.join(directory, GRU_WEIGHTS_FILE))
        write_json_atomic(os.path.join(directory, GRU_STATE_FILE), state)

    def load(self, directory: str | os.PathLike) -> bool:
        """Restore what [`save`] wrote; returns False (and changes nothing) when `directory` has no GRU state."""
        from safetensors.torch import load_file

        weights, meta = os.path.join(directory, GRU_WEIGHTS_FILE), os.path.join(directory, GRU_STATE_FILE)
        if not (os.path.isfile(weights) and os.path.isfile(meta)):
            return False
        with open(meta, encoding="utf-8") as f:
            state = json.load(f)
        state["retain_ema"] = load_file(weights)
        self.load_state_dict(state)
        return True
