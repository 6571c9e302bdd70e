"""``splade-es ingest``: encode a corpus (or load precomputed vectors) into an index."""

from __future__ import annotations

import json
from pathlib import Path

import click

from splade_es.errors import InputError
from splade_es.model.config import Pruning
from splade_es.toolkit.cli.common import (chunk_options, chunking, engine_options, friendly_errors, load_encoder,
                                          open_engine)
from splade_es.io.corpus import BadRecord, Document, read_corpus, read_vectors, resolve_corpus
from splade_es.io.ranks import Group, Ranks
from splade_es.toolkit.elser import DEFAULT_INFERENCE_ID, plan_for
from splade_es.toolkit.ingest import (IngestOptions, IngestSummary, VectorSource, encoded_vectors, file_identity,
                                      ingest_corpus, model_files_identity, no_vectors)
from splade_es.toolkit.layouts import ENCODERS, ElserLayout, Layout, SpladeLayout, TextLayout
from splade_es.toolkit.mappings import FIELD_TYPES, VectorIndexSpec, choose_field_type, config_hash, model_id


@click.command()
@click.option("--index", required=True, help="Index to write (with --alias: the base of the versioned name).")
@click.option("--corpus", "corpus_path", type=click.Path(exists=True),
              help="BEIR directory, or .jsonl / .jsonl.gz / .csv / .parquet file.")
@click.option("--model", "model_path", envvar="SPLADE_ES_MODEL", metavar="PATH_OR_ID",
              help="Model bundle, hub id or backbone (env SPLADE_ES_MODEL); with --vectors: the model that made them.")
@click.option("--encoder", type=click.Choice(ENCODERS), default="splade", show_default=True,
              help="splade: vectors from --model; text: text fields only (a BM25 baseline index); "
                   "elser: Elasticsearch expands the text with ELSER v2 itself.")
@click.option("--inference-id", default=DEFAULT_INFERENCE_ID, show_default=True,
              help="--encoder elser: the ELSER inference endpoint (or trained model id before 8.15).")
@click.option("--adapter", metavar="PATH_OR_ID", help="A peft LoRA adapter to apply to --model.")
@click.option("--vectors", "vectors_path", type=click.Path(exists=True, dir_okay=False),
              help="Precomputed vectors (splade-es encode --json output), in corpus order.")
@engine_options
@click.option("--field", default="splade", show_default=True, help="Name of the vector field.")
@click.option("--field-type", type=click.Choice(FIELD_TYPES),
              help="Default: rank_features where the node has it, else sparse_vector.")
@click.option("--id-field", help="Id field of .jsonl/.csv/.parquet records (default _id).")
@click.option("--text-fields", help="Comma-separated text fields (default title,text); all are encoded.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Documents encoded per step.")
@click.option("--device", help="cpu, cuda, cuda:N (default: cuda when available; cuda:LOCAL_RANK under torchrun).")
@click.option("--doc-top-k", type=click.IntRange(min=1),
              help="Keep at most K features per document (static pruning; also applies to --vectors).")
@click.option("--doc-min-weight", type=click.FloatRange(min=0),
              help="Drop document weights below W (also applies to --vectors): shorter posting lists, "
                   "faster queries; measure the nDCG cost first (docs/BENCHMARKS.md).")
@chunk_options
@click.option("--shards", type=click.IntRange(min=1), help="Primary shards of a new index (default: the cluster's); an existing index with other shards is refused.")
@click.option("--replicas", type=click.IntRange(min=0), help="Replicas of a new index (default: the cluster's); an existing index with others is refused.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted or incomplete run of the same command: skips what is indexed, "
                   "re-sends what failed for a retryable reason.")
