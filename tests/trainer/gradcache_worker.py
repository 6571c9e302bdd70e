"""One rank of the 2-process gradient check (run by torchrun from test_gradcache.py)."""

from __future__ import annotations

import json
import sys
from functools import partial

import torch
import torch.distributed as dist

from splade_es.trainer.config import TrainConfig
from splade_es.trainer.gradcache import all_reduce_gradients, cached_step
from splade_es.trainer.loop import encode_chunk
from splade_es.trainer.losses import flops, info_nce
from splade_es.trainer.trainable import build_encoder, trainable_parameters


def encode_fn(encoder):
    return partial(encode_chunk, encoder)


def loss_fn(full):
    q, d = full
    return info_nce(q, d) + 0.01 * flops(q) + 0.02 * flops(d), {}


def prepared(config_path: str):
    config = TrainConfig.from_dict(json.loads(open(config_path).read()))
    torch.manual_seed(0)
    encoder = build_encoder(config, torch.device("cpu"))
    with torch.no_grad():
        for name, parameter in encoder.backbone.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return encoder


def main() -> None:
    config_path, pairs_path, out, chunk = sys.argv[1:5]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    pairs = json.loads(open(pairs_path).read())
    share = len(pairs) // world
    mine = pairs[rank * share:(rank + 1) * share]
    encoder = prepared(config_path)
    groups = [[(True, q) for q, _ in mine], [(False, d) for _, d in mine]]
    loss, _ = cached_step(encode_fn(encoder), groups, int(chunk), loss_fn)
    parameters = trainable_parameters(encoder)
    all_reduce_gradients(parameters)
    if rank == 0:
        torch.save({"loss": loss, "grads": [p.grad.clone() for p in parameters]}, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
