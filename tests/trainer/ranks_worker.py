"""Both stages on torchrun ranks (run from test_train.py): the adaptation stage's first-step
gradients, then a contrastive run and an adaptation run to the end."""

from __future__ import annotations

import json
import sys

import torch

from splade_es.trainer.config import TrainConfig
from splade_es.trainer.gradcache import all_reduce_gradients
from splade_es.trainer.loop import Trainer


def adapt_gradients(config: TrainConfig) -> dict:
    """Loss and summed gradients of the first adaptation step (what the optimizer would see)."""
    trainer = Trainer(config, stage="adapt", show_progress=False)
    trainer.optimizer.zero_grad(set_to_none=True)
    row = trainer._adapt_step()
    all_reduce_gradients(trainer.parameters)
    return {"row": row, "grads": [p.grad.clone() for p in trainer.parameters]}


def main() -> None:
    contrastive_path, adapt_path, out = sys.argv[1:4]
    adapt = TrainConfig.from_dict(json.loads(open(adapt_path).read()))
    result = adapt_gradients(adapt)
    Trainer(TrainConfig.from_dict(json.loads(open(contrastive_path).read())), show_progress=False).train()
    finished = Trainer(adapt.with_overrides([f"run.output_dir={json.dumps(adapt.run.output_dir + '-full')}"]),
                       stage="adapt", show_progress=False).train()
    if torch.distributed.get_rank() == 0:
        torch.save({**result, "adapt_steps": finished.steps}, out)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
