"""Distillation into a pretrained student with its own tokenizer, teacher-labelled augmentation, and the refusals.

The teacher (tiny random BERT, word-level vocabulary) and the student (smaller tiny BERT whose
vocabulary splits the class keywords into pieces: another size, other ids) never share a token id,
so only the raw text links them — as with an MPNet teacher and a MiniLM student.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from device_bench.manifest import Manifest
from packager.stages.distill.augment import copy_texts, splice_texts, word_strings
from packager.errors import EdgepackError
from packager.labelled_data import LabelledData, LabelledSplit
from packager.recipe.spec import load_recipe
from packager.stages.distill.spec import AugmentSpec, DistillSpec, StudentSpec

KEYWORDS = {"weather": ["rain", "sunny", "forecast"], "music": ["song", "jazz", "album"],
            "bank": ["balance", "transfer", "deposit"], "travel": ["flight", "hotel", "airport"]}
FILLER = ["please", "could", "you", "the", "my", "me", "for", "today", "now", "check", "tell", "what", "is", "a"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    names = list(KEYWORDS)
    rows = []
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(FILLER, 3) + [rng.choice(KEYWORDS[label])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "intent": label})
    return rows


#: a recipe's data block for the splits ``write_splits`` writes (paths relative to the recipe's folder)
SPLITS_DATA = {"train": "data/train.jsonl", "validation": "data/val.jsonl", "test": "data/test.jsonl",
               "label_column": "intent"}


def write_splits(root: Path, train: int, held_out: int) -> Path:
    """Keyword-intent train/val/test JSONL files under ``root/data`` (``SPLITS_DATA`` names them)."""
    data = root / "data"
    data.mkdir()
    for name, n, seed in (("train", train, 1), ("val", held_out, 2), ("test", held_out, 3)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(n, seed)))
    return data


def _save_bert(folder: Path, tokens: list[str], *, hidden: int, heads: int, classifier: bool, seed: int) -> Path:
    from transformers import (BertConfig, BertForSequenceClassification, BertModel, BertTokenizer)

    tokens = list(dict.fromkeys(tokens))  # a word that is also a letter or a piece ("a", "for") once
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokens), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    (BertForSequenceClassification(config) if classifier else BertModel(config)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Teacher without a task head (fine-tuned by the recipe), a student with its own tokenizer, data files."""
    root = tmp_path_factory.mktemp("xtok")
    teacher_tokens = SPECIALS + LETTERS + [f"##{c}" for c in LETTERS] + FILLER + [w for ws in KEYWORDS.values() for w in ws]
    _save_bert(root / "teacher", teacher_tokens, hidden=64, heads=4, classifier=False, seed=0)
    # the student's vocabulary: other order, keywords in two pieces ("rai" "##n"), unused words trim_vocab drops
    pieces = sorted({p for ws in KEYWORDS.values() for w in ws for p in (w[:3], "##" + w[3:]) if len(w) > 3} |
                    {w for ws in KEYWORDS.values() for w in ws if len(w) <= 3})
    student_tokens = (SPECIALS + [f"##{c}" for c in LETTERS] + LETTERS + pieces + sorted(FILLER)
                      + [f"spare{i}" for i in range(40)])
    _save_bert(root / "student", student_tokens, hidden=32, heads=2, classifier=False, seed=1)
    data = write_splits(root, 200, 48)
    (data / "more.txt").write_text("".join(r["text"] + "\n" for r in _rows(40, 4)))
    return root


