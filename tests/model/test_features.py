"""Feature naming: reversible, unique, engine-safe and readable over whole vocabularies."""

from __future__ import annotations

import pytest

from splade_es.model.features import FeatureNamer, escape


def test_mistral_vocabulary_round_trips(mistral_tokenizer):
    namer = FeatureNamer.from_tokenizer(mistral_tokenizer, 32768)
    names = [namer.name(i) for i in range(32768)]
    assert len(set(names)) == 32768
    assert all(name and "." not in name for name in names)
    assert all(namer.id(name) == i for i, name in enumerate(names))


def test_mistral_names_are_readable(mistral_tokenizer):
    namer = FeatureNamer.from_tokenizer(mistral_tokenizer, 32768)
    by_piece = {piece: i for i, piece in enumerate(mistral_tokenizer.convert_ids_to_tokens(list(range(32768))))}
    assert namer.marker == "\u2581"
    assert namer.name(by_piece["\u2581Hello"]) == "Hello"  # word start: marker dropped
    assert namer.name(by_piece["ello"]) == "##ello"  # continuation: WordPiece style
    assert namer.name(by_piece["<0x0A>"]) == "<0x0A>"  # byte piece kept
    assert namer.name(by_piece["."]) == "##%2E"  # dots escaped
    assert namer.name(by_piece["\u2581"]) == "\u2581"  # a bare space marker stays visible
    assert namer.name(1) == "<s>"  # special tokens keep their text


def test_collisions_and_empty_pieces_get_id_suffix():
    # "▁##x" and "x" would both read "##x"; an unnamed id has no text at all.
    pieces = ["<s>", "\u2581the", "\u2581a", "\u2581##x", "x", None, "\u2581b"] + [f"\u2581w{i}" for i in range(20)]
    namer = FeatureNamer(pieces, special_ids=[0])
    assert namer.name(3) == "##x"
    assert namer.name(4) == "##x%%4"
    assert namer.name(5) == "%%5"
    assert [namer.id(namer.name(i)) for i in range(len(pieces))] == list(range(len(pieces)))


def test_wordpiece_vocabulary_is_kept_as_is():
    namer = FeatureNamer(["[CLS]", "flow", "##ing", "u.s.", "50%"])
    assert namer.marker is None
    assert [namer.name(i) for i in range(5)] == ["[CLS]", "flow", "##ing", "u%2Es%2E", "50%25"]


def test_escape_is_injective_on_tricky_text():
    samples = ["a.b", "a%2Eb", "a b", "a%20b", "tab\there", "%", "%25", "\u00a0"]
    escaped = [escape(s) for s in samples]
    assert len(set(escaped)) == len(samples)
    assert all("." not in e and " " not in e and "%%" not in e for e in escaped)


def test_unknown_feature_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="unknown feature name 'nope'"):
        FeatureNamer(["a", "b"]).id("nope")
