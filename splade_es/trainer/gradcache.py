"""Gradient caching: an effective batch of any size on fixed memory, exactly.

1. Encode every chunk without a graph, remembering each chunk's RNG state (the last group,
   when it fits in one chunk, keeps its graph instead and skips step 3: at most one graph
   is alive at any time, so activation memory is one chunk's whatever the number of groups).
2. Gather all ranks' representations, compute the loss on the whole batch (InfoNCE and
   FLOPS both need it), and take its gradient with respect to the representations only.
3. Re-encode chunk by chunk with a graph, replaying each chunk's RNG state so dropout masks
   match step 1, and back-propagate the cached representation gradients.

Parameter gradients then equal those of one pass over the whole batch (up to float
summation order), on one process or summed over ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

Encode = Callable[[Sequence[Any]], torch.Tensor]  # inputs of one chunk -> [chunk, dim] representations


@dataclass
class _RngState:
    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> _RngState:
        return cls(torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def gather(local: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, in rank order (no graph: gradients are routed back by slicing)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


def cached_step(encode: Encode, groups: Sequence[Sequence[Any]], chunk_size: int,
                loss_fn: Callable[[list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]],
                autocast: Any = None) -> tuple[float, dict[str, float]]:
    """One gradient computation over ``groups`` (e.g. queries and documents, this rank's share).

    ``loss_fn`` receives each group gathered over all ranks and returns the loss and its logged
    parts. Parameter ``.grad`` are accumulated (call ``zero_grad`` before, all-reduce after).
    """
    autocast = autocast or nullcontext
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    cached: list[list[tuple[Sequence[Any], _RngState]] | None] = []
    local_reps: list[torch.Tensor] = []
    for index, group in enumerate(groups):
        chunks = _chunks(group, chunk_size)
        # The last group, if it fits in one chunk, keeps its graph: nothing to replay for it, and
        # its graph is the only one alive until it is back-propagated first, below.
        keep_graph = len(chunks) == 1 and index == len(groups) - 1
        pieces, reps = [], []
        for chunk in chunks:
            state = _RngState.capture()
            with torch.set_grad_enabled(keep_graph), autocast():
                reps.append(encode(chunk).float())
            pieces.append((chunk, state))
        cached.append(None if keep_graph else pieces)
        local_reps.append(torch.cat(reps))
    full = [gather(reps.detach()).requires_grad_(True) for reps in local_reps]
    loss, parts = loss_fn(full)
    loss.backward()
    after = _RngState.capture()
    grads = [reps.grad[rank * local.shape[0]:(rank + 1) * local.shape[0]] for reps, local in zip(full, local_reps)]
    del full
    if cached[-1] is None:
        local_reps[-1].backward(grads[-1])
    del local_reps
    for grad, pieces in zip(grads, cached):
        if pieces is None:
            continue
        offset = 0
        for chunk, state in pieces:
            state.restore()
            with autocast():
                out = encode(chunk).float()
            out.backward(grad[offset:offset + out.shape[0]])
            offset += out.shape[0]
    after.restore()  # the RNG continues as if each chunk had run once
    return float(loss.detach()), parts


def all_reduce_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Sum gradients over ranks: each rank holds d(global loss)/d(params) through its own rows.
    A parameter this rank did not reach gets a zero gradient, so every rank joins every all-reduce."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