def _recipe(root: Path, distill: dict, **extra) -> Path:
    raw = {"model": str(root / "teacher"), "task": "sequence-classification",
           "data": {**SPLITS_DATA, **extra.pop("data", {})},
           "seq_len": 16, "threads": 1, "calib_samples": 24, "targets": ["onnx-int8"],
           "stages": [{"finetune": {"epochs": 8, "lr": 2.0e-3, "batch_size": 16}}, {"distill": distill},
                      *extra.pop("after", [])], **extra}
    path = root / f"recipe-{len(list(root.glob('recipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_distils_into_a_student_with_its_own_tokenizer_and_ships_it(workspace, tmp_path, capsys):
    from transformers import AutoTokenizer

    from packager.training.common import resolve_precision
    from packager.cli.recipe import pack_from_recipe

    distill = {"student": {"model": str(workspace / "student")}, "augment": {"copies": 2}, "epochs": 6,
               "lr": 3.0e-3, "batch_size": 16, "temperature": 2, "alpha": 0.5, "sentence_weight": 0.5,
               "sentence_loss": "cosine"}
    path = _recipe(workspace, distill, data={"unlabeled": "data/more.txt"}, after=[{"trim_vocab": {}}],
                   gate={"max_accuracy_drop": 0.3})
    out = tmp_path / "bundle"
    assert pack_from_recipe(path, out, force=False, archive=False, progress=False) == 0
    table = capsys.readouterr().err
    manifest = Manifest.load(out)
    stages = [r["stage"] for r in manifest.stages]
    assert stages == ["input", "finetune", "teacher", "student alone", "distill", "trim_vocab", "target onnx-int8",
                      "gate"]
    rows = {r["stage"]: r for r in manifest.stages}
    assert rows["finetune"]["test_accuracy"] >= 0.9
    assert rows["teacher"]["test_accuracy"] == rows["finetune"]["test_accuracy"]
    distilled = rows["distill"]
    assert distilled["test_accuracy"] >= 0.75  # chance is 0.25
    d = distilled["details"]
    assert d["student_tokenizer"].startswith("its own (teacher vocabulary")
    assert d["transfer_set"] == {"train": 200, "unlabeled": 40, "augmented": 400}
    # the sentence objective on every transfer text, against the teacher's 64-wide vectors; the student stays 32 wide
    assert d["sentence"] == {"weight": 0.5, "loss": "cosine", "teacher_dim": 64, "texts": 640,
                             "projection": "trained with the student, not saved"}
    assert "sentence cosine ×0.5" in distilled["description"]
    precision, device = resolve_precision()
    assert d["device"] == device == "cpu"
    assert d["precision"] == ("bf16 autocast" if precision == "bf16" else "fp32")
    assert "own tokenizer" in distilled["description"] and "student alone" in table
    assert rows["student alone"]["details"]["epochs"] == 6 and rows["student alone"]["test_accuracy"] is not None
    # the bundle carries the student's (trimmed) tokenizer and the labels
    student_vocab = AutoTokenizer.from_pretrained(workspace / "student").get_vocab()
    shipped = AutoTokenizer.from_pretrained(out / "tokenizer").get_vocab()
    assert set(shipped) < set(student_vocab) and "rai" in shipped and "rain" not in shipped
    assert not any(t.startswith("spare") for t in shipped)
    trimmed = rows["trim_vocab"]["details"]
    assert trimmed["vocab_before"] == len(student_vocab) and trimmed["vocab_after"] == len(shipped)
    assert manifest.model.vocab_size == len(shipped) and manifest.model.hidden_size == 32
    assert manifest.labels == sorted(KEYWORDS)
    (target,) = manifest.targets
    assert target.status == "ok" and target.parity.accuracy >= 0.7
    gate = rows["gate"]
    assert gate["details"]["passed"] and set(gate["details"]["distillation"]) == {"teacher", "student alone", "distilled"}
    assert "distillation" in gate["description"] and " pt)" in gate["description"]


