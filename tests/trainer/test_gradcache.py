"""Gradient caching equals one pass over the whole batch, on one process and on two (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splade_es.trainer.gradcache import cached_step
from splade_es.trainer.trainable import trainable_parameters
from trainer.conftest import tiny_config
from splade_es.trainer.losses import info_nce
from trainer.gradcache_worker import encode_fn, loss_fn, prepared


def _pairs(path: Path, n: int) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()[:n]]


def _config_file(tmp_path, tiny_mistral_dir, cranfield_pairs, dropout: float) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(tiny_config(tmp_path, tiny_mistral_dir, cranfield_pairs, lora={"dropout": dropout})))
    return str(path)


def _full_batch_grads(encoder, pairs, chunk: int) -> tuple[float, list[torch.Tensor]]:
    """The reference: every chunk encoded with its graph kept, one loss, one backward."""
    encode = encode_fn(encoder)
    groups = [[(True, q) for q, _ in pairs], [(False, d) for _, d in pairs]]
    reps = [torch.cat([encode(g[i:i + chunk]) for i in range(0, len(g), chunk)]) for g in groups]
    loss, _ = loss_fn(reps)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in trainable_parameters(encoder)]


def _cached_grads(encoder, pairs, chunk: int) -> tuple[float, list[torch.Tensor], int]:
    """Loss, gradients, and how many texts were encoded (with replays)."""
    groups = [[(True, q) for q, _ in pairs], [(False, d) for _, d in pairs]]
    encode, encoded = encode_fn(encoder), []

    def counting(items):
        encoded.append(len(items))
        return encode(items)

    loss, _ = cached_step(counting, groups, chunk, loss_fn)
    return loss, [p.grad.clone() for p in trainable_parameters(encoder)], sum(encoded)


def _assert_same(a, b, tolerance=1e-3):
    assert len(a) == len(b) and any(g.abs().sum() > 0 for g in a)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=tolerance, atol=1e-5)  # padding changes float sums


@pytest.mark.parametrize("dropout, reference_chunk, chunk, encoded", [
    (0.1, 3, 3, 32),  # dropout on: the reference encodes the same chunks, so masks come from the same RNG draws
    (0.0, 8, 3, 32),  # dropout off: any chunking gives the one-pass gradients
    (0.1, 8, 8, 24),  # each group in one chunk: the last keeps its graph, the first is replayed
])
def test_cached_gradients_equal_the_full_batch(tmp_path, tiny_mistral_dir, cranfield_pairs, dropout, reference_chunk,
                                               chunk, encoded):
    config = _config_file(tmp_path, tiny_mistral_dir, cranfield_pairs, dropout=dropout)
    pairs = _pairs(cranfield_pairs, 8)
    torch.manual_seed(5)
    reference = _full_batch_grads(prepared(config), pairs, chunk=reference_chunk)
    torch.manual_seed(5)
    cached = _cached_grads(prepared(config), pairs, chunk=chunk)
    assert cached[0] == pytest.approx(reference[0], rel=1e-5)
    _assert_same(cached[1], reference[1])
    assert cached[2] == encoded


@pytest.mark.parametrize("chunk", [2, 4])  # replayed chunks; one chunk per rank and group (graph kept)
def test_two_gloo_ranks_give_the_single_process_loss_and_gradients(tmp_path, tiny_mistral_dir, cranfield_pairs, chunk):
    config = _config_file(tmp_path, tiny_mistral_dir, cranfield_pairs, dropout=0.0)
    pairs = _pairs(cranfield_pairs, 8)
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = Path(__file__).with_name("gradcache_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-addr", "127.0.0.1", "--master-port", str(port), str(worker), config,
                             str(pairs_file), str(tmp_path / "ranks.pt"), str(chunk)], capture_output=True, text=True, env=env,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(tmp_path / "ranks.pt")
    single_loss, single_grads = _full_batch_grads(prepared(config), pairs, chunk=8)
    assert two["loss"] == pytest.approx(single_loss, rel=1e-5)
    _assert_same(two["grads"], single_grads)


class _SavedBytes:
    """Bytes of tensors that live autograd graphs hold for their backward pass, and the peak."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def hooks(self):
        tracker = self

        class Held:
            def __init__(self, tensor: torch.Tensor) -> None:
                # detached: holding an output tensor itself would tie its graph in a cycle
                self.tensor, self.size = tensor.detach(), tensor.numel() * tensor.element_size()
                tracker.live += self.size
                tracker.peak = max(tracker.peak, tracker.live)

            def __del__(self) -> None:
                tracker.live -= self.size

        return torch.autograd.graph.saved_tensors_hooks(Held, lambda held: held.tensor)


def test_gradient_caching_keeps_at_most_one_graph_alive(tmp_path, tiny_mistral_dir, cranfield_pairs):
    """Three groups that each fit one chunk (queries, positives, negatives): the saved
    activations at the peak are one chunk's, not three (measured against one encode alone)."""
    config = _config_file(tmp_path, tiny_mistral_dir, cranfield_pairs, dropout=0.0)
    pairs = _pairs(cranfield_pairs, 12)
    encoder = prepared(config)
    encode = encode_fn(encoder)
    groups = [[(True, q) for q, _ in pairs[:4]], [(False, d) for _, d in pairs[:4]],
              [(False, d) for _, d in pairs[4:8]]]
    one = _SavedBytes()
    with one.hooks():
        reps = encode(groups[1])
    assert one.live > 0
    del reps
    assert one.live == 0
    step = _SavedBytes()
    with step.hooks():
        cached_step(encode, groups, chunk_size=4, loss_fn=loss_fn3)
    assert step.live == 0
    assert one.peak < step.peak < 1.5 * one.peak, (step.peak, one.peak)


def loss_fn3(full):
    q, *documents = full
    return info_nce(q, torch.cat(documents)), {}
