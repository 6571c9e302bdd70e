"""Text -> token ids plus the mask of positions that are pooled, for every mode.

The mask is built piece by piece: each template piece and each copy of the text
is tokenised on its own and concatenated, so the pooled positions are known by
construction (never found by searching token ids).

- ``echo``: ``<s>`` + template with the text twice + ``</s>``; only the second
  copy's tokens are pooled. Each copy is truncated to ``max_length`` tokens.
- ``causal`` / ``bidirectional``: ``<s>`` + text; every text token is pooled.
- ``mlm``: the tokenizer's usual ``[CLS] text [SEP]``; every position is pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from splade_es.errors import InputError
from splade_es.model.config import PROMPT_SLOT, TEXT_SLOT, SpladeConfig


@dataclass(frozen=True)
class Encoded:
    """One text's model input: ``ids[i]`` is pooled when ``pooled[i]``."""

    ids: list[int]
    pooled: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Batch:
    """Right-padded tensors for one forward pass."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pool_mask: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.pool_mask.to(device))


class InputBuilder:
    """Builds model inputs for queries and documents under a :class:`SpladeConfig`."""

    def __init__(self, tokenizer, config: SpladeConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.pad_id = next(
            (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) if i is not None), 0
        )
        self._pieces = {is_query: self._template_pieces(is_query) for is_query in (True, False)}

    def _template_pieces(self, is_query: bool) -> list[list[int]]:
        """Token ids of the template text around the copies (echo only)."""
        if self.config.mode != "echo":
            return [[], [], []]
        template = self.config.query_template if is_query else self.config.document_template
        template = template.replace(PROMPT_SLOT, self.config.query_prompt)
        return [self.tokenize(piece) if piece else [] for piece in template.split(TEXT_SLOT)]

    def tokenize(self, text: str) -> list[int]:
        """The text's token ids alone (no template, no special tokens)."""
        return list(self.tokenizer(self.cased(text), add_special_tokens=False)["input_ids"])

    def cased(self, text: str) -> str:
        """``lowercase`` (sentence-transformers' ``do_lower_case``) applies before the tokenizer."""
        return text.lower() if self.config.lowercase else text

    def encode(self, texts: Sequence[str], is_query: bool) -> list[Encoded]:
        """Model inputs for non-empty texts (the encoder handles empty ones)."""
        if not texts:
            return []
        texts = [self.cased(text) for text in texts]
        if self.config.mode == "mlm":
            usual = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)["input_ids"]
            return [Encoded(list(ids), [True] * len(ids)) for ids in usual]
        return self.encode_ids(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"], is_query)

    def encode_ids(self, text_ids: Sequence[Sequence[int]], is_query: bool) -> list[Encoded]:
        """Model inputs for texts given as token ids (no special tokens), e.g. inputs of an exact
        length for benchmarks; each text is truncated to ``max_length`` as :meth:`encode` does.
        Decoder modes only: a masked LM's special tokens come from its tokenizer's own call."""
        if self.config.mode == "mlm":
            raise InputError("token-id input needs a decoder mode (echo, causal, bidirectional); mode is 'mlm'")
        head, middle, tail = self._pieces[is_query]
        return [self._decoder(list(ids)[: self.config.max_length], head, middle, tail) for ids in text_ids]

    def _decoder(self, text: list[int], head: list[int], middle: list[int], tail: list[int]) -> Encoded:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        if self.config.mode == "echo":
            eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
            parts = [(bos, False), (head, False), (text, False), (middle, False), (text, True), (tail, False), (eos, False)]
        else:
            parts = [(bos, False), (text, True)]
        ids: list[int] = []
        pooled: list[bool] = []
        for piece, is_pooled in parts:
            ids.extend(piece)
            pooled.extend([is_pooled] * len(piece))
        return Encoded(ids, pooled)

    def window_room(self) -> int:
        """The most text tokens one input holds: ``max_length``, less a masked LM's special tokens."""
        room = self.config.max_length
        if self.config.mode == "mlm":
            room -= sum(map(len, self._special_frame()))
        return room

    def window_size(self, chunk_tokens: int) -> int:
        """Text tokens per window: ``chunk_tokens``, checked against what one input holds."""
        room = self.window_room()
        if not 1 <= chunk_tokens <= room:
            raise InputError(f"chunk_tokens must be 1..{room} (the model's max_length {self.config.max_length}"
                             f"{' less its special tokens' if self.config.mode == 'mlm' else ''}), got {chunk_tokens}")
        return chunk_tokens

    def _special_frame(self) -> tuple[list[int], list[int]]:
        """The special ids a masked LM's tokenizer puts before and after one text (``[CLS]``,
        ``[SEP]`` for BERT), read off a probe so any tokenizer's own template is kept."""
        full = list(self.tokenizer("a")["input_ids"])
        text = self.tokenize("a")
        for start in range(len(full) - len(text) + 1):
            if full[start:start + len(text)] == text:
                return full[:start], full[start + len(text):]
        raise InputError("cannot tell this tokenizer's special tokens from the text's")

    def encode_windows(self, texts: Sequence[str], is_query: bool, chunk_tokens: int,
                       overlap: int) -> tuple[list[Encoded], list[int]]:
        """Model inputs for overlapping windows of ``chunk_tokens`` text tokens (``overlap`` shared
        between neighbours) instead of one truncated input per text; returns the inputs and, for
        each, the index of its text. A text that fits one window gets exactly :meth:`encode`'s input."""
        size = self.window_size(chunk_tokens)
        if not 0 <= overlap < size:
            raise InputError(f"chunk_overlap must be 0..{size - 1} (less than chunk_tokens), got {overlap}")
        step = size - overlap
        inputs: list[Encoded] = []
        owners: list[int] = []
        for owner, ids in enumerate(self.tokenizer([self.cased(t) for t in texts], add_special_tokens=False)["input_ids"]):
            ids = list(ids)
            starts = range(0, max(len(ids) - overlap, 1), step) if len(ids) > size else [0]
            for start in starts:
                window = ids[start:start + size]
                if self.config.mode == "mlm":
                    head, tail = self._special_frame()
                    inputs.append(Encoded([*head, *window, *tail], [True] * (len(head) + len(window) + len(tail))))
                else:
                    inputs.extend(self.encode_ids([window], is_query))
                owners.append(owner)
        return inputs, owners

    def collate(self, items: Sequence[Encoded]) -> Batch:
        """Right padding: positions and causal attention of real tokens are unaffected by it."""
        width = max(len(item) for item in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        pool = torch.zeros((len(items), width), dtype=torch.bool)
        for row, item in enumerate(items):
            n = len(item)
            input_ids[row, :n] = torch.tensor(item.ids, dtype=torch.long)
            attention[row, :n] = 1
            pool[row, :n] = torch.tensor(item.pooled, dtype=torch.bool)
        return Batch(input_ids, attention, pool)


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group indices longest-first so each padded batch holds at most ``batch_tokens`` tokens.

    Sorting by length keeps padding small; a text longer than the budget still
    gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * width > batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