def test_augmentation_is_teacher_labelled_counted_and_seeded(workspace):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from packager.stages.distill.train import transfer_set

    texts = [r["text"] for r in _rows(12, 7)]
    spec = AugmentSpec(copies=3, word_dropout=0.2, swap=0.2, replace=0.2)
    variants = copy_texts(texts, spec, seed=5)
    assert len(variants) == 3 * len(texts)
    assert variants == copy_texts(texts, spec, seed=5)
    assert variants != copy_texts(texts, spec, seed=6)
    assert sum(v != texts[i // 3] for i, v in enumerate(variants)) >= 0.9 * len(variants)
    vocabulary = {w for t in texts for w in t.split()}
    assert {w for v in variants for w in v.split()} <= vocabulary  # replacements come from the data's own words

    teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher", num_labels=4).eval()
    tokenizer = AutoTokenizer.from_pretrained(workspace / "teacher")
    data = LabelledData(train=LabelledSplit(texts, [i % 4 for i in range(12)]), labels=list(KEYWORDS),
                        unlabeled=["what is the forecast", "play some jazz"])
    split, logits, _vectors, counts = transfer_set(teacher, tokenizer, data, DistillSpec(augment=spec), seq_len=16, seed=5)
    assert counts == {"train": 12, "unlabeled": 2, "augmented": 36}
    assert len(split) == logits.shape[0] == 50 and split.texts[14:] == variants
    assert split.labels[:12] == data.train.labels  # labelled rows keep their labels ...
    assert split.labels[12:] == [int(i) for i in logits[12:].argmax(axis=1)]  # ... the rest take the teacher's

    # splices: the start of one text, the end of another; added after the copies, which stay as they were
    spliced_spec = dataclasses.replace(spec, splice=2)
    spliced = splice_texts(texts, 2, seed=5)
    assert len(spliced) == 2 * len(texts) and spliced == splice_texts(texts, 2, seed=5)
    for i, text in enumerate(spliced):
        source = texts[i // 2].split()
        assert text not in texts and text.split()[0] == source[0]  # begins with its own text's first word ...
        assert any(text.endswith(" " + other.split()[-1]) for other in texts if other != texts[i // 2])  # ... ends another's
    split, logits, _vectors, counts = transfer_set(teacher, tokenizer, data, DistillSpec(augment=spliced_spec),
                                                   seq_len=16, seed=5)
    assert counts == {"train": 12, "unlabeled": 2, "augmented": 36, "spliced": 24}
    assert split.texts[14:50] == variants and split.texts[50:] == spliced
    assert split.labels[50:] == [int(i) for i in logits[50:].argmax(axis=1)]

    # word strings: each as many words as its text, every word one of the data's, none a training text; added last,
    # the copies and splices staying as they were
    strings = word_strings(texts, 2, seed=5)
    assert len(strings) == 2 * len(texts) and strings == word_strings(texts, 2, seed=5) != word_strings(texts, 2, seed=6)
    assert [len(s.split()) for s in strings] == [len(texts[i // 2].split()) for i in range(len(strings))]
    assert {w for s in strings for w in s.split()} <= vocabulary and not set(strings) & set(texts)
    split, logits, _vectors, counts = transfer_set(teacher, tokenizer, data, DistillSpec(
        augment=dataclasses.replace(spliced_spec, words=2)), seq_len=16, seed=5)
    assert counts == {"train": 12, "unlabeled": 2, "augmented": 36, "spliced": 24, "word strings": 24}
    assert split.texts[14:50] == variants and split.texts[50:74] == spliced and split.texts[74:] == strings
    assert split.labels[74:] == [int(i) for i in logits[74:].argmax(axis=1)]


def test_hidden_state_matching_across_tokenizers_is_refused_in_one_line(workspace, tmp_path, capsys):
    from packager.cli import main

    distill = {"student": {"model": str(workspace / "student")}, "hidden_weight": 1.0}
    with pytest.raises(SystemExit) as exit_info:
        main(["pack", "--recipe", str(_recipe(workspace, distill)), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any(line.startswith("› measure") for line in lines)  # refused before any training or measuring
    errors = [line for line in lines if "error" in line]
    assert errors == [lines[-1]] and lines[-1].startswith(
        "edgepack: error: recipe distill.hidden_weight: hidden-state matching compares token positions, but the "
        "student tokenizes differently from the teacher (teacher vocabulary 82, student 130)")
    assert not (tmp_path / "out").exists()


def test_hidden_state_matching_across_hidden_sizes_is_refused(workspace):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from packager.stages.distill.train import distill

    teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher", num_labels=4).eval()
    tokenizer = AutoTokenizer.from_pretrained(workspace / "teacher")
    data = LabelledData(train=LabelledSplit(["rain today"] * 4, [0, 1, 2, 3]), labels=list(KEYWORDS))
    spec = DistillSpec(student=StudentSpec(config={"hidden_size": 32, "num_attention_heads": 2}), hidden_weight=1.0)
    with pytest.raises(EdgepackError, match=r"^recipe distill.hidden_weight: hidden-state matching needs the same "
                                            r"hidden size \(teacher 64, student 32\)$"):
        distill(teacher, tokenizer, data, spec, seq_len=16, work_dir=Path("unused"))


@pytest.mark.slow
def test_search_prunes_trials_and_says_what_it_tried(workspace, tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from packager.stages.distill import search as distill_search
    from packager.stages.distill import train as distill_module
    from packager.training.common import PROGRESS_BARS
    from packager.stages.distill.spec import SearchSpec
    from packager.cli.recipe import search_tables
    from packager.training.evaluate import StageRow

    class PruneAllButTheFirst(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number >= 1

    monkeypatch.setattr(distill_search, "_pruner", lambda optuna, name: PruneAllButTheFirst())
    teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher", num_labels=4).eval()
    tokenizer = AutoTokenizer.from_pretrained(workspace / "teacher")
    rows = _rows(48, 9)
    split = LabelledSplit([r["text"] for r in rows], [sorted(KEYWORDS).index(r["intent"]) for r in rows])
    data = LabelledData(train=split, validation=split.head(16), labels=sorted(KEYWORDS))
    search = SearchSpec(trials=3, epochs=[2, 2], lr=[1e-4, 1e-3])
    spec = DistillSpec(student=StudentSpec(model=str(workspace / "student")), batch_size=16, search=search,
                       student_alone=False)
    token = PROGRESS_BARS.set(False)
    try:
        student, student_tokenizer, details = distill_module.distill(teacher, tokenizer, data, spec, seq_len=16,
                                                                     work_dir=tmp_path, seed=0)
    finally:
        PROGRESS_BARS.reset(token)
    found = details["search"]
    assert [t["state"] for t in found["tried"]] == ["complete", "pruned", "pruned"] and found["pruned"] == 2
    assert [t["epochs_run"] for t in found["tried"]] == [2, 1, 1]  # a pruned trial stopped after its first epoch
    assert all(1e-4 <= t["lr"] <= 1e-3 for t in found["tried"]) and details["lr"] == float(f'{found["best_params"]["lr"]:.4g}')
    assert found["final"] == "the best trial's student (not trained again)"
    assert len(student_tokenizer) != len(tokenizer) and student.config.vocab_size == len(student_tokenizer)
    assert next(student.parameters()).device.type == "cpu" and not student.training
    (table,) = search_tables([StageRow(stage="distill", description="", params=0, fp32_mb=0.0, details=details)])
    assert table.row_count == 3 and "2 stopped early" in str(table.title)
    assert list(table.columns[-1].cells) == ["complete (best)", "pruned", "pruned"]


def test_unlabeled_texts_from_a_column_and_the_recipe_checks(workspace, tmp_path):
    from packager.recipe.spec import RecipeError
    from packager.recipe.run import load_recipe_data

    (workspace / "data" / "pool.csv").write_text("utterance,source\nplay some jazz,log\ncheck my balance,log\n")
    recipe = load_recipe(_recipe(workspace, {"student": {"model": "builtin"}},
                                 data={"unlabeled": "data/pool.csv", "unlabeled_column": "utterance"}))
    assert load_recipe_data(recipe).unlabeled == ["play some jazz", "check my balance"]
    bad_column = load_recipe(_recipe(workspace, {"student": {"model": "builtin"}}, data={"unlabeled": "data/pool.csv"}))
    with pytest.raises(EdgepackError, match=r"^recipe data.unlabeled: pool.csv has no column 'text'"):
        load_recipe_data(bad_column)
    path = _recipe(workspace, {"augment": {"copies": 0}})
    with pytest.raises(RecipeError, match=r"^recipe stages\[1\].distill.augment.copies: must be at least 1 \(or 0 with splice or words\)$"):
        load_recipe(path)
    path = _recipe(workspace, {"search": {"pruner": "hyper"}})
    with pytest.raises(RecipeError, match=r"^recipe stages\[1\].distill.search.pruner: 'hyper' is not one of"):
        load_recipe(path)
    with pytest.raises(RecipeError, match=r"^recipe precision: 'fp8' is not one of auto, bf16, fp32$"):
        load_recipe(_recipe(workspace, {}, precision="fp8"))


def test_trim_vocab_keeps_the_tokens_of_the_unlabeled_texts_a_student_learned_from(workspace, tmp_path):
    """``splits: [train, unlabeled]``: words only the unlabeled texts use stay whole (the student learned them)."""
    from transformers import AutoModel, AutoTokenizer

    from packager.labelled_data import LabelledData, LabelledSplit
    from packager.recipe.spec import RecipeError
    from packager.stages import STAGES, StageContext

    tokenizer = AutoTokenizer.from_pretrained(workspace / "student")
    rows = _rows(20, 5)
    data = LabelledData(train=LabelledSplit([r["text"] for r in rows], [0] * len(rows)), labels=["x"],
                        unlabeled=["spare3 spare7 please"])
    ctx = StageContext(data=data, seq_len=16, seed=0, work_dir=tmp_path)
    kept = {}
    for splits in (["train"], ["train", "unlabeled"]):
        stage = STAGES["trim_vocab"].parse({"splits": splits}, "stages[0].trim_vocab")
        out = stage.run(AutoModel.from_pretrained(workspace / "student"), tokenizer, ctx)
        kept[len(splits)] = set(out.tokenizer.get_vocab())
    assert {"spare3", "spare7"} <= kept[2] and not {"spare3", "spare7"} & kept[1]
    assert kept[2] - kept[1] == {"spare3", "spare7"}
    # the recipe must then give data.unlabeled
    path = _recipe(workspace, {"student": {"model": "builtin"}}, after=[{"trim_vocab": {"splits": ["unlabeled"]}}])
    with pytest.raises(RecipeError, match=r"^recipe data.unlabeled: trim_vocab keeps the tokens of this split"):
        load_recipe(path)


def test_sentence_objective_pulls_the_projected_student_toward_the_teachers_vectors(workspace, tmp_path):
    """A student with another tokenizer regresses the teacher's pooled vectors through a projection it trains;
    the projection never becomes part of the student."""
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from packager.training.common import PROGRESS_BARS, mean_pooled
    from packager.training.distillation import SentenceTarget, train_student
    from packager.training.evaluate import gather_outputs

    teacher = AutoModelForSequenceClassification.from_pretrained(workspace / "teacher", num_labels=4).eval()
    teacher_tokenizer = AutoTokenizer.from_pretrained(workspace / "teacher")
    student_tokenizer = AutoTokenizer.from_pretrained(workspace / "student")
    rows, held_out = _rows(96, 11), _rows(32, 12)
    names = sorted(KEYWORDS)
    data = LabelledData(train=LabelledSplit([r["text"] for r in rows], [names.index(r["intent"]) for r in rows]),
                        labels=names)
    logits, vectors = gather_outputs(teacher, teacher_tokenizer, data.train.texts, 16)
    assert vectors.shape == (96, 64)  # the teacher's width, from its own tokenization of each text
    one = teacher_tokenizer(data.train.texts[5], return_tensors="pt")
    with torch.no_grad():
        alone = mean_pooled(teacher(**one, output_hidden_states=True).hidden_states[-1], one["attention_mask"])
    np.testing.assert_allclose(vectors[5], alone[0].numpy(), atol=1e-5)

    def student_vectors(student, projection, texts):
        enc = student_tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = student(**enc, output_hidden_states=True).hidden_states[-1]
            return projection(mean_pooled(hidden, enc["attention_mask"])).numpy()

    held_texts = [r["text"] for r in held_out]
    _, target = gather_outputs(teacher, teacher_tokenizer, held_texts, 16)
    torch.manual_seed(3)
    start = torch.nn.Linear(32, 64)

    def distance(student, projection) -> float:
        """Mean squared distance of the projected student vectors to the teacher's, on texts training never saw."""
        return float(((student_vectors(student.eval(), projection, held_texts) - target) ** 2).mean())

    before = distance(AutoModelForSequenceClassification.from_pretrained(workspace / "student", num_labels=4), start)
    token = PROGRESS_BARS.set(False)
    try:
        trained = {}
        for weight in (1.0, 0.0):
            student = AutoModelForSequenceClassification.from_pretrained(workspace / "student", num_labels=4)
            keys = set(student.state_dict())
            projection = copy.deepcopy(start)
            trained[weight] = train_student(None, student, student_tokenizer, data, alpha=0.5, temperature=2.0,
                                            epochs=6, lr=3.0e-3, batch_size=16, seq_len=16,
                                            work_dir=tmp_path / str(weight), seed=0, teacher_logits=logits,
                                            sentence=SentenceTarget(weight, "mse", vectors, projection))
            assert set(trained[weight][0].state_dict()) == keys  # no projection weights in the saved student
    finally:
        PROGRESS_BARS.reset(token)
    student, trainer = trained[1.0]
    assert trained[0.0][1].projection is None and not trained[0.0][1].sentence_losses  # weight 0: off
    losses = trainer.sentence_losses
    assert len(losses) == 6 * 6 and np.mean(losses[-6:]) < 0.3 * np.mean(losses[:6])
    assert trainer.projection is not start and next(trainer.projection.parameters()).device.type == "cpu"
    after = distance(student, trainer.projection)
    logits_only = distance(trained[0.0][0], start)  # the logit loss alone leaves the vectors where they were
    assert after < 0.25 * before and logits_only > 0.5 * before, (before, after, logits_only)


def test_sentence_weight_is_declared_once_checked_and_tuned(workspace):
    from packager.recipe.spec import RecipeError
    from packager.stages import STAGES

    knobs = {k.option: k for k in STAGES["distill"].search_space}
    assert knobs["sentence_weight"].kind == "float" and knobs["sentence_weight"].low == 0.0
    recipe = load_recipe(_recipe(workspace, {"student": {"model": str(workspace / "student")},
                                             "sentence_weight": 0.5, "sentence_loss": "cosine"}))
    spec = recipe.stages[1].spec
    assert (spec.sentence_weight, spec.sentence_loss) == (0.5, "cosine")
    with pytest.raises(RecipeError, match=r"^recipe stages\[1\].distill.sentence_loss: 'l1' is not one of mse, cosine$"):
        load_recipe(_recipe(workspace, {"sentence_loss": "l1"}))
    with pytest.raises(RecipeError, match=r"^recipe stages\[1\].distill.sentence_weight"):
        load_recipe(_recipe(workspace, {"sentence_weight": -1}))


def test_augment_splice_and_words_from_the_recipe_and_their_checks(workspace):
    """``splice`` or ``words`` alone makes a transfer set (copies 0); a negative count is refused by its key (copies 0
    alone: the recipe test above)."""
    from packager.recipe.spec import RecipeError

    recipe = load_recipe(_recipe(workspace, {"augment": {"copies": 0, "splice": 2}}))
    (spec,) = [stage.spec for stage in recipe.stages if isinstance(stage.spec, DistillSpec)]
    assert spec.augment == AugmentSpec(copies=0, splice=2)
    with pytest.raises(RecipeError, match=r"^recipe stages\[1\].distill.augment.splice: must be 0 or more$"):
        load_recipe(_recipe(workspace, {"augment": {"splice": -1}}))
    recipe = load_recipe(_recipe(workspace, {"augment": {"copies": 0, "words": 1}}))
    (spec,) = [stage.spec for stage in recipe.stages if isinstance(stage.spec, DistillSpec)]
    assert spec.augment == AugmentSpec(copies=0, words=1)
    with pytest.raises(RecipeError, match=r"^recipe stages\[1\].distill.augment.words: must be 0 or more$"):
        load_recipe(_recipe(workspace, {"augment": {"words": -1}}))


def test_a_transfer_set_s_key_outlives_fields_added_to_the_spec():
    """Transfer sets are cached by their augment spec; a field appended later at its default (``splice``, then
    ``words``) must not rename the sets labelled before it existed (a base-size teacher relabels for half an hour)."""
    from packager.records import record_key

    before_splice = "AugmentSpec(copies=4, word_dropout=0.1, swap=0.1, replace=0.1)"
    assert record_key(AugmentSpec(copies=4)) == before_splice
    assert record_key(AugmentSpec(copies=4, splice=2)) == before_splice[:-1] + ", splice=2)"
    assert record_key(AugmentSpec(copies=4, words=1)) == before_splice[:-1] + ", splice=0, words=1)"
    assert record_key(AugmentSpec(copies=4, splice=2, words=1)) == repr(AugmentSpec(copies=4, splice=2, words=1))
    assert record_key(None) == "None"
