"""The embedded engine at scale, on corpora from ``benchmarks/scale_corpus.py``: memory of the
streaming commands, load time, and each sparse backend's speed and recall.

For each generated corpus directory (``--corpora``), each step runs in its own process, so its
peak resident memory (``VmHWM``) is its own:

- ``ingest``: ``splade-es ingest --engine local --vectors`` of the whole corpus (wall time, peak RSS);
- ``load-parse`` / ``load-cache``: opening the index the first time (the log parsed, the vector
  matrix built and cached) and again (the cached arrays read); wall time and peak RSS;
- ``exact`` / ``seismic``: the generated queries as ``rank_feature`` queries for the top 10, one at
  a time (p50/p99 of the engine's ``took``), after the index is open (and, for SEISMIC, built:
  its build time and the process's peak RSS are reported); recall@10 of SEISMIC against the exact
  top 10, nDCG@10 of both against the generated judgments (pytrec_eval);
- ``encode`` (``--encode-model``): ``splade-es encode --input --output`` of the first N texts of
  the first corpus, for each N of ``--encode-docs``, each text cut to ``--encode-words`` words (a
  small model and short texts keep the time bounded; what is measured is whether memory grows
  with N, across encode's 4096-text blocks), wall time and peak RSS; ``--encode-top-k`` keeps each
  vector's N heaviest features, as ``ingest --doc-top-k`` would (an untrained model fills its cap).
  ``--encode-model corpus-bert`` builds a 2-layer random BERT masked LM (hidden size 32) whose
  WordPiece vocabulary is the corpus's own words: fast enough on CPU to encode a million texts.

    python benchmarks/scale_corpus.py generate --stats benchmarks/results/scale_stats_cranfield_minilm.json \\
        --docs 100000 --out /tmp/scale-100k
    nice -n 5 python benchmarks/local_scale.py --corpora /tmp/scale-100k,/tmp/scale-300k \\
        --out benchmarks/results/local_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from memory import peak_rss_bytes

INDEX = "scale"


def _child(step: str, corpus: Path, work: Path, extra: dict) -> dict:
    """Run one step in a fresh interpreter and return what it printed (one JSON line)."""
    command = [sys.executable, __file__, "--child", step, "--corpora", str(corpus), "--work", str(work),
               "--extra", json.dumps(extra)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {step} on {corpus} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _queries(corpus: Path, limit: int) -> tuple[list[str], list[dict[str, float]]]:
    ids, vectors = [], []
    with (corpus / "query-vectors.jsonl").open() as handle:
        for _, line in zip(range(limit), handle):
            record = json.loads(line)
            ids.append(record["id"])
            vectors.append(record["features"])
    return ids, vectors


def _search_step(corpus: Path, data_dir: Path, backend: str, parameters: dict, limit: int) -> dict:
    from splade_es.toolkit.engines.local import LocalEngine
    from splade_es.toolkit.query import forms

    engine = LocalEngine(data_dir)
    engine.set_sparse_backend(INDEX, backend, **parameters)
    ids, vectors = _queries(corpus, limit)
    started = time.perf_counter()
    engine.search(INDEX, {"query": forms.vector_query(vectors[0], "splade", "rank_feature"), "size": 10})
    first = time.perf_counter() - started  # opening the index (and building SEISMIC's) plus one query
    took, run = [], {}
    for qid, vector in zip(ids, vectors):
        reply = engine.search(INDEX, {"query": forms.vector_query(vector, "splade", "rank_feature"), "size": 10,
                                      "_source": False})
        took.append(reply["took"])
        run[qid] = {hit["_id"]: hit["_score"] for hit in reply["hits"]["hits"]}
    return {"backend": backend, "parameters": parameters, "first_query_s": round(first, 2),
            "took_ms": {f"p{p}": round(float(np.percentile(took, p)), 3) for p in (50, 99)},
            "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1), "run": run}


def run_child(step: str, corpus: Path, work: Path, extra: dict) -> dict:
    data_dir = work / "engine"
    started = time.perf_counter()
    if step == "ingest":
        from click.testing import CliRunner

        from splade_es.toolkit.cli import main

        result = CliRunner().invoke(main, [
            "ingest", "--engine", "local", "--data-dir", str(data_dir), "--index", INDEX, "--corpus", str(corpus),
            "--vectors", str(corpus / "vectors.jsonl"), "--model", "generated", "--no-progress", "--json",
            "--state-dir", str(work / "state"), "--failures", str(work / "failures.jsonl")])
        if result.exit_code != 0:
            raise SystemExit(result.output)
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        out = {"complete": summary["complete"], "indexed": summary["indexed"]}
    elif step in ("load-parse", "load-cache"):
        from splade_es.toolkit.engines.local import LocalEngine

        if step == "load-parse":
            for cached in (data_dir / "indices" / INDEX / "cache").glob("*"):
                cached.unlink()
        engine = LocalEngine(data_dir)
        count = engine.count(INDEX)
        engine._data(INDEX).features("splade")  # the vector matrix a query needs
        out = {"docs": count}
    elif step in ("exact", "seismic"):
        return _search_step(corpus, data_dir, step, extra.get("parameters", {}), extra["queries"])
    elif step == "encode":
        from click.testing import CliRunner

        from splade_es.toolkit.cli import main

        texts = work / "texts.jsonl"
        with (corpus / "corpus.jsonl").open() as source, texts.open("w") as target:
            for _, line in zip(range(extra["docs"]), source):
                record = json.loads(line)
                text = " ".join(record["text"].split()[: extra["words"]])
                target.write(json.dumps({"id": record["_id"], "text": text}) + "\n")
        started = time.perf_counter()
        top_k = ["--top-k", str(extra["top_k"])] if extra.get("top_k") is not None else []
        result = CliRunner().invoke(main, ["encode", "--model", extra["model"], "--input", str(texts),
                                           "--output", str(work / "encoded.jsonl"), *top_k])
        if result.exit_code != 0:
            raise SystemExit(result.output)
        seconds = round(time.perf_counter() - started, 2)  # the check below reads the output: not timed
        lines, most = 0, 0
        with (work / "encoded.jsonl").open() as encoded:
            for line in encoded:
                lines, most = lines + 1, max(most, len(json.loads(line)["features"]))
        out = {"docs": extra["docs"], "vectors": lines, "max_features": most, "seconds": seconds,
               "output_bytes": (work / "encoded.jsonl").stat().st_size}
    else:
        raise SystemExit(f"unknown step {step}")
    return {"seconds": round(time.perf_counter() - started, 2), **out, "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1)}


def _quality(runs: dict[str, dict], corpus: Path) -> dict:
    import pytrec_eval

    qrels: dict[str, dict[str, int]] = {}
    with (corpus / "qrels" / "test.tsv").open() as handle:
        next(handle)
        for line in handle:
            qid, did, grade = line.split()
            qrels.setdefault(qid, {})[did] = int(grade)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    return {name: round(float(np.mean([v["ndcg_cut_10"] for v in evaluator.evaluate(run).values()])), 4)
            for name, run in runs.items()}


def measure(corpus: Path, seismic_settings: list[dict], queries: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="local-scale-", dir=os.environ.get("SCALE_WORK")) as temporary:
        work = Path(temporary)
        result = {"corpus": corpus.name, "ingest": _child("ingest", corpus, work, {})}
        print(f"{corpus.name}: ingest {result['ingest']}", flush=True)
        result["load_parse"] = _child("load-parse", corpus, work, {})
        result["load_cache"] = _child("load-cache", corpus, work, {})
        print(f"{corpus.name}: load {result['load_parse']} / cached {result['load_cache']}", flush=True)
        exact = _child("exact", corpus, work, {"queries": queries})
        runs = {"exact": exact.pop("run")}
        result["backends"] = [exact]
        for parameters in seismic_settings:
            row = _child("seismic", corpus, work, {"parameters": parameters, "queries": queries})
            run = row.pop("run")
            label = "seismic " + json.dumps(parameters, sort_keys=True)
            runs[label] = run
            row["recall@10_vs_exact"] = round(float(np.mean([len(run[q].keys() & runs["exact"][q].keys())
                                                              / max(1, len(runs["exact"][q])) for q in run])), 4)
            result["backends"].append(row)
            print(f"{corpus.name}: {label} {row}", flush=True)
        for row, (label, _) in zip(result["backends"], runs.items()):
            row["ndcg@10"] = _quality({label: runs[label]}, corpus)[label]
        result["index_bytes"] = sum(f.stat().st_size for f in (work / "engine").rglob("*") if f.is_file())
        return result


def corpus_bert(corpus: Path, directory: Path, sample: int = 20_000, words: int = 12_000) -> Path:
    """A 2-layer random BERT masked LM whose vocabulary is the corpus's most frequent words (of its
    first ``sample`` texts): what encode costs per text is then the pipeline's, not a big model's."""
    from collections import Counter

    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    counts: Counter[str] = Counter()
    with (corpus / "corpus.jsonl").open() as source:
        for _, line in zip(range(sample), source):
            counts.update(json.loads(line)["text"].lower().split())
    characters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-", *characters, *(f"##{c}" for c in characters)]
    vocab += [word for word, _ in counts.most_common(words) if word not in vocab]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64)
    BertForMaskedLM(config).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def encode_rows(args: argparse.Namespace, corpus: Path) -> list[dict]:
    """``encode``'s wall time and peak RSS for each of ``--encode-docs``, with a throw-away corpus-bert if asked."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="local-scale-model-") as model_dir:
        model = str(corpus_bert(corpus, Path(model_dir))) if args.encode_model == "corpus-bert" else args.encode_model
        for docs in (int(n) for n in args.encode_docs.split(",")):
            with tempfile.TemporaryDirectory(prefix="local-scale-encode-") as work:
                rows.append(_child("encode", corpus, Path(work), {"model": model, "docs": docs,
                                                                  "words": args.encode_words,
                                                                  "top_k": args.encode_top_k}))
            print(f"encode {rows[-1]}", flush=True)
    return rows


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", required=True, help="comma-separated directories from scale_corpus.py generate")
    parser.add_argument("--seismic", default='[{}]', help="JSON list of SEISMIC parameter sets to measure")
    parser.add_argument("--encode-model", help="also measure encode's peak RSS with this model "
                                               "('corpus-bert': a tiny random BERT over the corpus's words)")
    parser.add_argument("--encode-docs", default="2000,6000,12000", help="comma-separated text counts for encode")
    parser.add_argument("--encode-words", type=int, default=8, help="words kept of each text for encode (its time)")
    parser.add_argument("--encode-top-k", type=_positive, help="features kept per encoded text (default: the model's)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per backend")
    parser.add_argument("--encode-only", action="store_true", help="measure encode only (with --encode-model)")
    parser.add_argument("--out", help="write the results here (JSON)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, Path(args.corpora), Path(args.work), json.loads(args.extra))))
        return
    corpora = [Path(c) for c in args.corpora.split(",")]
    if (args.encode_only or args.encode_top_k is not None) and not args.encode_model:
        parser.error("--encode-only and --encode-top-k need --encode-model")
    results = {"command": " ".join(sys.argv), "machine": platform.platform(), "cpus": os.cpu_count(),
               "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_start": os.getloadavg(), "encode": []}
    if args.encode_model:
        results["encode"] = encode_rows(args, corpora[0])
    results["corpora"] = [] if args.encode_only else [measure(corpus, json.loads(args.seismic), args.queries)
                                                      for corpus in corpora]
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
