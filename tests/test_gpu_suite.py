"""benchmarks/gpu_suite.py: the one prepared GPU command, proven on CPU with --tiny.

The whole suite runs once (tiny Mistral, CPU) in a subprocess in which the engine clients and
the toolkit cannot be imported, as on the GPU machine; its parts are checked against
independent computations in-process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
# What the GPU machine lacks (KINDS.md's package list) and the run does not carry as wheels
# (bitsandbytes, orjson, mistral-common): the suite must run without all of it.
ABSENT_THERE = ["elasticsearch", "elastic_transport", "opensearchpy", "splade_es.toolkit", "tensorboardX",
                "platformdirs", "pytrec_eval", "snowballstemmer", "bm25s", "Stemmer"]
# Every import of those fails; a probe (find_spec) still finds them, so libraries that only
# check availability (accelerate asks about tensorboardX) behave as they do anywhere.
BLOCKED_RUN = """
import importlib.abc, importlib.machinery, runpy, sys
absent = {absent!r}
class Fail(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"{{spec.name}} is not installed on the GPU machine", name=spec.name)
    def exec_module(self, module):
        raise AssertionError("unreachable")
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == a or name.startswith(a + ".") for a in absent):
            return importlib.machinery.ModuleSpec(name, Fail())
        return None
sys.meta_path.insert(0, Absent())
sys.path.insert(0, {benchmarks!r})
sys.argv = [{suite!r}, *sys.argv[1:]]
runpy.run_path({suite!r}, run_name="__main__")
"""


@pytest.fixture(scope="module")
def suite_module():
    sys.path.insert(0, str(SUITE.parent))  # the suite imports benchmarks/memory.py as a script does
    try:
        spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_suite"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SUITE.parent))
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-suite")
    code = BLOCKED_RUN.format(absent=ABSENT_THERE, benchmarks=str(SUITE.parent), suite=str(SUITE))
    done = subprocess.run([sys.executable, "-c", code, "--tiny", "--out", str(out), "--scratch", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "gpu_suite.json").read_text())


def _numbers(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_tiny_run_has_every_section_key_and_only_finite_numbers(tiny_run):
    result = tiny_run
    assert result["sections"] == {"setup": "done", "encode": "done", "query": "done", "train": "done",
                                  "quantized": "done"}
    assert result["skipped"] == [] and result["non_finite"] == []
    numbers = dict(_numbers(result))
    assert len(numbers) > 100
    assert all(math.isfinite(v) for v in numbers.values()), [p for p, v in numbers.items() if not math.isfinite(v)]
    assert isinstance(result["device"], str) and result["device"].startswith("cpu")
    encode, query, train, quantized = (result[s] for s in ("encode", "query", "train", "quantized"))
    assert 0 < encode["mfu"] < 1 and encode["speedup_vs_naive"] > 0
    assert encode["mfu"] == pytest.approx(encode["tflops"] / 989.0)
    assert encode["tflops"] == pytest.approx(encode["flops_per_doc"] * encode["docs_per_s"] / 1e12, rel=1e-6)
    assert len(encode["sweep"]) == len(result["plan"]["budgets"])
    assert encode["naive"]["activation_peak_gb"] > encode["sweep"][-1]["activation_peak_gb"], "full logits cost more"
    assert "profile" in encode and encode["profile"]["top"], "a missed target comes with a profile"
    assert query["p50_ms"] > 0 and query["bound_ms"] > 0 and set(query["lengths"]) == {"16", "64"}
    for row in query["lengths"].values():
        assert row["static_cosine_vs_forward"] == pytest.approx(1.0, abs=1e-6)
    assert train["timed_steps"] >= 5 and train["peak_mem_gb"] > 0 and train["tokens_per_s"] > 0
    assert train["peak_batch_step"]["batch"] == result["plan"]["peak_batch"]
    assert train["lora"] == {"r": 16, "alpha": 8, "dropout": 0.1, "target_modules": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    assert train["mode"] == "echo" and train["gradient_checkpointing"]
    assert "drift_vs_bf16" not in quantized["bf16"]
    drift8, drift4 = quantized["8bit"]["drift_vs_bf16"], quantized["4bit"]["drift_vs_bf16"]
    assert 0.9 < drift4["cosine_mean"] < drift8["cosine_mean"] <= 1.0, "4 bits move vectors more than 8"
    substituted = {s["what"] for s in result["substitutions"]}
    assert {"quantized 8bit", "quantized 4bit", "train quantization", "query CUDA graph"} <= substituted
    assert "needs a CUDA GPU" in quantized["4bit"]["real_path_error"], "the real path is tried first"


def test_flop_count_matches_torch_flop_counter(suite_module, tiny_mistral_dir):
    """Without padding, and with attention counted in full (as the counter counts SDPA), the
    formula equals what torch counts for encoder.forward: layers, attention and the head."""
    from torch.utils.flop_counter import FlopCounterMode

    from splade_es.model import SparseEncoder

    encoder = SparseEncoder.from_pretrained(tiny_mistral_dir, head_chunk_tokens=7)
    texts = [[1000 + i for i in range(20)], [3000 + i for i in range(20)]]
    batch = encoder.inputs.collate(encoder.inputs.encode_ids(texts, is_query=False))
    model = suite_module.FlopModel.of(encoder)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder.forward(batch)
    lengths = batch.attention_mask.sum(1).tolist()
    assert counter.get_total_flops() == model.forward(lengths, int(batch.pool_mask.sum()), causal=False)
    causal, full = (model.forward([40], 0, causal=c) for c in (True, False))
    linear = 2 * model.layer_params * 40
    assert (causal - linear) / (full - linear) == pytest.approx(41 / 80), "causal attention: L(L+1)/2 pairs"
    assert model.batch(batch) == model.forward(lengths, int(batch.pool_mask.sum()))


def test_static_query_is_encoder_forward(suite_module, tiny_mistral_dir):
    from splade_es.model import SparseEncoder

    encoder = SparseEncoder.from_pretrained(tiny_mistral_dir)
    encoded = encoder.inputs.encode_ids([[1500 + 7 * i for i in range(16)]], is_query=True)[0]
    with torch.inference_mode():
        expected = encoder.forward(encoder.inputs.collate([encoded]))[0]
        got = suite_module.static_query(encoder, encoded)()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert int((got > 0).sum()) > 100


def test_weight_rounding_lands_on_the_quantisation_grid(suite_module):
    torch.manual_seed(0)
    weight = torch.randn(8, 128)
    eight = suite_module.round_weights(weight, 8)
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    assert torch.allclose(eight / scale, torch.round(eight / scale), atol=1e-4)
    assert (eight - weight).abs().le(scale / 2 + 1e-6).all()
    four = suite_module.round_weights(weight, 4).reshape(-1, 64)
    block_scale = weight.reshape(-1, 64).abs().amax(dim=1, keepdim=True)
    levels = torch.tensor(suite_module.NF4_LEVELS)
    assert (four / block_scale).unsqueeze(-1).sub(levels).abs().amin(-1).max() < 1e-6, "every value is an NF4 level"
    assert (four - weight.reshape(-1, 64)).abs().mean() > (eight - weight).abs().mean()


def test_drift_figures_match_a_direct_computation(suite_module):
    torch.manual_seed(1)
    reference = torch.rand(3, 300)
    other = reference + 0.3 * torch.rand(3, 300)
    got = suite_module.cosine_and_overlap(reference, other, k=64)
    cosines = [float(a @ b / (a.norm() * b.norm())) for a, b in zip(reference.double(), other.double())]
    overlaps = [len(set(a.argsort(descending=True)[:64].tolist()) & set(b.argsort(descending=True)[:64].tolist())) / 64
                for a, b in zip(reference, other)]
    assert got["cosine_mean"] == pytest.approx(sum(cosines) / 3) and got["cosine_min"] == pytest.approx(min(cosines))
    assert got["top64_overlap_mean"] == pytest.approx(sum(overlaps) / 3)
    assert 0 < got["top64_overlap_min"] < 1


def test_a_measurement_past_the_deadline_is_skipped_and_recorded(suite_module, tmp_path):
    args = argparse.Namespace(tiny=True, device=None, out=str(tmp_path), deadline=100.0, scratch=str(tmp_path))
    suite = suite_module.Suite(args)
    try:
        suite.budget.enter("encode")
        later = 100.0 * sum(suite_module.SHARES[s] for s in ("query", "train", "quantized"))
        assert suite.budget.left() == pytest.approx(100.0 - later, abs=1.0), "later sections keep their share"
        assert suite.fits("encode", "small", 1.0)
        assert not suite.fits("encode", "huge", 1e6)
        suite.save()
    finally:
        suite.cleanup()
    saved = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert [(s["section"], s["what"]) for s in saved["skipped"]] == [("encode", "huge")]


def test_full_size_model_is_mistral_7b_v03(suite_module):
    from transformers import AutoModelForCausalLM

    config = suite_module.mistral_7b_v03_config()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    hidden, kv, inter, vocab = 4096, 8 * 128, 14336, 32768
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert linear == 32 * per_layer
    assert sum(p.numel() for p in model.parameters()) == 32 * (per_layer + 2 * hidden) + hidden + 2 * vocab * hidden
    assert not config.tie_word_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight
    theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    assert theta == 1e6 and config.sliding_window is None and config.max_position_embeddings == 32768


def test_built_model_loads_through_the_real_path_in_bf16(suite_module, tmp_path):
    from transformers import MistralConfig

    from splade_es.model import SparseEncoder

    small = MistralConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                          architectures=["MistralForCausalLM"])
    directory = suite_module.build_full_mistral(tmp_path / "model", torch.device("cpu"), config=small)
    encoder = SparseEncoder.from_pretrained(str(directory), dtype="bfloat16")
    assert encoder.config.mode == "echo" and encoder.backbone.compute_dtype == torch.bfloat16
    assert encoder.vocab_size == 32768 and len(encoder.tokenizer) == 32768
    assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"


def test_a_failing_part_is_recorded_and_the_json_still_written(suite_module, tmp_path):
    args = argparse.Namespace(tiny=True, device=None, out=str(tmp_path), deadline=100.0, scratch=str(tmp_path))
    suite = suite_module.Suite(args)
    out = suite.result.setdefault("encode", {})

    def half_done() -> None:
        out["measured"] = 1.5
        raise ValueError("the card fell over")

    try:
        assert not suite_module.attempt(suite, "encode", half_done)
    finally:
        suite.cleanup()
    saved = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert saved["sections"]["encode"] == "failed: ValueError: the card fell over"
    assert "the card fell over" in saved["errors"]["encode"] and saved["encode"] == {"measured": 1.5}
