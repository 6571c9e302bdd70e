"""``python -m splade_es.toolkit.cli`` (what torchrun runs)."""

from splade_es.toolkit.cli import main

main(prog_name="splade-es")
