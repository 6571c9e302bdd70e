"""``splade-es train``: the Echo-Mistral-SPLADE / CSPLADE recipe from a TOML config."""

from __future__ import annotations

import json

import click

from splade_es.toolkit.cli.common import friendly_errors, quiet_libraries


@click.command(short_help="Train a sparse encoder adapter (contrastive, or the CSPLADE adaptation stage).")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="TOML config (configs/echo-mistral-7b.toml holds the paper's recipe).")
@click.option("--override", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change one config value (TOML syntax: 1e-5, true, \"text\", [1, 2]); repeatable.")
@click.option("--stage", type=click.Choice(["contrastive", "adapt"]), default="contrastive", show_default=True,
              help="adapt: CSPLADE's L_CLM + L_ReLU on unlabelled text, before contrastive training.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in run.output_dir.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def train(config_path: str, overrides: tuple[str, ...], stage: str, resume: bool, as_json: bool,
          no_progress: bool) -> None:
    """Train on a mixture of datasets with InfoNCE (in-batch negatives, gathered over ranks)
    plus FLOPS regularisation, and write a model bundle that every other command loads.

    Gradient caching keeps memory flat for any effective batch size. Checkpoints land in
    run.output_dir/checkpoints every run.save_every steps; --resume continues exactly (same
    data order, optimizer, scheduler, lambda and RNG). Logs: run.output_dir/<stage>-log.csv and
    TensorBoard.

    \b
    Examples:
      splade-es train --config configs/echo-mistral-7b.toml
      splade-es train --config configs/echo-mistral-7b.toml --stage adapt --override data.adapt_text='["wiki.txt"]'
      splade-es train --config my.toml --override optim.max_steps=2000 --override batch.size=64 --resume
      torchrun --nproc-per-node 8 -m splade_es.toolkit.cli train --config configs/echo-mistral-7b.toml
    """
    quiet_libraries()
    from splade_es.trainer.config import TrainConfig
    from splade_es.trainer.loop import Trainer

    config = TrainConfig.load(config_path, list(overrides))
    trainer = Trainer(config, stage, resume=resume, show_progress=not no_progress)
    result = trainer.train()
    if not trainer.ranks.is_main:
        return
    summary = {"stage": stage, "steps": result.steps, "final_loss": result.final_loss, "bundle": str(result.bundle),
               "log": str(result.log), "bad_lines": trainer.bad_lines}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"trained {result.steps} steps ({stage}); final loss {result.final_loss:.4f}\n"
                   f"  bundle: {result.bundle}\n  log: {result.log}")
        bad = {name: n for name, n in trainer.bad_lines.items() if n}
        if bad:
            click.echo("  malformed lines skipped: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
