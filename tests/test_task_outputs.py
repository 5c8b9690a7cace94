"""Device-side decoding of the new tasks' outputs, with a real tokenizer (HF `tokenizers`, as on the device)."""
from __future__ import annotations

import numpy as np
import pytest

from device_bench.task_outputs import entities_from_words, labels_above_threshold, token_classification

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXT = "Yesterday Anna Smith flew to Johannesburg."


@pytest.fixture(scope="module")
def tokenizer(tiny_bundle):
    """The tiny model's WordPiece tokenizer as a bundle carries it to the device."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_bundle / "tokenizer" / "tokenizer.json"))
    tok.enable_padding(length=48, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=48)
    return tok


def _logits_for(encoding, tags_by_word: dict[str, list[str]]) -> np.ndarray:
    """Confident logits: every piece of a word gets the tag listed for that piece (or the word's last tag)."""
    logits = np.full((len(encoding.ids), len(LABELS)), -4.0)
    logits[:, 0] = 4.0  # O everywhere, padding and special tokens included
    piece_index: dict[int, int] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is None:
            continue
        start, end = encoding.offsets[position]
        piece = piece_index.get(word, 0)
        piece_index[word] = piece + 1
        for name, tags in tags_by_word.items():
            word_start = TEXT.index(name)
            if word_start <= start < word_start + len(name):
                tag = tags[min(piece, len(tags) - 1)]
                logits[position, :] = -4.0
                logits[position, LABELS.index(tag)] = 4.0
    return logits


def test_multi_piece_word_and_two_word_entity_keep_character_spans(tokenizer):
    encoding = tokenizer.encode(TEXT)
    pieces = [encoding.tokens[i] for i, w in enumerate(encoding.word_ids)
              if w is not None and TEXT.index("Johannesburg") <= encoding.offsets[i][0] < TEXT.index(".")]
    assert len(pieces) > 3, pieces  # the tiny vocab splits it into word pieces
    logits = _logits_for(encoding, {"Anna": ["B-PER"], "Smith": ["I-PER"], "Johannesburg": ["B-LOC", "I-LOC"]})
    words, entities = token_classification(TEXT, logits[None], encoding.offsets, encoding.word_ids, LABELS,
                                           encoding.attention_mask)
    assert [w.text for w in words] == ["Yesterday", "Anna", "Smith", "flew", "to", "Johannesburg", "."]
    city = next(w for w in words if w.text == "Johannesburg")
    # the word's pieces disagree (B-LOC on the first, I-LOC on the rest): the mean over pieces decides
    assert city.label == "I-LOC" and 0.0 < city.score < 1.0
    assert [(e.label, e.text, e.start, e.end) for e in entities] == [
        ("PER", "Anna Smith", 10, 20), ("LOC", "Johannesburg", 29, 41)]
    assert TEXT[29:41] == "Johannesburg" and all(0.9 < e.score <= 1.0 for e in entities[:1])


def test_padding_and_special_tokens_never_become_words(tokenizer):
    encoding = tokenizer.encode("Anna flew")
    logits = np.zeros((len(encoding.ids), len(LABELS)))
    logits[:, 1] = 5.0  # everything B-PER, padding too
    words, entities = token_classification("Anna flew", logits, encoding.offsets, encoding.word_ids, LABELS,
                                           encoding.attention_mask)
    assert [w.text for w in words] == ["Anna", "flew"]
    assert [e.text for e in entities] == ["Anna", "flew"]  # two B- tags: two entities


def test_plain_tags_merge_neighbours_and_bioes_ends():
    from device_bench.task_outputs import Word

    text = "New York and Paris"
    words = [Word("New", 0, 3, "LOC", 0.9), Word("York", 4, 8, "LOC", 0.7), Word("and", 9, 12, "O", 0.99),
             Word("Paris", 13, 18, "S-LOC", 0.8)]
    entities = entities_from_words(text, words)
    assert [(e.label, e.text) for e in entities] == [("LOC", "New York"), ("LOC", "Paris")]
    assert entities[0].score == pytest.approx(0.8)


def test_multi_label_every_label_above_its_threshold():
    labels = ["urgent", "billing", "travel", "spam"]
    chosen = labels_above_threshold(np.array([[0.91, 0.30, 0.55, 0.05]]), labels, [0.5, 0.25, 0.6, 0.5])
    assert chosen == [("urgent", pytest.approx(0.91)), ("billing", pytest.approx(0.30))]
    assert labels_above_threshold(np.array([0.4, 0.6, 0.5, 0.1]), labels) == [
        ("billing", pytest.approx(0.6)), ("travel", pytest.approx(0.5))]
    with pytest.raises(ValueError):
        labels_above_threshold(np.array([0.4, 0.6]), labels)


def test_device_decoding_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, device_bench.task_outputs; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
