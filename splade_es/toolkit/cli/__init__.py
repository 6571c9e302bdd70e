"""The ``splade-es`` command line.

Each command lives in its own module; this one only assembles the group.
"""

from __future__ import annotations

import click

from splade_es import __version__
from splade_es.toolkit.cli.benchmark import benchmark
from splade_es.toolkit.cli.compare import compare
from splade_es.toolkit.cli.encode import encode
from splade_es.toolkit.cli.engine import engine
from splade_es.toolkit.cli.evaluate import evaluate
from splade_es.toolkit.cli.explain import explain
from splade_es.toolkit.cli.idf import idf
from splade_es.toolkit.cli.ingest import ingest
from splade_es.toolkit.cli.init_model import init_model
from splade_es.toolkit.cli.kibana import kibana
from splade_es.toolkit.cli.pairs import pairs
from splade_es.toolkit.cli.search import search
from splade_es.toolkit.cli.serve import serve
from splade_es.toolkit.cli.train import train
from splade_es.toolkit.cli.tune import tune_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="splade-es")
def main() -> None:
    """Learned sparse retrieval (Echo-Mistral-SPLADE, CSPLADE, SPLADE) for Elasticsearch and OpenSearch.

    Text becomes a sparse vector over the model's vocabulary: every dimension is a
    readable token, and an ordinary inverted index scores it.

    \b
    Examples:
      splade-es init-model --base minilm --output models/start
      splade-es pairs --corpus data/cranfield --output pairs.jsonl
      splade-es encode --model ./bundle "boundary layer transition"
      splade-es encode --model ./bundle --query --json "lift of a delta wing"
      splade-es encode --model ./bundle --input docs.jsonl --output vectors.jsonl
      splade-es ingest --index cran --corpus data/cranfield --model ./bundle
      splade-es search --index cran --explain "boundary layer transition"
      splade-es serve --index cran --port 8000       # HTTP API + inspection page
      splade-es idf --model ./bundle --corpus data/cranfield      # inference-free queries
      splade-es explain --model ./bundle "lift of a delta wing"
      splade-es eval --dataset data/cranfield --index cran --method bm25
      splade-es tune --dataset data/cranfield --index cran     # pruning vs latency frontier

    Run 'splade-es COMMAND --help' for a command's options.
    """


main.add_command(encode)
main.add_command(engine)
main.add_command(ingest)
main.add_command(search)
main.add_command(tune_command, "tune")
main.add_command(serve)
main.add_command(explain)
main.add_command(kibana)
main.add_command(init_model)
main.add_command(pairs)
main.add_command(idf)
main.add_command(train)
main.add_command(evaluate)
main.add_command(benchmark)
main.add_command(compare)

