"""``splade-es engine``: a real local OpenSearch / Elasticsearch node for trying things and for CI."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from splade_es.toolkit.cli.common import friendly_errors
from splade_es.toolkit.engines.node import DEFAULT_HEAP, DEFAULT_VERSIONS, KINDS, LocalNode

_kind = click.option("--kind", type=click.Choice(KINDS), default="opensearch", show_default=True,
                     help="Which engine.")
_version = click.option("--version", "version",
                        help=f"Engine version (default: opensearch {DEFAULT_VERSIONS['opensearch']}, "
                             f"elasticsearch {DEFAULT_VERSIONS['elasticsearch']}).")


def _progress(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def engine() -> None:
    """Run a single-node engine on 127.0.0.1, assembled from Maven Central artifacts.

    The distribution is fetched once with Maven and cached (SPLADE_ES_ENGINE_DIR, default:
    the user cache directory); the node keeps its data and logs next to it. Progress and
    Maven output go to standard error and the build log; the node's URL is the last line
    of standard output, so scripts can capture it.

    \b
    Examples:
      URL=$(splade-es engine start --kind opensearch --port 0 | tail -n 1)
      splade-es engine status --kind opensearch
      splade-es engine stop --kind opensearch
    """


@engine.command()
@_kind
@_version
@click.option("--port", type=click.IntRange(0, 65535),
              help="HTTP port on 127.0.0.1 (default 9200 for opensearch, 9201 for elasticsearch; 0 = any free port).")
@click.option("--heap", default=DEFAULT_HEAP, show_default=True, help="JVM heap (-Xms/-Xmx).")
@click.option("--fresh", is_flag=True, help="Delete the node's data (of this version) before starting.")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds to wait for a healthy cluster.")
@friendly_errors
def start(kind: str, version: str | None, port: int | None, heap: str, fresh: bool, timeout: float) -> None:
    """Start the node (or find it running) and print its URL as the last line of output.

    \b
    Examples:
      URL=$(splade-es engine start --kind opensearch | tail -n 1)
      splade-es engine start --kind elasticsearch --port 0 --heap 1g --fresh
    """
    state = LocalNode(kind, version, log=_progress).start(port=port, heap=heap, fresh=fresh, timeout=timeout)
    _progress(f"{kind} {state.version} is up (pid {state.pid}, logs {state.logs})")
    click.echo(state.url)


@engine.command()
@_kind
@friendly_errors
def stop(kind: str) -> None:
    """Stop the node cleanly; its logs are kept.

    \b
    Example:
      splade-es engine stop --kind opensearch
    """
    state = LocalNode(kind).stop()
    click.echo(f"{kind}: stopped (logs kept in {state.logs})" if state else f"{kind}: not running")


@engine.command()
@_kind
@click.option("--json", "as_json", is_flag=True, help="Print the node's state as JSON.")
@friendly_errors
def status(kind: str, as_json: bool) -> None:
    """Say whether the node runs; exit status 3 when it does not.

    \b
    Example:
      splade-es engine status --kind elasticsearch || splade-es engine start --kind elasticsearch
    """
    state = LocalNode(kind).status()
    if as_json:
        click.echo(json.dumps({"running": state is not None, **(asdict(state) if state else {"kind": kind})}))
    elif state:
        click.echo(f"{kind} {state.version}: running, pid {state.pid}, logs {state.logs}")
        click.echo(state.url)
    else:
        click.echo(f"{kind}: not running")
    if state is None:
        raise SystemExit(3)
