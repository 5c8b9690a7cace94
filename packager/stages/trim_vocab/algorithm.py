"""Vocabulary trimming: keep only the token ids the data uses, in the model and the tokenizer.

The word-embedding matrix is the largest tensor of small encoders (MiniLM-L6:
11.7M of 22.7M parameters). Rows never produced by the tokenizer on the task's
data are dead weight. The tokenizer's vocabulary is rewritten so the saved
tokenizer emits the new ids directly, for each kind of subword model alike
(``TRIMMERS``), and text whose original pieces are all kept tokenizes to exactly
the same pieces, so the trimmed and untrimmed models agree on it:

- WordPiece (BERT): greedy longest-match-first; a word that cannot be spelled
  with the kept pieces becomes ``[UNK]``.
- BPE (RoBERTa's and ModernBERT's byte-level): the merges producing a kept token
  are kept with their parts, recursively, and every single-character token (the
  byte alphabet) stays, so any text still encodes; BPE applies the lowest-ranked
  applicable merge at each step, and every merge it applied on the kept texts is
  still there, in the same order.
- Unigram (XLM-RoBERTa's SentencePiece): the best-scoring segmentation of a kept
  text uses kept pieces only, and removing other pieces cannot beat it.
"""
from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import torch

from ...errors import EdgepackError
from .spec import TrimVocabSpec


def used_ids(tokenizer, texts: list[str], batch_size: int = 1024) -> set[int]:
    seen: set[int] = set()
    for start in range(0, len(texts), batch_size):
        for ids in tokenizer(texts[start : start + batch_size], add_special_tokens=True)["input_ids"]:
            seen.update(ids)
    return seen


