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
    """Run a node or an N-node cluster on 127.0.0.1, assembled from Maven Central artifacts.

    The distribution is fetched once with Maven and cached (SPLADE_ES_ENGINE_DIR, default:
    the user cache directory); each node keeps its data and logs next to it. Progress and
    Maven output go to standard error and the build log; a node's URL is the last line
    of standard output, so scripts can capture it.

    \b
    Examples:
      URL=$(splade-es engine start --kind opensearch --port 0 | tail -n 1)
      splade-es engine start --kind opensearch --nodes 3 --heap 384m --port 0
      splade-es engine status --kind opensearch --json
      splade-es engine stop --kind opensearch
    """


@engine.command()
@_kind
@_version
@click.option("--port", type=click.IntRange(0, 65535),
              help="HTTP port on 127.0.0.1 (default 9200 for opensearch, 9201 for elasticsearch; 0 = any free port). "
                   "A cluster takes this port and the next ones (default: any free ports).")
@click.option("--nodes", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Nodes in the cluster, each with its own data, logs and ports.")
@click.option("--heap", default=DEFAULT_HEAP, show_default=True, help="JVM heap of each node (-Xms/-Xmx).")
@click.option("--fresh", is_flag=True, help="Delete the nodes' data (of this version) before starting.")
@click.option("--timeout", type=float, default=180.0, show_default=True,
              help="Seconds to wait for a healthy cluster with every node in it.")
@friendly_errors
def start(kind: str, version: str | None, port: int | None, nodes: int, heap: str, fresh: bool,
          timeout: float) -> None:
    """Start the node(s) (or find them running) and print the first node's URL as the last line of output.

    \b
    Examples:
      URL=$(splade-es engine start --kind opensearch | tail -n 1)
      splade-es engine start --kind elasticsearch --port 0 --heap 1g --fresh
      splade-es engine start --kind opensearch --nodes 3 --heap 384m --fresh
    """
    state = LocalNode(kind, version, log=_progress).start(port=port, heap=heap, fresh=fresh, timeout=timeout,
                                                          nodes=nodes)
    members = state.members()
    if len(members) > 1:
        _progress(f"{kind} {state.version}: {len(members)} nodes up; every node's URL: "
                  + ",".join(member.url for member in members))
    else:
        _progress(f"{kind} {state.version} is up (pid {state.pid}, logs {state.logs})")
    click.echo(state.url)


@engine.command()
@_kind
@friendly_errors
def stop(kind: str) -> None:
    """Stop every node cleanly; their logs are kept.

    \b
    Example:
      splade-es engine stop --kind opensearch
    """
    state = LocalNode(kind).stop()
    click.echo(f"{kind}: stopped (logs kept in {state.logs})" if state else f"{kind}: not running")


@engine.command()
@_kind
@click.option("--json", "as_json", is_flag=True,
              help="Print the state as JSON: running, kind, version, url, and nodes (name, pid, http_port, "
                   "transport_port, alive, logs).")
@friendly_errors
def status(kind: str, as_json: bool) -> None:
    """Say whether the node(s) run (some node alive); exit status 3 when none does.

    \b
    Examples:
      splade-es engine status --kind elasticsearch || splade-es engine start --kind elasticsearch
      splade-es engine status --kind opensearch --json | jq -r '.nodes[] | select(.alive) | .http_port'
    """
    state = LocalNode(kind).status()
    if as_json:
        click.echo(json.dumps({"running": True, **asdict(state),
                               "nodes": [{**asdict(m), "alive": m.alive} for m in state.members()]}
                              if state else {"running": False, "kind": kind, "nodes": []}))
    elif state:
        click.echo(f"{kind} {state.version}: running, pid {state.pid}, logs {state.logs}")
        for member in state.members() if len(state.members()) > 1 else []:
            click.echo(f"  {member.name}: {'alive' if member.alive else 'down'}, pid {member.pid}, {member.url}, "
                       f"transport port {member.transport_port}, logs {member.logs}")
        click.echo(state.url)
    else:
        click.echo(f"{kind}: not running")
    if state is None:
        raise SystemExit(3)
