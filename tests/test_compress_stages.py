"""Each compression stage on a tiny random BERT and a synthetic 4-intent data set.

The data set has one keyword per class hidden among shared filler words, so a
model that learns anything reaches high accuracy and the stages' effect on
accuracy is meaningful.
"""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from packager import pruned_bert  # noqa: F401  (registers the pruned config)
from packager.stages.distill.student import student_from_layers
from packager.stages.distill.train import distill
from packager.training.distillation import kd_loss
from packager.training.evaluate import accuracy, gzip_size_bytes, nonzero_params, predict_logits
from packager.stages.finetune.train import finetune
from packager.stages.prune.algorithm import linear_sparsity, prune
from packager.stages.trim_vocab.algorithm import trim_vocab
from packager.labelled_data import LabelledData, LabelledSplit
from packager.stages.distill.spec import DistillSpec, StudentSpec
from packager.stages.finetune.spec import FinetuneSpec
from packager.stages.prune.spec import PruneSpec, RecoverySpec
from packager.stages.trim_vocab.spec import TrimVocabSpec

SEQ_LEN = 16
KEYWORDS = {
    "weather": ["rain", "sunny", "forecast", "cloudy"],
    "music": ["song", "jazz", "album", "playlist"],
    "bank": ["balance", "transfer", "account", "deposit"],
    "travel": ["flight", "hotel", "airport", "booking"],
}
FILLER = ["please", "could", "you", "the", "my", "me", "for", "today", "now", "check", "tell", "about", "what",
          "is", "a", "some", "i", "want", "need", "show"]
UNUSED = [f"unused{i}" for i in range(60)]  # in the vocabulary, never in the data: trim_vocab drops them


def make_split(n: int, seed: int) -> LabelledSplit:
    rng = random.Random(seed)
    names = list(KEYWORDS)
    texts, labels = [], []
    for i in range(n):
        label = i % len(names)
        words = rng.sample(FILLER, 4) + [rng.choice(KEYWORDS[names[label]])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return LabelledSplit(texts, labels)


def make_data() -> LabelledData:
    return LabelledData(train=make_split(320, 1), validation=make_split(64, 2), test=make_split(64, 3),
                        labels=list(KEYWORDS))


def make_tokenizer():
    from transformers import BertTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters]
    tokens += FILLER + [w for ws in KEYWORDS.values() for w in ws] + UNUSED
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})


def make_model(vocab_size: int, num_labels: int = 4):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64, num_labels=num_labels,
                        attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread_quiet():
    """Tiny models gain nothing from threads, and on a shared 2-core box extra threads thrash.

    Training runs in fp32 here: the pruning-importance margins below were set on fp32-trained tiny teachers
    (bf16 autocast training is exercised by test_cross_tokenizer_distill and the recipe tests)."""
    from packager.training.common import PROGRESS_BARS, TRAIN_PRECISION

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    token = PROGRESS_BARS.set(False)
    precision = TRAIN_PRECISION.set("fp32")
    yield
    TRAIN_PRECISION.reset(precision)
    PROGRESS_BARS.reset(token)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> LabelledData:
    return make_data()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def teacher(tokenizer, data, tmp_path_factory):
    model = make_model(len(tokenizer))
    model, details = finetune(model, tokenizer, data, FinetuneSpec(epochs=10, lr=2e-3, batch_size=16),
                              seq_len=SEQ_LEN, work_dir=tmp_path_factory.mktemp("ft"), seed=0)
    assert details["best_val_accuracy"] >= 0.9
    return model


def _copy(model):
    return copy.deepcopy(model).eval()


@pytest.mark.slow
def test_finetune_learns_the_keywords(teacher, tokenizer, data):
    assert accuracy(teacher, tokenizer, data.test, SEQ_LEN) >= 0.9


def test_kd_loss_reduces_to_cross_entropy_and_vanishes_on_identical_logits():
    logits = torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(kd_loss(logits, logits.clone(), labels, alpha=1.0, temperature=4.0), ce)
    assert kd_loss(logits, logits.clone(), labels, alpha=0.0, temperature=4.0).abs() < 1e-6
    assert kd_loss(logits, torch.randn(8, 5), labels, alpha=0.0, temperature=4.0) > 0


