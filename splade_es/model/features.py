"""Feature names: the reversible map between vocabulary ids and engine feature keys.

Engines need names that are non-empty and contain no ``.`` (``rank_feature``
splits ``field.feature`` at the last dot; ES ``sparse_vector`` rejects dots),
and people read them in Kibana. Rule set ``readable-v1``:

1. Escape: ``%`` -> ``%25``, ``.`` -> ``%2E``, whitespace and control
   characters -> ``%XX`` (their UTF-8 bytes). Nothing else changes.
2. Word marker (SentencePiece ``▁``, byte-level BPE ``Ġ``), when the vocabulary
   uses one: a piece that starts a word loses its marker (``▁Hello`` ->
   ``Hello``); a piece that continues a word gets ``##`` (``ello`` ->
   ``##ello``), as in BERT WordPiece and ELSER. Pieces made only of markers
   (runs of spaces) keep them. Byte pieces (``<0x0A>``) and special tokens keep
   their text. WordPiece vocabularies already follow the ``##`` convention and
   only get rule 1.
3. Uniqueness: an id whose name would be empty, or taken by a lower id, gets
   ``%%<id>`` appended. Rule 1 never produces ``%%``, so these cannot collide.

The map is a table built from the tokenizer, so ``name -> id`` is exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_MARKERS = ("\u2581", "\u0120")  # SentencePiece "▁", byte-level BPE "Ġ"
SUFFIX = "%%"


def escape(text: str) -> str:
    """Rule 1: make ``text`` safe as a feature key while staying readable."""
    out = []
    for ch in text:
        if ch == "%" or ch == "." or ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        else:
            out.append(ch)
    return "".join(out)


def _detect_marker(pieces: Sequence[str | None]) -> str | None:
    """The word-start marker a vocabulary uses, if at least 5 % of its pieces carry it."""
    for marker in _MARKERS:
        if sum(1 for p in pieces if p and p.startswith(marker)) >= 0.05 * len(pieces):
            return marker
    return None


def _base_name(piece: str | None, marker: str | None, special: bool) -> str:
    if not piece:
        return ""
    if special or marker is None or _BYTE_PIECE.match(piece):
        return escape(piece)
    if piece.startswith(marker):
        rest = piece[len(marker):]
        if rest and not rest.startswith(marker):
            return escape(rest)
        return escape(piece)
    return "##" + escape(piece)


class FeatureNamer:
    """Bidirectional id <-> feature-name table over a whole vocabulary."""

    def __init__(self, pieces: Sequence[str | None], special_ids: Iterable[int] = ()) -> None:
        special = set(special_ids)
        marker = _detect_marker(pieces)
        names: list[str] = []
        ids: dict[str, int] = {}
        for token_id, piece in enumerate(pieces):
            name = _base_name(piece, marker, token_id in special)
            if not name or name in ids:
                name = f"{name}{SUFFIX}{token_id}"
            names.append(name)
            ids[name] = token_id
        self._names = names
        self._ids = ids
        self.marker = marker

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int) -> FeatureNamer:
        """Names for ids ``0..vocab_size-1`` (the LM head's size, which may exceed the tokenizer's)."""
        known = min(vocab_size, len(tokenizer))
        pieces: list[str | None] = list(tokenizer.convert_ids_to_tokens(list(range(known))))
        pieces.extend([None] * (vocab_size - known))
        return cls(pieces, tokenizer.all_special_ids)

    def __len__(self) -> int:
        return len(self._names)

    def name(self, token_id: int) -> str:
        return self._names[token_id]

    def names(self, token_ids: Iterable[int]) -> list[str]:
        return [self._names[i] for i in token_ids]

    def id(self, name: str) -> int:
        """The token id of a feature name; KeyError names the unknown feature."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"unknown feature name {name!r}") from None