@click.option("--alias", help="Write a new versioned index, then point this alias at it atomically.")
@click.option("--skip-bad", is_flag=True, help="Record malformed records in the failures file and go on.")
@click.option("--precheck/--no-precheck", default=True, show_default=True,
              help="Read the whole corpus (and --vectors) once before anything is sent, so a malformed record "
                   "(or, with --skip-bad, a vectors file out of step with the corpus) stops the run with "
                   "FILE:LINE before the index is created or changed; --no-precheck saves that pass on very "
                   "large inputs (a bad record then stops the load part-way, and the alias stays).")
@click.option("--chunk-docs", type=click.IntRange(min=1), default=500, show_default=True, help="Documents per bulk request.")
@click.option("--chunk-mb", type=click.FloatRange(min=0.01), default=8.0, show_default=True, help="Megabytes per bulk request.")
@click.option("--concurrency", type=click.IntRange(min=1), default=2, show_default=True, help="Bulk requests in flight.")
@click.option("--max-retries", type=click.IntRange(min=0), default=8, show_default=True,
              help="Retries of a bulk request on 429/502/503/504 and lost connections (exponential backoff "
                   "with full jitter); a 413 splits the request instead.")
@click.option("--failures", "failures_path", type=click.Path(dir_okay=False), default="failures.jsonl",
              show_default=True, help="Where refused documents and bad records are written.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where checkpoints live (default: user state dir).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@friendly_errors
def ingest(index: str, corpus_path: str | None, model_path: str | None, encoder: str, inference_id: str,
           adapter: str | None, vectors_path: str | None,
           url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure,
           field: str, field_type: str | None, id_field: str | None, text_fields: str | None, batch_size: int,
           device: str | None, doc_top_k: int | None, doc_min_weight: float | None, chunk_tokens: int | None,
           chunk_overlap: int, shards: int | None,
           replicas: int | None, resume: bool,
           alias: str | None, skip_bad: bool, precheck: bool, chunk_docs: int, chunk_mb: float, concurrency: int,
           max_retries: int, failures_path: str, state_dir: str | None, as_json: bool, no_progress: bool) -> None:
    """Encode documents into a vector field and bulk-load them, resumably.

    With --encoder text only the text fields are indexed (a BM25 baseline); with --encoder
    elser, Elasticsearch expands them with ELSER v2 at index time (semantic_text on 8.15+,
    an inference pipeline over 256-word passages before).

    Documents are indexed by their corpus id, so running again never duplicates, and
    --resume skips what an interrupted run already indexed and re-sends what failed for a
    retryable reason. The exit status is 0 only when, after a refresh, the index holds
    every document of the corpus; refused documents and skipped records are listed (with
    their reasons) in the failures file and the checkpoint, and --alias moves only then.
    Empty texts are indexed with an empty vector; a repeated id keeps the later record
    (both are counted in the summary). Under torchrun, each rank encodes and loads its own
    shard (a document goes to the rank its id hashes to).

    \b
    Examples:
      splade-es ingest --index beir-fiqa --corpus data/fiqa --model ./bundle
      splade-es ingest --index cran --corpus cran.jsonl --vectors vectors.jsonl --model ./bundle
      splade-es ingest --alias cran --index cran --corpus data/cranfield --model ./bundle --url https://es:9200
      splade-es ingest --index cran-bm25 --corpus data/cranfield --encoder text
      splade-es ingest --index cran-elser --corpus data/cranfield --encoder elser --url https://es:9200
      torchrun --nproc-per-node 4 -m splade_es.toolkit.cli ingest --index big --corpus big.jsonl --model ./bundle
    """
    if corpus_path is None and vectors_path is None:
        raise click.UsageError("give --corpus, --vectors, or both")
    if encoder != "splade" and (vectors_path or not corpus_path):
        raise click.UsageError(f"--encoder {encoder} reads --corpus and takes no --vectors")
    if encoder == "splade" and not model_path:
        raise click.UsageError("--encoder splade needs --model (or SPLADE_ES_MODEL)")
    windows = chunking(chunk_tokens, chunk_overlap)
    if windows and (encoder != "splade" or vectors_path):
        raise click.UsageError("--chunk-tokens applies when --model encodes the documents (not --vectors or "
                               f"--encoder {encoder})")
    ranks = Ranks.from_env()
    corpus = resolve_corpus(corpus_path, id_field, _split(text_fields)) if corpus_path else None
    engine = open_engine(url, engine_kind, data_dir, api_key, username, password, ca_certs, insecure)
    if precheck:  # after the connection (a wrong URL fails in seconds), before anything is written
        try:
            _precheck(corpus, vectors_path, skip_bad)
        except BaseException:
            engine.close()
            raise
    records = read_corpus(corpus, skip_bad) if corpus else None
    layout, encode = _layout(engine, encoder, inference_id, model_path, adapter, vectors_path, field, field_type,
                             device or ranks.default_device(), doc_top_k, doc_min_weight, windows)
    if vectors_path:
        records = _with_vectors(records, vectors_path, skip_bad)
    failures = Path(failures_path)
    if ranks.world_size > 1:
        failures = failures.with_name(f"{failures.stem}.rank{ranks.rank}{failures.suffix}")
    options = IngestOptions(index=index, alias=alias, chunk_docs=chunk_docs, chunk_bytes=int(chunk_mb * 2**20),
                            concurrency=concurrency, encode_batch=batch_size, max_retries=max_retries,
                            resume=resume, failures_path=failures, state_dir=Path(state_dir) if state_dir else None,
                            rank=ranks.rank, world_size=ranks.world_size, show_progress=not no_progress,
                            shards=shards, replicas=replicas, skip_bad=skip_bad)
    identity = {"corpus": file_identity(corpus.path) if corpus else None,
                "vectors": file_identity(vectors_path) if vectors_path else None,
                "corpus_format": [corpus.id_field, *corpus.text_fields] if corpus else None,
                "model_files": model_files_identity(model_path, adapter) if encoder == "splade" else None}
    group = Group(ranks)
    try:
        summary = ingest_corpus(engine, layout, records, encode, options, identity, group)
    finally:
        group.close()
        engine.close()
    if ranks.is_main:
        _report(summary, as_json)
    if not summary.complete:
        if ranks.is_main:
            click.echo(f"Error: {summary.problem}", err=True)
        raise SystemExit(1)


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _layout(engine, encoder: str, inference_id: str, model_path: str | None, adapter: str | None,
            vectors_path: str | None, field: str, field_type: str | None, device: str, doc_top_k: int | None,
            doc_min_weight: float | None, windows: dict[str, int]) -> tuple[Layout, VectorSource]:
    """The index layout and where each document's vector comes from (none for text and ELSER)."""
    if encoder == "text":
        return TextLayout(), no_vectors
    if encoder == "elser":
        return ElserLayout(plan_for(engine.info, inference_id)), no_vectors
    if vectors_path:
        where = f"{engine.info.kind} {engine.info.version} at {engine.info.location}"
        recorded, pruning = {"precomputed": Path(vectors_path).name}, None
        if doc_top_k is not None or doc_min_weight is not None:  # else the vectors go in as given
            pruning = Pruning(top_k=doc_top_k, min_weight=doc_min_weight or 0.0)
            recorded.update(top_k=doc_top_k, min_weight=pruning.min_weight)
        spec = VectorIndexSpec(model_id(model_path, adapter), _bundle_config_hash(model_path, adapter), recorded, field,
                               choose_field_type(engine.info.capabilities, field_type, where))
        return SpladeLayout(spec), _precomputed(pruning)
    model = load_encoder(model_path, adapter, device)
    if windows:
        model.inputs.window_size(windows["chunk_tokens"])  # a bad size fails before the index is touched
    pruning = model.config.pruning(False).override(top_k=doc_top_k, min_weight=doc_min_weight)
    return (SpladeLayout.for_encoder(model, model_path, adapter, engine.info, pruning, field, field_type, windows),
            encoded_vectors(model, pruning, windows))


def _bundle_config_hash(model_path: str, adapter: str | None) -> str | None:
    """With precomputed vectors the model is not loaded; its bundle config (a local directory's, or
    a hub id's cached ``splade_config.json``) still identifies it."""
    from splade_es.model.backbone import cached_hub_file
    from splade_es.model.config import SpladeConfig

    for candidate in filter(None, (adapter, model_path)):
        if not Path(candidate).is_dir():
            cached = cached_hub_file(candidate, "splade_config.json")
            candidate = str(cached.parent) if cached is not None else None
        config = SpladeConfig.load(candidate) if candidate else None
        if config is not None:
            return config_hash(config.to_dict())
    return None


def _precheck(corpus, vectors_path: str | None, skip_bad: bool) -> None:
    """Read every record (and vector, paired with it) as the load will, raising the first problem
    it would stop on as ``FILE:LINE: ...`` while nothing has been sent (with ``skip_bad``, only
    what cannot be skipped: vectors out of step with the corpus)."""
    records = read_corpus(corpus, skip_bad) if corpus else None
    if vectors_path:
        records = _with_vectors(records, vectors_path, skip_bad)
    for _ in records or ():
        pass


def _with_vectors(records, vectors_path: str, skip_bad: bool):
    """Pair each corpus record with its vector line (same order, same id), or vectors alone."""
    vectors = read_vectors(vectors_path, skip_bad)
    if records is None:
        for line in vectors:
            yield line if isinstance(line, BadRecord) else Document(line[1], {}, line[0], line[2])
        return
    for record in records:
        line = next(vectors, None)
        if line is None:
            raise InputError(f"{vectors_path}: ends before the corpus does (at {record.where})")
        if isinstance(record, BadRecord) or isinstance(line, BadRecord):
            yield record if isinstance(record, BadRecord) else line
            continue
        where, doc_id, features = line
        if doc_id != record.id:
            raise InputError(f"{where}: id {doc_id!r} does not match the corpus record {record.id!r} at {record.where}")
        yield Document(record.id, record.fields, record.where, features)
    extra = next(vectors, None)
    if extra is not None:
        raise InputError(f"{extra.where if isinstance(extra, BadRecord) else extra[0]}: more vectors than corpus records")


def _precomputed(pruning: Pruning | None) -> VectorSource:
    """Vectors read with the corpus; pruned like encoded ones when --doc-top-k / --doc-min-weight ask."""
    def vectors(documents: list[Document]) -> list[dict[str, float]]:
        features = [document.features or {} for document in documents]
        return [pruning.apply(f) for f in features] if pruning else features

    return vectors


def _report(summary: IngestSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    lines = [
        f"index {summary.index}" + (f" (alias {summary.alias})" if summary.alias else ""),
        f"  indexed {summary.indexed}, failed {summary.failed}, skipped {summary.skipped}, "
        f"already indexed (resume) {summary.resumed}",
        f"  {summary.docs_per_second:.1f} docs/s, {summary.mean_features:.1f} features/doc, "
        f"{summary.retries} retried requests",
        f"  index now holds {summary.index_docs} of the corpus's {summary.expected} documents, "
        f"{(summary.index_size_bytes or 0) / 2**20:.1f} MiB on disk",
    ]
    if summary.empty:
        lines.append(f"  {summary.empty} empty texts indexed with no features")
    if summary.duplicate_ids:
        lines.append(f"  {summary.duplicate_ids} repeated ids (the later record wins), e.g. "
                     + ", ".join(summary.duplicate_examples[:5]))
    if summary.retried:
        lines.append(f"  {summary.retried} documents an earlier run could not index were sent again")
    if summary.failures_file:
        lines.append(f"  failures: {summary.failures_file}")
    if summary.alias:
        lines.append(f"  alias {summary.alias} " + ("now points at this index" if summary.alias_moved
                                                    else "left as it was (the index is incomplete)"))
    click.echo("\n".join(lines))
