"""mediapipe-text: the bundle's MediaPipe artifact, loaded as is by MediaPipe's own Python Tasks API on raw text,
agrees with the fp32 model on texts the pack never saw; USAGE.md carries the manifest's facts; a tokenizer
MediaPipe cannot take is refused in one line and the other targets still pack."""
from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("mediapipe")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import TINY_LABELS, save_tiny_model, save_tiny_of_family  # noqa: E402
from device_bench.manifest import STATUS_FAILED, STATUS_OK, Manifest  # noqa: E402
from packager.calib import builtin_sample  # noqa: E402
from packager.models import load_model  # noqa: E402
from packager.pack import pack_model  # noqa: E402
from device_bench.runners.mediapipe import STRIP_ACCENTS, MediaPipeTextRunner, strip_accents  # noqa: E402
from packager.usage import USAGE_NAME, javascript_module  # noqa: E402

SEQ = 32
FILE = "mediapipe_text.tflite"
#: texts outside the calibration set (builtin_sample()[:30]), one longer than SEQ tokens (MediaPipe cuts it)
UNSEEN = [
    "Please turn the music down a little, the baby is asleep.",
    "Is it going to snow in the mountains this weekend?",
    "I would like to transfer two hundred dollars to my savings account today.",
    "Book me a window seat on the earliest flight to Lisbon.",
    "what time does the pharmacy open",
    "Un café crème à Zürich, s'il vous plaît.",  # accents: the model's tokenizer strips them, MediaPipe's does not
    " ".join(builtin_sample()[40:46]),
]


def _reference(model_dir, task: str, texts: list[str]) -> np.ndarray:
    """The fp32 PyTorch export wrapper on the texts, tokenized by the model's own tokenizer at SEQ tokens."""
    loaded = load_model(str(model_dir), task)
    wrapper = loaded.task.make_wrapper(loaded.model)
    enc = loaded.tokenizer(texts, padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    with torch.inference_mode():
        return wrapper(torch.from_numpy(enc["input_ids"].astype(np.int32)),
                       torch.from_numpy(enc["attention_mask"].astype(np.int32))).numpy()


def _pack(model_dir, task: str, out, targets=("mediapipe-text",)):
    loaded = load_model(str(model_dir), task)
    return pack_model(loaded, out, list(targets), SEQ, builtin_sample()[:30], force=True)


@pytest.fixture(scope="module")
def embedder_bundle(tmp_path_factory):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("mp-emb") / "model")
    return model_dir, _pack(model_dir, "feature-extraction", tmp_path_factory.mktemp("mp-emb-bundle") / "b")


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("mp-cls") / "model", classifier=True)
    return model_dir, _pack(model_dir, "sequence-classification", tmp_path_factory.mktemp("mp-cls-bundle") / "b")


@pytest.mark.slow
def test_embedder_loads_in_mediapipe_and_agrees(embedder_bundle):
    from mediapipe.tasks.python import text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    model_dir, result = embedder_bundle
    entry = result.manifest.target("mediapipe-text")
    assert entry.status == STATUS_OK, entry.error
    assert entry.parity.passed and entry.parity.min_cosine >= 0.99
    assert entry.details["mediapipe_task"] == "TextEmbedder"
    path = result.bundle_dir / FILE
    assert zipfile.ZipFile(path).namelist() == ["vocab.txt"]  # the vocabulary rides in the metadata, no labels
    # uncased BERT strips accents: the file says so (its metadata), and the app strips them as USAGE.md shows
    assert entry.details["text_normalization"] == STRIP_ACCENTS
    assert MediaPipeTextRunner(path).normalization == STRIP_ACCENTS
    options = text.TextEmbedderOptions(base_options=BaseOptions(model_asset_path=str(path)), l2_normalize=False,
                                       quantize=False)
    with text.TextEmbedder.create_from_options(options) as embedder:
        got = np.stack([embedder.embed(strip_accents(t)).embeddings[0].embedding for t in UNSEEN])
    expected = _reference(model_dir, "feature-extraction", UNSEEN)
    cosines = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99, cosines
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)  # the model's own normalization, not MediaPipe's


