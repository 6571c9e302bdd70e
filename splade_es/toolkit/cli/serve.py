"""``splade-es serve``: one index's search service over HTTP, the query encoder loaded once."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import click

from splade_es.toolkit.cli.common import (engine_options, friendly_errors, open_engine_with_secrets, query_options,
                                          quiet_libraries)

if TYPE_CHECKING:
    from splade_es.toolkit.query.forms import TokenPruning


@click.command(short_help="Serve an index over HTTP (search, encode, an inspection page).")
@click.option("--index", required=True, help="Index or alias written by 'splade-es ingest'.")
@query_options
@engine_options
@click.option("--host", envvar="SPLADE_ES_SERVE_HOST", default="127.0.0.1", show_default=True,
              help="Address to listen on (env SPLADE_ES_SERVE_HOST). The service has no authentication: "
                   "keep it on loopback or behind a proxy that has.")
@click.option("--port", envvar="SPLADE_ES_SERVE_PORT", type=click.IntRange(0, 65535), default=8000,
              show_default=True, help="Port (env SPLADE_ES_SERVE_PORT; 0: any free port, printed at start).")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most texts encoded in one model call; 1 turns batching off.")
@click.option("--batch-window-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long a query waits for others to share its model call (the most a lone query is delayed).")
@click.option("--max-k", type=click.IntRange(min=1, max=10_000), default=100, show_default=True,
              help="Largest k a request may ask for.")
@click.option("--max-texts", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most texts in one /encode request.")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              help="Largest request body; a longer one is refused with 413.")
@friendly_errors
def serve(index: str, model_path: str | None, adapter: str | None, query_top_k: int | None,
          query_min_weight: float | None, query_form: str | None, max_clauses: int, two_phase: int | None,
          two_phase_window: int | None, token_pruning: TokenPruning | None, no_tuned: bool,
          device: str | None,
          url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure,
          host: str, port: int, max_batch: int, batch_window_ms: float, max_k: int, max_texts: int,
          max_body_bytes: int) -> None:
    """Load the query encoder once and answer searches over HTTP until stopped (Ctrl-C).

    Every search goes the way 'splade-es search' goes (same vector, same exact query, same
    hits); queries that arrive together are encoded in one model call. Open the URL it prints
    in a browser for the inspection page: a search box, each hit's matched terms with weight
    bars, the query's own terms and the model's expansions told apart, BM25 beside it.

    \b
    API (JSON in and out; errors are {"error": "one line"} with a 4xx or 5xx status):
      POST /search  {"query": "...", "k": 10, "explain": true, "hybrid": "rrf", "filter": {"lang": "en"}}
      POST /encode  {"texts": ["...", "..."], "query": true}
      GET  /health  model, index, engine, version
      GET  /metrics Prometheus text format: requests, latency, encoder batches

    \b
    Examples:
      splade-es serve --index cran                       # http://127.0.0.1:8000, model from the index
      splade-es serve --index cran --url http://localhost:9200 --port 0
      splade-es serve --index docs --model ./bundle --max-batch 32 --batch-window-ms 10
      curl -s localhost:8000/search -d '{"query": "shock wave", "k": 3, "explain": true}' | jq '.hits[].id'
    """
    from splade_es.toolkit.query.pipeline import QueryPipeline
    from splade_es.toolkit.query.searcher import Searcher
    from splade_es.toolkit.serve import SearchService, Server, ServiceSettings, create_app

    engine, secrets = open_engine_with_secrets(url, engine_kind, data_dir, api_key, username, password, ca_certs,
                                               insecure)
    try:
        searcher = Searcher(engine, index, query_form, max_clauses, two_phase, two_phase_window,
                            use_tuned=not no_tuned, token_pruning=token_pruning)
        quiet_libraries()
        pipeline = QueryPipeline.open(searcher, model_path, adapter, device, query_top_k, query_min_weight)
        settings = ServiceSettings(max_k, max_texts, max_body_bytes, max_batch, batch_window_ms)
        try:
            server = Server(create_app(SearchService(pipeline, settings), secrets), host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        if not _loopback(host):
            logging.getLogger("splade_es").warning(
                "listening on %s: the service has no authentication, anyone who can reach it can search %s",
                host, index)
        info = engine.info
        click.echo(f"serving {index} ({info.kind} {info.version}, model {pipeline.model}) at {server.url}", err=True)
        click.echo(server.url)
        server.run()
    finally:
        engine.close()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
