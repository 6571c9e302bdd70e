"""``splade-es serve`` end to end: ``/search`` against the CLI, and throughput with and without batching.

Model: the MiniLM start bundle (``splade-es init-model``, built in ``--work`` if missing). Index:
Cranfield, ingested once into the engine at ``--url`` and reused by name. Then, on loopback and
with bounded request counts:

- the CLI, model loaded per call: ``splade-es search --json`` as a fresh process for each of
  ``--cli-queries`` queries (wall time from start to exit);
- ``/search`` with the model already loaded: one client, ``--queries`` requests in turn (wall
  time per request, as the client sees it);
- throughput: two ``splade-es serve`` processes side by side, one batching (``--max-batch 16``,
  5 ms window) and one not (``--max-batch 1``); at 1, 4 and 16 concurrent clients (threads, one
  keep-alive connection each, ``--requests`` queries in all) each server in turn, so both meet
  the same background load: queries/s, per-request p50/p99, the server's own encode time (queue
  wait included) and the mean texts per encoder call (from its ``/metrics``).

Each server answers 3 warm-up queries first. Results go to ``--out`` (JSON); the table is printed.
``--screenshot PATH`` also saves the inspection page (headless Chromium) for one query.

    python benchmarks/serve_latency.py --url "$SPLADE_ES_TEST_OPENSEARCH_URL" --out benchmarks/results/serve_minilm_os219.json \\
        --screenshot docs/serve-page.png
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from urllib.parse import quote, urlsplit

from splade_cli import CLI, run

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 4, 16)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]  # noqa: E731 - nearest rank
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(pick(0.99) * 1000, 1), "mean_ms": round(statistics.fmean(ordered) * 1000, 1)}


def prepare(work: Path, url: str, index: str, dataset: Path) -> tuple[Path, dict[str, str]]:
    """The MiniLM start bundle and the Cranfield index built with it (each only once), and the engine."""
    from splade_es.toolkit.engines.connect import connect

    model = work / "minilm-start"
    if not (model / "splade_config.json").is_file():
        run("init-model", "--base", "minilm", "--output", str(model))
    with connect(url) as engine:
        exists, info = engine.exists(index), {"kind": engine.info.kind, "version": engine.info.version}
    if not exists:
        run("ingest", "--index", index, "--corpus", str(dataset), "--model", str(model), "--url", url,
            "--state-dir", str(work / "state"), "--no-progress")
    return model, info


class Client:
    """One keep-alive connection to the service."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        self.connection.request(method, path, body=None if body is None else json.dumps(body).encode(),
                                headers={"content-type": "application/json"})
        reply = self.connection.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise SystemExit(f"{path} answered {reply.status}: {data[:300]!r}")
        return data

    def search(self, query: str, k: int = 10) -> tuple[float, float]:
        """Wall seconds as this client sees them, and the service's encode seconds (queue wait included)."""
        started = time.perf_counter()
        report = json.loads(self.request("POST", "/search", {"query": query, "k": k}))
        return time.perf_counter() - started, report["encode_ms"] / 1000

    def batches(self) -> tuple[float, float]:
        """Texts encoded and encoder calls so far (``/metrics``)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.request("GET", "/metrics").decode()
        samples = {s.name: s.value for family in text_string_to_metric_families(text)
                   for s in family.samples if s.name.startswith("splade_es_encode_batch_texts_")}
        return samples["splade_es_encode_batch_texts_sum"], samples["splade_es_encode_batch_texts_count"]


@contextmanager
def server(index: str, url: str, model: Path, max_batch: int, window_ms: float, log: Path):
    """A ``splade-es serve`` process; its standard error goes to ``log`` (a pipe nobody reads would fill)."""
    with log.open("w") as errors:
        process = subprocess.Popen([*CLI, "serve", "--index", index, "--url", url, "--model", str(model), "--port",
                                    "0", "--max-batch", str(max_batch), "--batch-window-ms", str(window_ms)],
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        address = process.stdout.readline().strip()
        if not address.startswith("http://"):
            raise SystemExit(f"serve did not start: {log.read_text()[-2000:]}")
        warm = Client(address)
        for query in ("shock wave", "boundary layer", "heat transfer"):
            warm.search(query)
        yield address
    finally:
        process.terminate()
        process.wait(60)


def throughput(address: str, queries: list[str], clients: int, total: int) -> dict[str, float]:
    per_client = max(1, total // clients)
    timings: list[tuple[float, float]] = []
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def work(offset: int) -> None:
        client = Client(address)
        start.wait()
        mine = [client.search(queries[(offset * per_client + i) % len(queries)]) for i in range(per_client)]
        with lock:
            timings.extend(mine)

    texts, calls = Client(address).batches()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    texts_after, calls_after = Client(address).batches()
    return {"clients": clients, "requests": len(timings), "seconds": round(elapsed, 2),
            "qps": round(len(timings) / elapsed, 2), **percentiles([wall for wall, _ in timings]),
            "encode": percentiles([encode for _, encode in timings]),
            "texts_per_encoder_call": round((texts_after - texts) / max(1.0, calls_after - calls), 2)}


def screenshot(address: str, query: str, path: Path) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                    "--virtual-time-budget=60000", "--window-size=1400,1300", f"--screenshot={path}",
                    f"{address}/?q={quote(query)}&k=5"], check=True, capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="OpenSearch (or Elasticsearch) on loopback")
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "cranfield")
    parser.add_argument("--index", default="bench-serve-minilm-cranfield")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-serve"))
    parser.add_argument("--cli-queries", type=int, default=10)
    parser.add_argument("--queries", type=int, default=60, help="sequential /search requests")
    parser.add_argument("--requests", type=int, default=96, help="/search requests at each client count and server")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    model, engine = prepare(args.work, args.url, args.index, args.dataset)
    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").read_text().splitlines()]
    result: dict = {"date": date.today().isoformat(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "gpu": None,
                                "loadavg_start": os.getloadavg()},
                    "model": "MiniLM start (splade-es init-model --base minilm), CPU", "index": args.index,
                    "engine": engine}

    cli = []
    for query in queries[:args.cli_queries]:
        started = time.perf_counter()
        run("search", "--index", args.index, "--url", args.url, "--model", str(model), "--json", query)
        cli.append(time.perf_counter() - started)
    result["cli_per_call"] = percentiles(cli)
    print("cli", result["cli_per_call"], flush=True)

    modes = {"batching": 16, "no_batching": 1}
    logs = {name: args.work / f"serve-{name}.log" for name in modes}
    with server(args.index, args.url, model, modes["batching"], 5.0, logs["batching"]) as batching, \
            server(args.index, args.url, model, modes["no_batching"], 5.0, logs["no_batching"]) as unbatched:
        addresses = {"batching": batching, "no_batching": unbatched}
        client = Client(batching)
        timings = [client.search(query) for query in queries[3:3 + args.queries]]
        result["search_sequential"] = {**percentiles([wall for wall, _ in timings]),
                                       "encode": percentiles([encode for _, encode in timings])}
        print("search", result["search_sequential"], flush=True)
        if args.screenshot:
            screenshot(batching, "boundary layer transition on a flat plate", args.screenshot)
        result["throughput"] = {name: {"max_batch": size, "window_ms": 5.0, "rows": []} for name, size in modes.items()}
        for clients in CLIENTS:
            for name, address in addresses.items():
                row = throughput(address, queries, clients, args.requests)
                result["throughput"][name]["rows"].append(row)
                print(name, row, flush=True)
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


def table(result: dict) -> str:
    cli, sequential = result["cli_per_call"], result["search_sequential"]
    lines = ["| path | requests | p50 | p99 |", "|---|---:|---:|---:|",
             f"| `splade-es search` (model loaded per call) | {cli['n']} | {cli['p50_ms']:.0f} ms | "
             f"{cli['p99_ms']:.0f} ms |",
             f"| `POST /search` (model loaded once) | {sequential['n']} | {sequential['p50_ms']:.0f} ms | "
             f"{sequential['p99_ms']:.0f} ms |", "",
             "| clients | batching | queries/s | p50 / p99 | encode p50 | texts per encoder call |",
             "|---:|---|---:|---:|---:|---:|"]
    for name, label in (("batching", "on (16, 5 ms)"), ("no_batching", "off")):
        for row in result["throughput"][name]["rows"]:
            lines.append(f"| {row['clients']} | {label} | {row['qps']:.2f} | {row['p50_ms']:.0f} / "
                         f"{row['p99_ms']:.0f} ms | {row['encode']['p50_ms']:.0f} ms | "
                         f"{row['texts_per_encoder_call']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