@pytest.mark.slow
def test_classifier_carries_labels_and_agrees(classifier_bundle):
    from mediapipe.tasks.python import text
    from mediapipe.tasks.python.core.base_options import BaseOptions

    model_dir, result = classifier_bundle
    entry = result.manifest.target("mediapipe-text")
    assert entry.status == STATUS_OK, entry.error
    assert entry.parity.passed and entry.parity.top1_agreement >= 0.98
    path = result.bundle_dir / FILE
    assert zipfile.ZipFile(path).read("labels.txt").decode().split() == TINY_LABELS
    options = text.TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    with text.TextClassifier.create_from_options(options) as classifier:
        rows = []
        for t in UNSEEN:
            categories = classifier.classify(strip_accents(t)).classifications[0].categories
            assert sorted(c.category_name for c in categories) == sorted(TINY_LABELS)
            scores = np.zeros(len(TINY_LABELS), dtype=np.float32)
            for c in categories:
                scores[c.index] = c.score
            rows.append(scores)
    got, expected = np.stack(rows), _reference(model_dir, "sequence-classification", UNSEEN)
    # `edgepack run` (device_bench.predict) on this target feeds the raw texts to MediaPipe the same way
    from device_bench.predict import Bundle

    assert np.allclose(Bundle(result.bundle_dir, target="mediapipe-text").outputs(UNSEEN), got, atol=1e-6)
    # the scores are the model's logits (no softmax added): same argmax, same values up to int8 error
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.98
    assert np.abs(got - expected).max() < 0.05 * max(1.0, float(np.abs(expected).max()))


@pytest.mark.slow
def test_usage_md_matches_manifest(embedder_bundle, classifier_bundle):
    for _, result in (embedder_bundle, classifier_bundle):
        manifest = Manifest.load(result.bundle_dir)
        usage = (result.bundle_dir / USAGE_NAME).read_text()
        module = javascript_module(manifest)
        assert module is not None and module.strip() in usage  # the JavaScript block is the module, verbatim
        assert f'setModelAssetPath("{FILE}")' in usage  # Kotlin; Swift splits the name:
        assert f'forResource: "{FILE[:-7]}", ofType: "tflite"' in usage
        assert f"Input limit: {manifest.input_spec.seq_len} tokens" in usage
        assert 'const input = text.normalize("NFD").replace(/\\p{Mn}/gu, "");' in module  # accents, as the model
        assert 'Regex("\\\\p{Mn}+")' in usage and ".nonspacingMark" in usage
        if manifest.labels:
            assert f"export const LABELS = {json.dumps(manifest.labels)};" in module
            assert f".setMaxResults({len(manifest.labels)})" in usage
            assert "export async function classify(model, text" in module
        else:
            width = manifest.input_spec.outputs[0].shape[-1]
            assert f"export const EMBEDDING_SIZE = {width};" in module
            assert re.search(rf"// {width} floats", usage)
            assert "l2Normalize: false" in module and "export async function embed(model, text" in module


def _bpe_model(out):
    """A tiny RoBERTa whose tokenizer is byte-level BPE: MediaPipe's text tasks take WordPiece only."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(builtin_sample(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", cls_token="<s>", sep_token="</s>", model_max_length=128)
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    save_tiny_of_family("roberta", "feature-extraction", out, vocab=vocab)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
def test_bpe_tokenizer_refused_in_one_line_others_pack(tmp_path):
    model_dir = _bpe_model(tmp_path / "model")
    result = _pack(model_dir, "feature-extraction", tmp_path / "b", targets=("mediapipe-text", "tflite-fp32"))
    entries = {t.name: t for t in result.manifest.targets}
    assert entries["tflite-fp32"].status == STATUS_OK, entries["tflite-fp32"].error
    refused = entries["mediapipe-text"]
    assert refused.status == STATUS_FAILED and "\n" not in refused.error
    assert refused.error == ("MediaPipe cannot take this model: MediaPipe's text tasks take a WordPiece (BERT) "
                             "tokenizer; this model's is BPE")
    assert not (tmp_path / "b" / FILE).exists()
    usage = (tmp_path / "b" / USAGE_NAME).read_text()
    assert "no MediaPipe artifact" in usage and "| tflite-fp32 | tflite_fp32.tflite |" in usage