def _remap_processor(proc: dict[str, Any] | None, remap: dict[int, int]) -> None:
    """Rewrite special-token ids inside a post-processor description, in place."""
    if not proc:
        return
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for special in proc.get("special_tokens", {}).values():
            special["ids"] = [remap[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = proc[key]
            proc[key] = [token, remap[old]]
    elif kind == "Sequence":
        for sub in proc.get("processors", []):
            _remap_processor(sub, remap)
    elif kind not in (None, "ByteLevel"):
        raise EdgepackError(f"trim_vocab: unsupported tokenizer post-processor {kind!r}")


def _merge_pairs(merges: list[Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _close_bpe(model: dict[str, Any], keep: set[int]) -> set[int]:
    """``keep`` plus the base alphabet and, recursively, the parts of every merge producing a kept token."""
    vocab = model["vocab"]
    id_to_token = {i: t for t, i in vocab.items()}
    producers: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merge_pairs(model.get("merges", [])):
        producers.setdefault(a + b, []).append((a, b))
    closed = set(keep) | {i for t, i in vocab.items() if len(t) == 1}
    todo = [id_to_token[i] for i in closed if i in id_to_token]
    while todo:
        for pair in producers.get(todo.pop(), []):
            for part in pair:
                if part in vocab and vocab[part] not in closed:
                    closed.add(vocab[part])
                    todo.append(part)
    return closed


def _trim_wordpiece(model: dict[str, Any], kept: list[int]) -> None:
    id_to_token = {i: t for t, i in model["vocab"].items()}
    model["vocab"] = {id_to_token[old]: new for new, old in enumerate(kept) if old in id_to_token}
    if model.get("unk_token") not in model["vocab"]:
        raise EdgepackError(f"trim_vocab: the unknown token {model.get('unk_token')!r} would be dropped")


def _trim_bpe(model: dict[str, Any], kept: list[int]) -> None:
    id_to_token = {i: t for t, i in model["vocab"].items()}
    model["vocab"] = {id_to_token[old]: new for new, old in enumerate(kept) if old in id_to_token}
    as_strings = bool(model.get("merges")) and isinstance(model["merges"][0], str)
    pairs = [(a, b) for a, b in _merge_pairs(model.get("merges", []))
             if a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"]]
    model["merges"] = [f"{a} {b}" for a, b in pairs] if as_strings else [[a, b] for a, b in pairs]
    if model.get("unk_token") and model["unk_token"] not in model["vocab"]:
        raise EdgepackError(f"trim_vocab: the unknown token {model['unk_token']!r} would be dropped")


def _trim_unigram(model: dict[str, Any], kept: list[int]) -> None:
    remap = {old: new for new, old in enumerate(kept)}
    if model.get("unk_id") is not None:
        if model["unk_id"] not in remap:
            raise EdgepackError("trim_vocab: the unknown piece would be dropped")
        model["unk_id"] = remap[model["unk_id"]]
    model["vocab"] = [model["vocab"][old] for old in kept if old < len(model["vocab"])]  # not added tokens


#: tokenizers' model type -> (the ids that must be kept with the given ones, the vocabulary rewrite)
TRIMMERS: dict[str, tuple[Any, Any]] = {
    "WordPiece": (lambda model, keep: keep, _trim_wordpiece),
    "BPE": (_close_bpe, _trim_bpe),
    "Unigram": (lambda model, keep: keep, _trim_unigram),
}


def _tokenizer_state(tokenizer) -> tuple[dict[str, Any], tuple[Any, Any]]:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = state["model"].get("type")
    if kind not in TRIMMERS:
        raise EdgepackError(f"trim_vocab: supports {', '.join(TRIMMERS)} tokenizers, not {kind!r}")
    return state, TRIMMERS[kind]


def closed_ids(tokenizer, keep: set[int]) -> set[int]:
    """The ids to keep so that the kept texts still tokenize to the same pieces (BPE: the merges' parts too)."""
    state, (close, _) = _tokenizer_state(tokenizer)
    return close(state["model"], keep)


#: files of the slow / SentencePiece tokenizer that would describe the untrimmed vocabulary: not carried over,
#: so the trimmed folder loads from its tokenizer.json alone
UNTRIMMED_FILES = ("vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")


def trimmed_tokenizer(tokenizer, kept: list[int]):
    """A tokenizer whose vocabulary holds only ``kept`` (old ids), renumbered in order."""
    from transformers import AutoTokenizer

    state, (_, rewrite) = _tokenizer_state(tokenizer)
    old_tokens = tokenizer.convert_ids_to_tokens(kept)
    remap = {old: new for new, old in enumerate(kept)}
    rewrite(state["model"], kept)
    for added in state.get("added_tokens", []):
        added["id"] = remap[added["id"]]
    _remap_processor(state.get("post_processor"), remap)
    if state.get("padding"):
        state["padding"]["pad_id"] = remap[state["padding"]["pad_id"]]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name in UNTRIMMED_FILES:
            (Path(tmp) / name).unlink(missing_ok=True)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False))
        vocab_txt = Path(tmp) / "vocab.txt"
        if vocab_txt.exists():  # slow-tokenizer vocabulary, kept consistent with tokenizer.json
            vocab_txt.write_text("".join(t + "\n" for t in old_tokens), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(tmp)
    probe = new.convert_tokens_to_ids(old_tokens[-1])
    if probe != len(kept) - 1 or len(new) != len(kept):
        raise EdgepackError("trim_vocab: the reloaded tokenizer does not use the trimmed vocabulary")
    return new


def char_ids(tokenizer) -> set[int]:
    """Ids of the single printable ASCII characters and their continuation forms (``##a``)."""
    vocab = tokenizer.get_vocab()
    chars = [c for c in string.printable if not c.isspace()]
    return {vocab[t] for c in chars for t in (c, f"##{c}") if t in vocab}


def regular_ids(tokenizer) -> list[int]:
    """Vocabulary ids in order, without specials and BERT's ``[unusedN]`` placeholders."""
    specials = set(tokenizer.all_special_ids)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return [i for t, i in vocab if i not in specials and not (t.startswith("[unused") and t.endswith("]"))]


def trim_vocab(model, tokenizer, texts: list[str], spec: TrimVocabSpec) -> tuple[Any, Any, dict[str, Any]]:
    """Keep the ids seen in ``texts`` + specials (+ ASCII characters); returns (model, tokenizer, details)."""
    old_size = model.get_input_embeddings().weight.shape[0]
    keep = used_ids(tokenizer, texts) | set(tokenizer.all_special_ids)
    keep |= {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.get_added_vocab()}
    seen = len(keep)
    if spec.keep_ascii_chars:
        keep |= char_ids(tokenizer)
    if spec.keep_top:
        keep |= set(regular_ids(tokenizer)[: spec.keep_top])
    keep = closed_ids(tokenizer, keep)
    kept = sorted(i for i in keep if 0 <= i < old_size)
    new_tokenizer = trimmed_tokenizer(tokenizer, kept)

    old_emb = model.get_input_embeddings()
    index = torch.as_tensor(kept, dtype=torch.long)
    pad = new_tokenizer.pad_token_id
    new_emb = torch.nn.Embedding(len(kept), old_emb.embedding_dim, padding_idx=pad)
    with torch.no_grad():
        new_emb.weight.copy_(old_emb.weight[index])
    model.set_input_embeddings(new_emb)
    model.config.vocab_size = len(kept)
    if pad is not None:
        model.config.pad_token_id = pad
    details = {"vocab_before": int(old_size), "vocab_after": len(kept), "seen_in_data": seen,
               "ascii_chars_kept": bool(spec.keep_ascii_chars), "keep_top": spec.keep_top,
               "splits": list(spec.splits),
               "embedding_params_removed": int((old_size - len(kept)) * old_emb.embedding_dim)}
    return model, new_tokenizer, details
