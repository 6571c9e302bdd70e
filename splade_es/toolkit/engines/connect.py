"""Pick and open an engine: a URL means a server (kind read from the server), none means local."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import urllib3

from splade_es.toolkit.engines.base import PROBE_PATTERN, Engine, EngineError, EngineUnavailable
from splade_es.toolkit.engines.credentials import Credentials, split_credentials

ENGINE_KINDS = ("opensearch", "elasticsearch", "local")
_log = logging.getLogger(__name__)


def resolve_urls(url: str | Sequence[str] | None) -> list[str]:
    """Every node's URL: ``--url`` values (repeatable, each may be a comma-separated list) or
    SPLADE_ES_URL (comma-separated); empty entries are dropped, so an empty value counts as unset."""
    values = ([url] if isinstance(url, str) else list(url)) if url else [os.environ.get("SPLADE_ES_URL", "")]
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def connect(url: str | Sequence[str] | None = None, engine: str | None = None, data_dir: str | Path | None = None,
            credentials: Credentials | None = None, timeout: float = 30.0, sniff: bool = False) -> Engine:
    """Open the engine at ``url`` (kind detected unless ``engine`` says), or the local one.

    Several URLs (a list, or comma-separated) are nodes of one cluster: each is probed, those that
    do not answer are reported and kept (requests fail over to the others), nodes of another
    cluster are refused. ``sniff`` adds the nodes the cluster lists.
    """
    if engine is not None and engine not in ENGINE_KINDS:
        raise EngineError(f"unknown engine {engine!r}: choose {', '.join(ENGINE_KINDS)}")
    urls = resolve_urls(url)
    if engine == "local" or (not urls and engine is None):
        from splade_es.toolkit.engines.local import LocalEngine

        return LocalEngine(data_dir)
    if not urls:
        raise EngineError(f"--engine {engine} needs --url (or SPLADE_ES_URL)")
    urls, credentials = split_all_credentials(urls, credentials or Credentials.from_env())
    for each in urls:
        check_url(each)
    if len({each.split("://")[0] for each in urls}) > 1:
        raise EngineError(f"--url {', '.join(urls)}: mix http:// and https://; one cluster speaks one of them")
    kind, version, modules = probe_cluster(urls, credentials, timeout)
    if engine is not None and engine != kind:
        raise EngineError(f"{', '.join(urls)} is {kind} {version}, not {engine}")
    if kind == "opensearch":
        from splade_es.toolkit.engines.opensearch import OpenSearchEngine

        return OpenSearchEngine(urls, credentials, version, modules, timeout, sniff)
    from splade_es.toolkit.engines.elastic import ElasticsearchEngine

    return ElasticsearchEngine(urls, credentials, version, modules, timeout, sniff)


def split_all_credentials(urls: list[str], credentials: Credentials) -> tuple[list[str], Credentials]:
    """Every URL without ``user:password@``, and the credentials for all nodes; URLs that carry
    different ones are refused (one cluster, one user)."""
    bare, found = [], {}
    for each in urls:
        plain, given = split_credentials(each, credentials)
        bare.append(plain)
        if given != credentials:
            found[(given.username, given.password)] = given
    if len(found) > 1:
        raise EngineError("the URLs carry different user:password@ credentials: give one user for every node "
                          "(--username/--password)")
    return bare, next(iter(found.values()), credentials)


def probe_cluster(urls: list[str], credentials: Credentials, timeout: float) -> tuple[str, str, set[str]]:
    """:func:`probe` the first node that answers; with several URLs, check that every node that
    answers belongs to the same cluster, and warn about those that do not answer."""
    if len(urls) == 1:
        return probe(urls[0], credentials, timeout)
    found, down, clusters = None, [], {}
    for each in urls:
        try:
            result = probe(each, credentials, timeout)
            clusters[each] = cluster_identity(each, credentials, timeout)
        except EngineUnavailable as exc:
            down.append(str(exc))
            continue
        found = found or result
    if found is None:
        raise EngineUnavailable(f"no node answers: {'; '.join(down)}")
    for message in down:
        _log.warning("%s; requests go to the other nodes", message)
    known = {each: identity for each, identity in clusters.items() if identity is not None}
    if len(set(known.values())) > 1:
        first, *_ = known
        other = next(each for each in known if known[each] != known[first])
        raise EngineError(f"--url {first} and {other} are nodes of different clusters "
                          f"({_describe(known[first])} vs {_describe(known[other])})")
    return found


def cluster_identity(url: str, credentials: Credentials, timeout: float) -> tuple[str, str] | None:
    """``(cluster name, cluster uuid)`` from the root endpoint, or from the cluster state where the
    root is refused (a distribution without the root handler answers 405), or None where the
    credentials may read neither (the nodes are then taken on trust)."""
    pool = _pool(url, credentials, timeout)
    reply = _request(pool, "GET", url, "/", credentials)
    if reply.status >= 300:
        reply = _request(pool, "GET", url, "/_cluster/state/metadata?filter_path=cluster_name,metadata.cluster_uuid",
                         credentials)
    try:
        body = json.loads(reply.data) if reply.status < 300 else {}
        uuid = body["cluster_uuid"] if "cluster_uuid" in body else body["metadata"]["cluster_uuid"]
        name, uuid = str(body["cluster_name"]), str(uuid)
    except (ValueError, KeyError, TypeError):
        return None
    return None if uuid == "_na_" else (name, uuid)  # "_na_": the node has not joined a cluster yet


def _describe(identity: tuple[str, str]) -> str:
    return f"cluster {identity[0]!r}, uuid {identity[1]}"


def check_url(url: str) -> None:
    """A URL the clients can use, or one line saying what is wrong (credentials already removed)."""
    from urllib.parse import urlsplit

    if not url.startswith(("http://", "https://")):
        raise EngineError(f"--url {url!r} must start with http:// or https://")
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError as exc:
        raise EngineError(f"--url {url!r} is not a valid URL ({exc})") from None
    if not parts.hostname:
        raise EngineError(f"--url {url!r} names no host")


def probe(url: str, credentials: Credentials, timeout: float) -> tuple[str, str, set[str]]:
    """Ask the server what it is: kind, version and installed modules/plugins.

    Elasticsearch marks every answer with ``X-Elastic-Product``; the node info lists
    version, modules and plugins on both engines (the root endpoint may be absent).
    Credentials without the ``monitor`` privilege cannot read it: see :func:`_probe_restricted`.
    """
    pool = _pool(url, credentials, timeout)
    path = "/_nodes/_local/plugins?filter_path=nodes.*.version,nodes.*.modules.name,nodes.*.plugins.name"
    reply = _request(pool, "GET", url, path, credentials)
    if reply.status == 403:
        return _probe_restricted(pool, url, credentials)
    if reply.status == 401:
        raise EngineError(f"{url} refused the credentials (HTTP 401): check the API key or user", 401)
    if reply.status >= 400:
        raise EngineError(f"{url} answered HTTP {reply.status} to a node-info request", reply.status)
    try:
        nodes = json.loads(reply.data)["nodes"]
        node = next(iter(nodes.values()))
    except (ValueError, KeyError, StopIteration):
        raise EngineError(f"{url} does not look like Elasticsearch or OpenSearch") from None
    modules = {m["name"] for m in node.get("modules", [])} | {p["name"] for p in node.get("plugins", [])}
    return _kind(reply), str(node.get("version", "0")), modules


def _probe_restricted(pool: urllib3.PoolManager, url: str, credentials: Credentials) -> tuple[str, str, set[str]]:
    """Kind and version from the root endpoint, or when that is refused too, the kind from the
    product header of an empty search and the version as ``unknown``. Modules stay unknown, so
    the engine falls back on the query types the server parses."""
    _log.warning("%s: these credentials may not read node info (HTTP 403, no 'monitor' privilege); "
                 "detecting capabilities from the query types the server accepts", url)
    reply = _request(pool, "GET", url, "/", credentials)
    if reply.status < 300:
        try:
            version = json.loads(reply.data)["version"]
            kind = "opensearch" if version.get("distribution") == "opensearch" else _kind(reply)
            return kind, str(version["number"]), set()
        except (ValueError, KeyError, TypeError):
            raise EngineError(f"{url} does not look like Elasticsearch or OpenSearch") from None
    reply = _request(pool, "POST", url, f"/{PROBE_PATTERN}/_search?allow_no_indices=true", credentials,
                     body=b'{"size":0}')
    if reply.status >= 400 and not reply.headers.get("X-Elastic-Product"):
        raise EngineError(f"{url} refused every request (HTTP {reply.status}): check the API key or user",
                          reply.status)
    return _kind(reply), "unknown", set()


def _kind(reply: urllib3.BaseHTTPResponse) -> str:
    return "elasticsearch" if reply.headers.get("X-Elastic-Product") == "Elasticsearch" else "opensearch"


def _request(pool: urllib3.PoolManager, method: str, url: str, path: str, credentials: Credentials,
             body: bytes | None = None) -> urllib3.BaseHTTPResponse:
    headers = credentials.headers()
    if body is not None:
        headers["content-type"] = "application/json"
    try:
        return pool.request(method, url.rstrip("/") + path, headers=headers, body=body, retries=False)
    except urllib3.exceptions.SSLError as exc:
        raise EngineUnavailable(f"TLS verification failed for {url}: {_first_line(exc)} "
                                "(pass --ca-certs, or --insecure to skip verification)") from None
    except urllib3.exceptions.HTTPError as exc:
        raise EngineUnavailable(f"cannot reach the engine at {url}: {_first_line(exc)}") from None


def _pool(url: str, credentials: Credentials, timeout: float) -> urllib3.PoolManager:
    if not url.startswith("https"):
        return urllib3.PoolManager(timeout=timeout)
    if not credentials.verify_certs:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return urllib3.PoolManager(timeout=timeout, cert_reqs="CERT_NONE")
    return urllib3.PoolManager(timeout=timeout, cert_reqs="CERT_REQUIRED", ca_certs=credentials.ca_certs)


def _first_line(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).splitlines()[0][:300]