def test_student_from_layers_copies_the_chosen_blocks(teacher):
    student = student_from_layers(_copy(teacher), [1, 3])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.bert.encoder.layer, student.bert.encoder.layer
    assert torch.equal(s[0].attention.self.query.weight, t[1].attention.self.query.weight)
    assert torch.equal(s[1].output.dense.weight, t[3].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_distill_to_half_the_layers(teacher, tokenizer, data, tmp_path):
    spec = DistillSpec(student=StudentSpec(layers=[1, 3]), temperature=4.0, alpha=0.5, epochs=2, lr=1e-3,
                       batch_size=16, hidden_weight=0.1)
    student, _, details = distill(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert student.config.num_hidden_layers == 2 and details["layer_map"] == [1, 3]
    assert details["teacher_logits_cached"] is False  # hidden-state matching runs the teacher live
    assert accuracy(student, tokenizer, data.test, SEQ_LEN) >= 0.85


def test_distill_from_config_with_cached_logits(teacher, tokenizer, data, tmp_path):
    spec = DistillSpec(student=StudentSpec(config={"num_hidden_layers": 1, "intermediate_size": 64}),
                       epochs=1, lr=1e-3, batch_size=16)
    student, _, details = distill(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert student.config.num_hidden_layers == 1 and student.config.intermediate_size == 64
    assert details["teacher_logits_cached"] is True


@pytest.mark.slow
def test_structured_prune_removes_heads_and_neurons_and_reloads(teacher, tokenizer, data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    spec = PruneSpec(method="structured", heads=0.25, ffn=0.5, importance_batches=8, batch_size=16,
                     recovery=RecoverySpec(epochs=1, lr=5e-4, batch_size=16))
    pruned, details = prune(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert sum(details["heads_after"]) == 12 and min(details["heads_after"]) >= 1
    assert details["ffn_after"] == 64 and pruned.config.intermediate_size == 64
    assert details["params_after"] < details["params_before"]
    layer0 = pruned.bert.encoder.layer[0]
    assert layer0.attention.self.query.out_features == details["heads_after"][0] * 16
    assert accuracy(pruned, tokenizer, data.test, SEQ_LEN) >= 0.85

    pruned.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", attn_implementation="eager")
    assert reloaded.config.model_type == "edgepack_pruned_bert"
    assert reloaded.config.layer_heads == details["heads_after"]
    texts = data.test.texts[:16]
    np.testing.assert_allclose(predict_logits(reloaded, tokenizer, texts, SEQ_LEN),
                               predict_logits(pruned, tokenizer, texts, SEQ_LEN), atol=1e-5)

    # a fresh process (as `edgepack pack --model saved` runs) loads the head-pruned folder too
    import subprocess
    import sys

    tokenizer.save_pretrained(tmp_path / "saved")
    code = ("from packager.models import load_model; "
            f"m = load_model({str(tmp_path / 'saved')!r}, 'sequence-classification'); print(m.model.config.layer_heads)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(details["heads_after"])


def test_ffn_only_pruning_keeps_a_stock_bert_config(teacher, tokenizer, data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    spec = PruneSpec(method="structured", ffn=0.25, importance_batches=4, batch_size=16, recovery=None)
    pruned, details = prune(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert pruned.config.model_type == "bert" and pruned.config.intermediate_size == 96
    pruned.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert type(reloaded).__name__ == "BertForSequenceClassification"


def test_importance_keeps_what_matters(teacher, tokenizer, data):
    """Keeping the most important FFN neurons changes the outputs far less than keeping the least important."""
    from packager.stages.prune.algorithm import importance_scores, rebuild

    heads, ffn = importance_scores(teacher, tokenizer, data, seq_len=SEQ_LEN, batches=8, batch_size=16, seed=0)
    all_heads = [list(range(len(h))) for h in heads]
    texts = data.validation.texts
    reference = predict_logits(teacher, tokenizer, texts, SEQ_LEN)

    def error(keep: list[list[int]]) -> float:
        return float(np.abs(predict_logits(rebuild(teacher, all_heads, keep), tokenizer, texts, SEQ_LEN) - reference).mean())

    best = [sorted(torch.topk(s, 32).indices.tolist()) for s in ffn]
    worst = [sorted(torch.topk(-s, 32).indices.tolist()) for s in ffn]
    assert error(best) < 0.5 * error(worst)


def test_magnitude_prune_reports_sparsity_honestly(teacher, tokenizer, data, tmp_path):
    model = _copy(teacher)
    before_nonzero, before_gzip = nonzero_params(model), gzip_size_bytes(model)
    spec = PruneSpec(method="magnitude", sparsity=0.6, recovery=RecoverySpec(epochs=1, lr=5e-4, batch_size=16))
    pruned, details = prune(model, tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert abs(linear_sparsity(pruned) - 0.6) < 0.01  # the recovery fine-tune kept the zeros
    assert details["params_after"] == details["params_before"]  # dense shapes are unchanged
    assert details["nonzero_params"] < before_nonzero
    assert details["gzip_mb_after"] * 1e6 < before_gzip
    assert not any(name.endswith("_orig") for name, _ in pruned.named_parameters())


@pytest.mark.slow
def test_movement_prune_learns_a_mask(teacher, tokenizer, data, tmp_path):
    spec = PruneSpec(method="movement", sparsity=0.5, epochs=2, lr=5e-4, score_lr=1e-2, batch_size=16)
    pruned, details = prune(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert abs(details["encoder_linear_sparsity"] - 0.5) < 0.02
    assert not any("parametrizations" in name for name, _ in pruned.named_parameters())
    assert accuracy(pruned, tokenizer, data.test, SEQ_LEN) >= 0.8


def test_trim_vocab_agrees_with_the_untrimmed_model(teacher, tokenizer, data, tmp_path):
    from transformers import AutoTokenizer

    model = _copy(teacher)
    reference = predict_logits(model, tokenizer, data.test.texts, SEQ_LEN)
    trimmed, new_tok, details = trim_vocab(model, tokenizer, data.train.texts, TrimVocabSpec(keep_ascii_chars=True))
    assert details["vocab_after"] < details["vocab_before"] == len(tokenizer)
    assert trimmed.get_input_embeddings().weight.shape[0] == details["vocab_after"] == trimmed.config.vocab_size
    new_tok.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(reloaded) == details["vocab_after"]
    np.testing.assert_allclose(predict_logits(trimmed, reloaded, data.test.texts, SEQ_LEN), reference, atol=1e-5)
    ids = reloaded("zebra rain")["input_ids"]
    assert max(ids) < details["vocab_after"]
    assert reloaded.convert_ids_to_tokens(ids)[1:7] == ["z", "##e", "##b", "##r", "##a", "rain"]  # unseen: characters
    bare, bare_tok, _ = trim_vocab(_copy(teacher), tokenizer, data.train.texts, TrimVocabSpec(keep_ascii_chars=False))
    assert bare_tok.convert_ids_to_tokens(bare_tok("zebra rain")["input_ids"])[1:3] == ["[UNK]", "rain"]
    # keep_top keeps the first regular ids (letters and ##letters here) even when the data never uses them
    top, top_tok, top_details = trim_vocab(_copy(teacher), tokenizer, data.train.texts, TrimVocabSpec(keep_top=52))
    assert top_details["vocab_after"] > len(bare_tok)
    assert top_tok.convert_ids_to_tokens(top_tok("zebra rain")["input_ids"])[1] == "z"


def test_distill_search_without_optuna_falls_back_with_a_message(teacher, tokenizer, data, tmp_path, monkeypatch):
    import builtins

    from packager.stages.distill.spec import SearchSpec

    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ModuleNotFoundError("No module named 'optuna'", name="optuna")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    spec = DistillSpec(student=StudentSpec(layers=[0]), epochs=1, lr=1e-3, batch_size=16, search=SearchSpec(trials=2))
    student, _, details = distill(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    assert details["search"].startswith("skipped: optuna is not installed")
    assert student.config.num_hidden_layers == 1


@pytest.mark.slow
def test_distill_search_with_optuna_tries_the_budget_within_the_ranges(teacher, tokenizer, data, tmp_path):
    pytest.importorskip("optuna")
    from packager.stages.distill.spec import SearchSpec

    search = SearchSpec(trials=2, alpha=[0.1, 0.9], temperature=[2.0, 6.0], epochs=[1, 2])
    spec = DistillSpec(student=StudentSpec(layers=[0]), epochs=1, lr=1e-3, batch_size=16, search=search)
    student, _, details = distill(_copy(teacher), tokenizer, data, spec, seq_len=SEQ_LEN, work_dir=tmp_path, seed=0)
    found = details["search"]
    assert found["trials"] == 2 and 0.0 <= found["best_val_accuracy"] <= 1.0
    best = found["best_params"]
    assert 0.1 <= best["alpha"] <= 0.9 and 2.0 <= best["temperature"] <= 6.0 and best["epochs"] in (1, 2)
    # the final student is trained with the winning parameters, and the details say so
    assert details["alpha"] == round(best["alpha"], 4) and details["epochs"] == best["epochs"]
    assert student.config.num_hidden_layers == 1
