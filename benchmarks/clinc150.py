"""CLINC150 case study: fine-tuned teacher → distilled student → pruned → trimmed → int8 targets.

    python benchmarks/clinc150.py --data ../shared/data/clinc150/data_oos_plus.json                  # MiniLM chain
    python benchmarks/fetch_mpnet_teacher.py && \
    python benchmarks/clinc150.py --data ../shared/data/clinc150/data_oos_plus.json --setting mpnet   # the book's

``--setting mpnet`` is the book's setting: the fine-tuned MPNet-base teacher, the
pretrained MiniLM-L6 fine-tuned alone, MiniLM-L6 distilled from the teacher (its own
tokenizer; teacher-labelled augmented copies of the training texts; optuna search
with pruning) → int8 per target, then structured pruning and vocabulary trimming →
int8 per target, so the table shows whether pruning/trimming pay.

151 intents (``oos`` is a class): train = train + oos_train, validation = val +
oos_val, test = test + oos_test (5500). Every model is packed as a bundle and
all bundles are timed in this one run through ``device_bench.bench.bench_bundle``
(batch 1, same seq_len, same thread count, samples from the test split). The
fp32 rows are TorchScript (Lite Interpreter) fp32 artifacts of each stage's
PyTorch model, so the teacher baseline is "fp32 PyTorch" measured the same way
as everything else. Trained checkpoints are cached under ``--cache`` so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FP32_TARGET = "torchscript-mobile-fp32"
FINAL_TARGETS = ("torchscript-mobile", "tflite-int8", "tflite-int8-full", "onnx-int8")


@dataclass
class Row:
    name: str
    stage: str
    target: str
    precision: str
    test_accuracy: float | None
    size_mb: float | None
    latency_p50_ms: float | None = None
    latency_std_ms: float | None = None
    peak_rss_mb: float | None = None
    params: int | None = None
    status: str = "ok"
    note: str = ""
    #: p50 of inputs padded to seq_len (the largest bucket's row of the same run): the static-shape figure
    latency_full_ms: float | None = None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_clinc(path: Path, intents: int | None):
    """The three splits with oos folded in; ``intents`` keeps the first N intents (plus oos) for a quick slice."""
    from packager.labelled_data import LabelledData, LabelledSplit

    raw = json.loads(path.read_text())
    pairs = {"train": raw["train"] + raw["oos_train"], "validation": raw["val"] + raw["oos_val"],
             "test": raw["test"] + raw["oos_test"]}
    names = sorted({label for _, label in pairs["train"]})
    if intents is not None:
        names = sorted([n for n in names if n != "oos"])[:intents] + ["oos"]
    index = {n: i for i, n in enumerate(names)}
    splits = {}
    for split, rows in pairs.items():
        rows = [(t, l) for t, l in rows if l in index]
        splits[split] = LabelledSplit([t for t, _ in rows], [index[l] for _, l in rows])
    return LabelledData(train=splits["train"], validation=splits["validation"], test=splits["test"], labels=names)


def cached(cache: Path, name: str, key: dict[str, Any], build):
    """Load ``cache/name`` when its key matches, else build (model, tokenizer, details) and save it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from packager import pruned_models  # noqa: F401  (registers the edgepack_pruned_* model types)

    folder = cache / name
    meta = folder / "edgepack-cache.json"
    if meta.is_file() and json.loads(meta.read_text())["key"] == key:
        log(f"{name}: cached at {folder}")
        info = json.loads(meta.read_text())
        model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
        return model, AutoTokenizer.from_pretrained(folder), info["details"]
    from packager.progress import prefixed, reporting, rounded, timing

    started = time.perf_counter()
    with reporting(log), prefixed(f"{name}: "), timing() as steps:
        model, tokenizer, details = build()
    details = {**details, "train_seconds": round(time.perf_counter() - started, 1), "steps": rounded(steps)}
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    meta.write_text(json.dumps({"key": key, "details": details}, indent=2, default=str))
    log(f"{name}: built in {details['train_seconds']:.0f} s, saved to {folder}")
    return model, tokenizer, details


def pack(name: str, key: dict[str, Any], model, tokenizer, labels, data, targets: list[str], out: Path,
         seq_len: int, calib: list[str]):
    """Pack (or reuse the bundle packed earlier from the same model key and targets)."""
    from device_bench.manifest import Manifest
    from packager.models import LoadedModel
    from packager.pack import pack_model
    from packager.tasks import get_task

    key = {"model": key, "targets": targets, "seq_len": seq_len, "n_test": len(data.test)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    bundle = out / f"{name}-{digest}"
    if (bundle / "manifest.json").is_file():
        log(f"{name}: reusing bundle {bundle}")
        return bundle, Manifest.load(bundle)
    loaded = LoadedModel(model=model.eval(), tokenizer=tokenizer, source=f"clinc150/{name}",
                         task=get_task("sequence-classification"), labels=labels)
    from packager.progress import prefixed, reporting, rounded, timing

    started = time.perf_counter()
    with reporting(log), prefixed(f"{name}: pack: "), timing() as steps:
        result = pack_model(loaded, bundle, targets, seq_len, calib, labelled=(data.test.texts, data.test.labels),
                            force=True, min_agreement=0.95, allow_parity_failure=True)
    seconds = time.perf_counter() - started
    for entry in result.manifest.targets:  # each target's export and parity, timed inside its own row
        steps.update(entry.details.get("step_seconds") or {})
    log(f"{name}: packed {', '.join(targets)} in {seconds:.0f} s "
        f"({', '.join(f'{e.name}={e.status}' for e in result.manifest.targets)})")
    # kept beside the bundle: a bundle reused by a later run still shows what packing it cost
    (bundle / "edgepack-pack-steps.json").write_text(json.dumps({"seconds": round(seconds, 1),
                                                                  "steps": rounded(steps)}, indent=1))
    return bundle, result.manifest


def pack_steps(bundle: Path) -> dict[str, Any]:
    """The pack's wall time and its sub-steps' seconds, as recorded when the bundle was packed ({} if unknown)."""
    saved = bundle / "edgepack-pack-steps.json"
    return json.loads(saved.read_text()) if saved.is_file() else {}


@dataclass
class Stage:
    """One model of a chain: packed as fp32 (and with the final targets when ``finals``), benched, tabled."""

    name: str
    description: str
    model: Any
    tokenizer: Any
    key: dict[str, Any]
    finals: bool = False


def subsample(data, max_train: int | None, max_eval: int | None):
    """A seeded sample of each split (a smoke run); None keeps the split whole."""
    import random

    from packager.labelled_data import LabelledSplit

    def take(split, n):
        if n is None or n >= len(split):
            return split
        idx = sorted(random.Random(42).sample(range(len(split)), n))
        return LabelledSplit([split.texts[i] for i in idx], [split.labels[i] for i in idx])

    data.train = take(data.train, max_train)
    data.validation = take(data.validation, max_eval)
    data.test = take(data.test, max_eval)
    return data


def minilm_teacher(args, data, cache: Path, work: Path, seq_len: int):
    """The built-in MiniLM-L6 fine-tuned on the labels: the MiniLM chain's teacher, the MPNet chain's student alone."""
    from packager.training.common import seed_all
    from packager.stages.finetune.train import finetune
    from packager.models import load_model
    from packager.stages.finetune.spec import FinetuneSpec

    def build():
        seed_all(42)  # the classification head is initialised at load: a fixed seed makes the run repeatable
        loaded = load_model(None, "sequence-classification", labels=data.labels)
        spec = FinetuneSpec(epochs=args.teacher_epochs, lr=args.teacher_lr, batch_size=32)
        model, details = finetune(loaded.model, loaded.tokenizer, data, spec, seq_len=seq_len,
                                  work_dir=work / f"teacher-{digest(key)}", resume=True)
        return model, loaded.tokenizer, details

    key = {"epochs": args.teacher_epochs, "lr": args.teacher_lr, "seq_len": seq_len, "intents": args.intents,
           **smoke_key(args)}
    model, tokenizer, details = cached(cache, "teacher", key, build)
    return model, tokenizer, details, key


def command_line() -> str:
    """This run's command, quoted, as the results files print it."""
    return "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])


def digest(key: dict[str, Any]) -> str:
    """A short name for a stage configuration: its resumable work folder holds that configuration's checkpoints only."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def smoke_key(args) -> dict[str, Any]:
    return {k: v for k, v in (("max_train", args.max_train), ("max_eval", args.max_eval)) if v is not None}


def prune_and_trim(args, data, cache: Path, work: Path, seq_len: int, student, tokenizer, student_key,
                   stage_details: dict[str, Any]) -> list[Stage]:
    """Structured pruning (+ recovery distilled from the unpruned student), then vocabulary trimming."""
    from transformers import AutoModelForSequenceClassification

    from packager.stages.prune.algorithm import prune
    from packager.stages.trim_vocab.algorithm import trim_vocab
    from packager.stages.prune.spec import PruneSpec, RecoverySpec
    from packager.stages.trim_vocab.spec import TrimVocabSpec

    def build_pruned():
        spec = PruneSpec(method="structured", heads=args.prune_heads, ffn=args.prune_ffn, batch_size=32,
                         importance_batches=64, recovery=RecoverySpec(epochs=args.recovery_epochs, lr=1e-4,
                                                                        temperature=args.temperature, alpha=args.alpha))
        model, details = prune(student, tokenizer, data, spec, seq_len=seq_len, work_dir=work / "pruned")
        return model, tokenizer, details

    trim_splits = args.trim_splits
    trim_texts = [t for split in trim_splits for t in getattr(data, split).texts]
    trim_label = (f"+ vocabulary trimmed to the {'+'.join(trim_splits)} tokens"
                  + (f" + top {args.trim_keep_top} ids" if args.trim_keep_top else ""))
    trim_spec = TrimVocabSpec(splits=trim_splits, keep_ascii_chars=args.trim_keep_chars, keep_top=args.trim_keep_top)
    if not args.prune_heads and not args.prune_ffn:  # no pruning: the student's vocabulary trimmed, nothing else
        started = time.perf_counter()
        trimmed, trimmed_tok, stage_details["trimmed"] = trim_vocab(copy.deepcopy(student), tokenizer, trim_texts,
                                                                    trim_spec)
        stage_details["trimmed"]["steps"] = {"trim the vocabulary": round(time.perf_counter() - started, 2)}
        trim_key = {"student": student_key, "chars": args.trim_keep_chars, "top": args.trim_keep_top,
                    "splits": trim_splits}
        return [Stage("trimmed", trim_label.replace("+ vocabulary", "student, vocabulary", 1), trimmed, trimmed_tok,
                      trim_key, finals=True)]

    pruned_key = {"student": student_key, "heads": args.prune_heads, "ffn": args.prune_ffn,
                  "recovery_epochs": args.recovery_epochs}
    prefix = "mpnet-" if args.setting == "mpnet" else ""
    pruned_name = f"{prefix}pruned-h{args.prune_heads:g}-f{args.prune_ffn:g}-r{args.recovery_epochs:g}"
    pruned, _, stage_details["pruned"] = cached(cache, pruned_name, pruned_key, build_pruned)
    started = time.perf_counter()
    trimmed, trimmed_tok, stage_details["trimmed"] = trim_vocab(pruned, tokenizer, trim_texts, trim_spec)
    stage_details["trimmed"]["steps"] = {"trim the vocabulary": round(time.perf_counter() - started, 2)}
    # trim_vocab replaced pruned's embeddings in place: reload the pruned checkpoint for its own bundle
    pruned = AutoModelForSequenceClassification.from_pretrained(cache / pruned_name, attn_implementation="eager").eval()
    trim_key = {"pruned": pruned_key, "chars": args.trim_keep_chars, "top": args.trim_keep_top}
    if trim_splits != ["train"]:
        trim_key["splits"] = trim_splits
    return [Stage("pruned", f"+ structured pruning (heads −{args.prune_heads:.0%}, FFN −{args.prune_ffn:.0%})",
                  pruned, tokenizer, pruned_key),
            Stage("trimmed", trim_label, trimmed, trimmed_tok, trim_key, finals=True)]


def minilm_chain(args, data, cache: Path, work: Path, seq_len: int, stage_details: dict[str, Any]) -> list[Stage]:
    """Fine-tuned MiniLM-L6 teacher → student cut from its layers → pruned → trimmed → int8."""
    from packager.stages.distill.train import distill
    from packager.stages.distill.spec import DistillSpec, StudentSpec

    teacher, tokenizer, stage_details["teacher"], teacher_key = minilm_teacher(args, data, cache, work, seq_len)
    layers = [int(x) for x in args.student_layers.split(",")]

    def build_student():
        spec = DistillSpec(student=StudentSpec(layers=layers), temperature=args.temperature, alpha=args.alpha,
                           epochs=args.student_epochs, lr=args.student_lr, batch_size=32, student_alone=False,
                           augment=augment_spec(args.augment_copies, 0))
        return distill(teacher, tokenizer, data, spec, seq_len=seq_len, work_dir=work / "student")

    student_key = {"teacher": teacher_key, "layers": layers, "T": args.temperature, "alpha": args.alpha,
                   "epochs": args.student_epochs, "lr": args.student_lr}
    if args.augment_copies:  # (absent otherwise: students cached before augmentation existed stay valid)
        student_key["augment"] = args.augment_copies
    student, _, stage_details["student"] = cached(cache, "student", student_key, build_student)
    return [Stage("teacher", "fine-tuned MiniLM-L6 teacher", teacher, tokenizer, teacher_key),
            Stage("student", f"distilled student (teacher layers {layers})", student, tokenizer, student_key),
            *prune_and_trim(args, data, cache, work, seq_len, student, tokenizer, student_key, stage_details)]


def mpnet_dir(args) -> Path | None:
    if args.teacher_dir is not None:
        return args.teacher_dir
    done = ROOT / "benchmarks" / ".cache" / "mpnet" / "edgepack-fetch.json"
    return Path(json.loads(done.read_text())["model_dir"]) if done.is_file() else None


def mpnet_chain(args, data, cache: Path, work: Path, seq_len: int, stage_details: dict[str, Any]) -> list[Stage]:
    """The book's setting: fine-tuned MPNet-base teacher → MiniLM-L6 alone → MiniLM-L6 distilled (own tokenizer,
    augmented transfer set, optuna search) → int8 → pruned → trimmed → int8."""
    from packager.training.common import seed_all
    from packager.stages.distill.train import distill
    from packager.stages.finetune.train import finetune
    from packager.models import load_model
    from packager.stages.distill.spec import DistillSpec, SearchSpec, StudentSpec
    from packager.stages.finetune.spec import FinetuneSpec

    folder = mpnet_dir(args)

    def build_teacher():
        seed_all(42)
        loaded = load_model(str(folder), "sequence-classification", labels=data.labels)
        spec = FinetuneSpec(epochs=args.mpnet_epochs, lr=args.mpnet_lr, batch_size=32)
        model, details = finetune(loaded.model, loaded.tokenizer, data, spec, seq_len=seq_len,
                                  work_dir=work / f"mpnet-teacher-{digest(teacher_key)}", resume=True)
        return model, loaded.tokenizer, details

    teacher_key = {"model": "all-mpnet-base-v2", "epochs": args.mpnet_epochs, "lr": args.mpnet_lr, "seq_len": seq_len,
                   "intents": args.intents, **smoke_key(args)}
    teacher, teacher_tok, stage_details["teacher"] = cached(cache, "mpnet-teacher", teacher_key, build_teacher)
    alone, alone_tok, stage_details["student alone"], alone_key = minilm_teacher(args, data, cache, work, seq_len)

    search = None
    if args.search_trials:
        search = SearchSpec(trials=args.search_trials, alpha=[0.0, 1.0], temperature=[1.0, 10.0],
                            epochs=[int(x) for x in args.search_epochs.split(",")],
                            lr=[float(x) for x in args.search_lr.split(",")])
        # the study lives in the cache: trials finished before an interruption are not run again; the study's
        # name carries everything that decides a trial's result, so a changed setting starts a new study
        study_key = {"teacher": teacher_key, "search": asdict(search), "augment": args.augment_copies,
                     "batch_size": 32, "seed": 42}
        cache.mkdir(parents=True, exist_ok=True)
        search = dataclasses.replace(search, storage=f"sqlite:///{(cache / 'mpnet-search.db').resolve()}",
                                     study=f"mpnet-student-{digest(study_key)}")
    spec = DistillSpec(student=StudentSpec(model="builtin"), temperature=args.temperature, alpha=args.alpha,
                       epochs=args.student_epochs, lr=args.student_lr, batch_size=32, search=search,
                       augment=augment_spec(args.augment_copies, args.splice, args.words),
                       student_alone=False, sentence_weight=args.sentence_weight, sentence_loss=args.sentence_loss)

    def build_student():
        return distill(teacher, teacher_tok, data, spec, seq_len=seq_len, work_dir=work / "mpnet-student")

    student_key = {"teacher": teacher_key, "student": "builtin MiniLM-L6", "T": args.temperature,
                   "alpha": args.alpha, "epochs": args.student_epochs, "lr": args.student_lr,
                   "augment": args.augment_copies,
                   "search": search and {k: v for k, v in asdict(search).items() if k != "storage"}}
    if args.sentence_weight > 0:  # (absent otherwise: students cached before the objective existed stay valid)
        student_key["sentence"] = {"weight": args.sentence_weight, "loss": args.sentence_loss}
    if args.splice:  # (likewise)
        student_key["splice"] = args.splice
    if args.words:  # (likewise)
        student_key["words"] = args.words
    if args.levers:
        lever_study(args, data, cache, work, seq_len, teacher, teacher_tok, alone, alone_tok, student_key)
        return []
    student, student_tok, stage_details["student"] = cached(cache, student_cache_name(cache, student_key), student_key,
                                                            build_student)
    described = "MiniLM-L6 distilled from the MPNet teacher"
    if args.calibrate:  # the calibrate stage on the student; the teacher calibrated the same way is the fair peer
        student, calibration = calibrated(student, student_tok, data, seq_len, args.calibrate)
        stage_details["student"] = {**stage_details["student"], "calibrate": calibration}
        stage_details["teacher calibrated"] = calibrated_accuracy(teacher, teacher_tok, data, seq_len, args.calibrate)
        student_key = {**student_key, "calibrate": args.calibrate}
        described += f", `{args.calibrate}` logit calibrated on validation ({calibration['bias']:+.2f})"
    return [Stage("teacher", "fine-tuned MPNet-base teacher (all-mpnet-base-v2)", teacher, teacher_tok, teacher_key),
            Stage("student alone", "MiniLM-L6 fine-tuned alone", alone, alone_tok, alone_key),
            Stage("student", described, student, student_tok, student_key, finals=True),
            *prune_and_trim(args, data, cache, work, seq_len, student, student_tok, student_key, stage_details)]


def augment_spec(copies: int, splice: int, words: int = 0):
    """The distillation's ``augment`` for ``copies`` perturbed variants, ``splice`` splices and ``words`` word strings
    per training text."""
    from packager.stages.distill.spec import AugmentSpec

    return AugmentSpec(copies=copies, splice=splice, words=words) if copies or splice or words else None


@dataclass
class Lever:
    """One row of the lever study: the distillation with this row's settings and every lever above it."""

    lever: str
    epochs: float
    copies: int
    sentence_weight: float
    splice: int = 0
    words: int = 0
    #: the label whose logit is calibrated on validation after training (the calibrate stage); "": none
    calibrate: str = ""
    #: the lever of the row this one adds to (None: the row above)
    base: str | None = None


def levers(args) -> list[Lever]:
    """The study's rows, each adding one lever to the row above: the run's own student first, then the
    sentence-level objective, a larger transfer set, more epochs (the levers the last case study left untried),
    then (``--lever-splice``) spliced texts on the first "more epochs" row (``--lever-splice-epochs``: at other epoch
    counts too), then (``--lever-words``) word strings on the first spliced row (or the first "more epochs" row), then
    (``--lever-calibrate``) that row's student with one label's logit calibrated on validation."""
    base = Lever("student as run (logits, augmented copies)", args.student_epochs, args.augment_copies,
                 args.sentence_weight)
    sentence = dataclasses.replace(base, lever=f"+ sentence-level objective (weight {args.lever_sentence_weight:g}, "
                                   f"{args.sentence_loss})", sentence_weight=args.lever_sentence_weight)
    larger = dataclasses.replace(sentence, lever=f"+ transfer set {args.lever_copies + 1}× the training split",
                                 copies=args.lever_copies)
    longer = [dataclasses.replace(larger, lever=f"+ {epochs:g} distillation epochs", epochs=epochs)
              for epochs in lever_epochs(args)]
    spliced = []
    splice_epochs = lever_epochs(args, "lever_splice_epochs") if args.lever_splice_epochs else [longer[0].epochs]
    for count in lever_splices(args):
        first = None  # the count's first row adds splices to the first "more epochs" row; its others, epochs to it
        for epochs in splice_epochs:
            row = dataclasses.replace(longer[0], lever=f"+ {count} spliced texts per training text ({epochs:g} epochs)",
                                      splice=count, epochs=epochs, base=first.lever if first else longer[0].lever)
            first = first or row
            spliced.append(row)
    on = spliced[0] if spliced else longer[0]
    strings = [dataclasses.replace(on, lever=f"+ {count} word string{'s' * (count != 1)} per training text",
                                   words=count, base=on.lever)
               for count in (flag_counts(args, "lever_words", int, "word-string counts like 1,2")
                             if args.lever_words else [])]
    calibrated = ([dataclasses.replace(on, lever=f"+ `{args.lever_calibrate}` logit calibrated on validation",
                                       calibrate=args.lever_calibrate, base=on.lever)]
                  if args.lever_calibrate else [])
    return [base, sentence, larger, *longer, *spliced, *strings, *calibrated]


def lever_splices(args) -> list[int]:
    """``--lever-splice 2,4``: one "spliced texts" row per count, each on the first "more epochs" row (none: no
    such rows)."""
    return flag_counts(args, "lever_splice", int, "splice counts like 2,4") if args.lever_splice else []


def lever_epochs(args, flag: str = "lever_epochs") -> list[float]:
    """``--lever-epochs 3,6``: one "more epochs" row per count, each on the larger transfer set (``flag``: the
    same for ``--lever-splice-epochs``)."""
    return flag_counts(args, flag, float, "epoch counts like 3,6")


def flag_counts(args, flag: str, kind: type, expected: str) -> list:
    """The positive numbers of a comma-separated flag such as ``--lever-epochs 3,6``; a bad one stops the run."""
    value = getattr(args, flag)
    problem = f"--{flag.replace('_', '-')} {value!r}: expected positive {expected}"
    try:
        counts = [kind(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(problem) from None
    if not counts or min(counts) <= 0:
        raise SystemExit(problem)
    return counts


class TransferSetsOnDisk:
    """The memo ``distill(shared_transfer=…)`` keeps the teacher-labelled transfer set in, kept on disk: rows of
    the lever study that share a transfer set label it once, and a study resumed in a later session does not
    label it again (a base-size teacher over 76,000 texts is half an hour on 2 cores)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.held: dict[Path, Any] = {}  # the sets this process labelled or loaded

    def _path(self, key) -> Path:
        return self.folder / f"transfer-{digest({'key': repr(key)})}.pkl"

    def __contains__(self, key) -> bool:
        return self._path(key).is_file()

    def __getitem__(self, key):
        import pickle

        path = self._path(key)
        if path not in self.held:
            log(f"transfer set: labelled earlier, loaded from {path}")
            self.held[path] = pickle.loads(path.read_bytes())
        return self.held[path]

    def __setitem__(self, key, value) -> None:
        import pickle

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self._path(key).with_suffix(".partial")
        partial.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        partial.replace(self._path(key))
        self.held[self._path(key)] = value


def student_cache_name(cache: Path, key: dict[str, Any]) -> str:
    """Where the distilled student of ``key`` is cached: a lever row trained with the same settings is the same
    student (the chain with a row's flags reuses it), else ``mpnet-student``."""
    lever = f"mpnet-lever-{digest(key)}"
    return lever if (cache / lever / "edgepack-cache.json").is_file() else "mpnet-student"


def lever_study(args, data, cache: Path, work: Path, seq_len: int, teacher, teacher_tok, alone, alone_tok,
                student_key) -> None:
    """Train each lever row (cached by its settings, so a study spans sessions), evaluate it on test, and write
    ``<name>-levers.md`` after every row: what each lever bought, beside the teacher and the student alone."""
    from packager.stages.distill.spec import DistillSpec, StudentSpec
    from packager.stages.distill.train import distill
    from packager.training.evaluate import accuracy
    from device_bench.fingerprint import cpu_isa, int8_kernel_family

    teacher_acc = accuracy(teacher, teacher_tok, data.test, seq_len)
    alone_acc = accuracy(alone, alone_tok, data.test, seq_len)
    teacher_calibrated = (calibrated_accuracy(teacher, teacher_tok, data, seq_len, args.lever_calibrate)
                          if args.lever_calibrate else None)
    rows: list[dict[str, Any]] = []
    labelled = (TransferSetsOnDisk(cache / "transfer-sets"), digest(student_key["teacher"]))
    chosen = lever_rows(args)
    earlier = earlier_levers(args)
    for number, lever in enumerate(levers(args), 1):
        if number not in chosen:
            row = earlier.get(lever.lever)
            if row is not None:  # (the row it adds to as defined now: files written before it was recorded lack it)
                rows.append({**row, "base": lever.base})
            continue
        spec = DistillSpec(student=StudentSpec(model="builtin"), temperature=args.temperature, alpha=args.alpha,
                           epochs=lever.epochs, lr=args.student_lr, batch_size=32, student_alone=False,
                           augment=augment_spec(lever.copies, lever.splice, lever.words),
                           sentence_weight=lever.sentence_weight, sentence_loss=args.sentence_loss)
        # (a calibrated row is its base row's student, calibrated: the same key finds that student)
        key = {k: v for k, v in student_key.items() if k != "sentence"} | {"epochs": lever.epochs,
                                                                            "augment": lever.copies, "search": None}
        if lever.sentence_weight > 0:
            key["sentence"] = {"weight": lever.sentence_weight, "loss": args.sentence_loss}
        if lever.splice:
            key["splice"] = lever.splice
        if lever.words:
            key["words"] = lever.words
        name = "mpnet-student" if key == student_key else f"mpnet-lever-{digest(key)}"
        folder = work / f"lever-{digest(key)}"
        model, tokenizer, details = cached(cache, name, key, lambda: distill(teacher, teacher_tok, data, spec,
                                                                             seq_len=seq_len, work_dir=folder,
                                                                             resume=True, shared_transfer=labelled))
        if lever.calibrate:  # no training: the base row's student, its logit shifted
            began = time.perf_counter()
            model, calibration = calibrated(model, tokenizer, data, seq_len, lever.calibrate)
            details = {"transfer_set": details.get("transfer_set"), "calibrate": calibration,
                       "best_val_accuracy": calibration["validation_accuracy_after"],
                       "steps": {"calibrate on validation": round(time.perf_counter() - began, 1)}}
        acc = accuracy(model, tokenizer, data.test, seq_len)
        rows.append({**asdict(lever), "test_accuracy": acc, "val_accuracy": details.get("best_val_accuracy"),
                     "train_seconds": details.get("train_seconds"), "steps": details.get("steps", {}),
                     "transfer_set": details.get("transfer_set"), "cache": str(cache / name),
                     "calibrate": details.get("calibrate"),
                     "teacher_accuracy": teacher_acc, "isa": int8_kernel_family(cpu_isa())})
        log(f"lever {lever.lever}: test accuracy {acc:.4f} ({(acc - teacher_acc) * 100:+.2f} pt vs the teacher)")
        write_levers(args, rows, teacher_acc, alone_acc, teacher_calibrated)
    write_levers(args, rows, teacher_acc, alone_acc, teacher_calibrated)  # with the carried rows after the last trained


def calibrated(model, tokenizer, data, seq_len: int, label: str) -> tuple[Any, dict[str, Any]]:
    """A copy of ``model`` with ``label``'s logit shifted by the bias the recipe's calibrate stage fits on the
    validation split, and that stage's details."""
    from packager.stages import StageContext, parse_stage

    stage = parse_stage({"calibrate": {"label": label}}, 0)
    out = stage.run(copy.deepcopy(model), tokenizer, StageContext(data=data, seq_len=seq_len, seed=42,
                                                                  work_dir=Path(".")))
    return out.model, out.details


def calibrated_accuracy(model, tokenizer, data, seq_len: int, label: str) -> dict[str, Any]:
    """The test accuracy of ``model`` calibrated on ``label`` (the reference a calibrated student is held to)."""
    from packager.training.evaluate import accuracy

    model, details = calibrated(model, tokenizer, data, seq_len, label)
    return {"label": label, "bias": details["bias"], "test_accuracy": accuracy(model, tokenizer, data.test, seq_len)}


def lever_rows(args) -> set[int]:
    """The lever rows this run trains (``--lever-rows``; default every row)."""
    count = len(levers(args))
    if not args.lever_rows:
        return set(range(1, count + 1))
    try:
        rows = {int(x) for x in args.lever_rows.split(",") if x.strip()}
    except ValueError:
        raise SystemExit(f"--lever-rows {args.lever_rows!r}: expected row numbers like 3,4") from None
    if not rows or min(rows) < 1 or max(rows) > count:
        raise SystemExit(f"--lever-rows {args.lever_rows!r}: rows are 1 to {count}")
    return rows


def earlier_levers(args) -> dict[str, dict[str, Any]]:
    """The rows an earlier run of this study wrote (``<name>-levers.json``), by lever, each marked as carried
    with that run's teacher accuracy and host ISA (rows written before those were recorded get the file's)."""
    from device_bench.fingerprint import int8_kernel_family

    path = args.out / f"{args.name}-levers.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    isa = doc.get("isa_family") or int8_kernel_family(doc.get("isa") or [])
    return {r["lever"]: {**r, "carried": True, "teacher_accuracy": r.get("teacher_accuracy", doc["teacher_accuracy"]),
                         "isa": r.get("isa", isa)} for r in doc.get("rows", [])}


def write_levers(args, rows: list[dict[str, Any]], teacher_acc: float, alone_acc: float,
                 teacher_calibrated: dict[str, Any] | None = None) -> None:
    from device_bench.fingerprint import cpu_isa

    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.name}-levers"
    lines = ["# CLINC150, book setting: what each distillation lever buys", "",
             f"Fine-tuned MPNet-base teacher: **{teacher_acc * 100:.2f}%** test; MiniLM-L6 fine-tuned on the labels "
             f"alone: {alone_acc * 100:.2f}%. Each row adds its lever to the row above, or to the row it names (fp32 PyTorch test accuracy "
             f"of the distilled MiniLM-L6, {len(rows)} of {len(levers(args))} rows trained so far; each row is cached, "
             f"so the study resumes where it stopped). Host ISA: {' '.join(cpu_isa())}.", ""]
    if teacher_calibrated:
        lines += [f"The teacher with its `{teacher_calibrated['label']}` logit calibrated the same way (bias "
                  f"{teacher_calibrated['bias']:+.2f}): {teacher_calibrated['test_accuracy'] * 100:.2f}% test.", ""]
    carried = [r for r in rows if r.get("carried")]
    if carried:
        teachers = sorted({f"{r['teacher_accuracy'] * 100:.2f}% on {r['isa']}" for r in carried})
        lines += [f"Rows marked † were trained by an earlier run (`--lever-rows` left them out) against its own "
                  f"teacher ({', '.join(teachers)}); their Δ vs teacher is against that teacher.", ""]
    lines += [
             "| lever | epochs | transfer set | sentence weight | val acc % | test acc % | Δ vs teacher (pt) | "
             "Δ vs the row it adds to (pt) | train s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    previous = None
    by_lever = {r["lever"]: r["test_accuracy"] for r in rows}
    for r in rows:
        total = sum((r["transfer_set"] or {}).values()) if r["transfer_set"] else None
        base = by_lever.get(r["base"]) if r.get("base") else previous
        step = None if base is None else (r["test_accuracy"] - base) * 100
        mark = " †" if r.get("carried") else ""
        lines.append(f"| {r['lever']}{mark} | {r['epochs']:g} | {_fmt(total, 'd')} | {r['sentence_weight']:g} | "
                     f"{_fmt(r['val_accuracy'] and r['val_accuracy'] * 100, '.2f')} | {r['test_accuracy'] * 100:.2f} | "
                     f"{(r['test_accuracy'] - r.get('teacher_accuracy', teacher_acc)) * 100:+.2f} | {_fmt(step, '+.2f')} | "
                     f"{_fmt(r['train_seconds'], '.0f')} |")
        previous = r["test_accuracy"]
    lines += ["", "Wall seconds of each row's sub-steps:", ""]
    lines += [f"- {r['lever']}: " + (", ".join(f"{k} {v:.0f} s" for k, v in r["steps"].items())
                                      or "not recorded (trained before sub-steps were timed)") for r in rows]
    command = command_line()
    lines += ["", "```", command, "```", ""]
    (args.out / f"{name}.md").write_text("\n".join(lines))
    (args.out / f"{name}.json").write_text(json.dumps({"teacher_accuracy": teacher_acc, "alone_accuracy": alone_acc,
                                                       "teacher_calibrated": teacher_calibrated, "rows": rows,
                                                       "isa": cpu_isa(), "command": command},
                                                      indent=1, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="data_oos_plus.json of CLINC150 (required unless --replot)")
    ap.add_argument("--setting", choices=("minilm", "mpnet"), default="minilm",
                    help="minilm: MiniLM-L6 teacher, student cut from its layers; mpnet: the book's setting, a "
                         "fine-tuned MPNet-base teacher distilled into the pretrained MiniLM-L6 (its own tokenizer)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache" / "clinc150")
    ap.add_argument("--intents", type=int, default=None, help="keep only N intents (+ oos): a quick slice")
    ap.add_argument("--max-train", type=int, default=None, help="smoke run: a seeded sample of N training rows")
    ap.add_argument("--max-eval", type=int, default=None, help="smoke run: N validation and N test rows")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="threads of every timed runtime (batch-1 latency)")
    ap.add_argument("--train-threads", type=int, default=1, help="torch threads for training and evaluation")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="training precision (auto: bf16 autocast where the CPU/GPU has bf16)")
    ap.add_argument("--teacher-epochs", type=float, default=2.0, help="MiniLM fine-tuning epochs (teacher / alone)")
    ap.add_argument("--teacher-lr", type=float, default=1.5e-4)
    ap.add_argument("--teacher-dir", type=Path, default=None,
                    help="mpnet: the all-mpnet-base-v2 folder (default: where fetch_mpnet_teacher.py put it)")
    ap.add_argument("--mpnet-epochs", type=float, default=3.0)
    ap.add_argument("--mpnet-lr", type=float, default=5e-5)
    ap.add_argument("--student-layers", default="0,2,4")
    ap.add_argument("--student-epochs", type=float, default=2.0)
    ap.add_argument("--student-lr", type=float, default=2e-4)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--augment-copies", type=int, default=None,
                    help="teacher-labelled variants per training text in the distillation (default: 4 for mpnet, "
                         "0 for minilm)")
    ap.add_argument("--sentence-weight", type=float, default=0.0,
                    help="mpnet: weight of the sentence-level objective (student's projected pooled vector regresses "
                         "the teacher's); 0: off")
    ap.add_argument("--sentence-loss", choices=("mse", "cosine"), default="mse")
    ap.add_argument("--splice", type=int, default=0,
                    help="mpnet: teacher-labelled splices per training text in the distillation (the start of one "
                         "text joined to the end of another); 0: none")
    ap.add_argument("--words", type=int, default=0,
                    help="mpnet: teacher-labelled word strings per training text in the distillation (as many words "
                         "as the text, drawn from the training words); 0: none")
    ap.add_argument("--levers", action="store_true",
                    help="mpnet: only the lever study: the student as run, + the sentence objective, + a larger "
                         "transfer set, + more epochs, each row cached; writes <name>-levers.md")
    ap.add_argument("--lever-sentence-weight", type=float, default=1.0)
    ap.add_argument("--lever-copies", type=int, default=4, help="augmented copies of the larger transfer set")
    ap.add_argument("--lever-epochs", default="3", metavar="N[,M]",
                    help="distillation epochs of the 'more epochs' rows, one row per count (e.g. 3,6)")
    ap.add_argument("--lever-splice", default=None, metavar="N[,M]",
                    help="spliced-texts rows: N spliced texts per training text on the first 'more epochs' row, one "
                         "row per count (e.g. 2,4)")
    ap.add_argument("--lever-splice-epochs", default=None, metavar="N[,M]",
                    help="distillation epochs of the spliced-texts rows, one row per count and splice count (default: "
                         "the first --lever-epochs)")
    ap.add_argument("--lever-words", default=None, metavar="N[,M]",
                    help="word-string rows: N word strings per training text on the first spliced-texts row (or the "
                         "first 'more epochs' row), one row per count (e.g. 1,2)")
    ap.add_argument("--calibrate", default=None, metavar="LABEL",
                    help="mpnet: the recipe's calibrate stage on the distilled student: LABEL's logit shifted by the "
                         "bias fit on validation (e.g. oos); the teacher's accuracy calibrated the same way is "
                         "reported beside it")
    ap.add_argument("--lever-calibrate", default=None, metavar="LABEL",
                    help="a lever row: the first spliced-texts row's student (or the first 'more epochs' row's) "
                         "with LABEL's logit calibrated on validation (no training)")
    ap.add_argument("--lever-rows", default=None, metavar="N,M",
                    help="train only these rows of the lever study (1-based); the others are carried from the "
                         "<name>-levers.json an earlier run wrote, marked with that run's host and teacher")
    ap.add_argument("--search-trials", type=int, default=12, help="mpnet: optuna trials of the distillation (0: off)")
    ap.add_argument("--search-epochs", default="2,6", help="mpnet: epoch range of the search (on the 5x augmented set)")
    ap.add_argument("--search-lr", default="5e-5,5e-4", help="mpnet: learning-rate range of the search")
    ap.add_argument("--prune-heads", type=float, default=0.25,
                    help="share of attention heads pruned (0 with --prune-ffn 0: no pruning stage; the student's "
                         "own vocabulary is trimmed)")
    ap.add_argument("--prune-ffn", type=float, default=0.5)
    ap.add_argument("--recovery-epochs", type=float, default=1.0)
    ap.add_argument("--trim-keep-chars", action="store_true",
                    help="trim_vocab keeps single ASCII characters (unseen words spelled out instead of [UNK])")
    ap.add_argument("--trim-keep-top", type=int, default=5000,
                    help="trim_vocab also keeps the first N regular ids of the original vocabulary (common words "
                         "unseen in the data are then not re-spelled with other pieces)")
    ap.add_argument("--trim-splits", default="train,validation",
                    help="splits whose tokens trim_vocab keeps (never test)")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per artifact")
    ap.add_argument("--name", default=None, help="basename of the .md/.png/.json written to --out "
                                                 "(default: clinc150, or clinc150-mpnet for --setting mpnet)")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw <out>/<name>.png from the <name>.json an earlier run wrote")
    args = ap.parse_args()
    args.name = args.name or ("clinc150-mpnet" if args.setting == "mpnet" else "clinc150")
    if args.augment_copies is None:
        args.augment_copies = 4 if args.setting == "mpnet" else 0
    if args.replot:
        saved = args.out / f"{args.name}.json"
        if not saved.is_file():
            print(f"clinc150: --replot: {saved}: no such file", file=sys.stderr)
            return 2
        write_plot(args.out / f"{args.name}.png", [Row(**r) for r in json.loads(saved.read_text())["rows"]])
        return 0
    if args.data is None or not args.data.is_file():
        print(f"clinc150: --data {args.data}: no such file", file=sys.stderr)
        return 2
    args.trim_splits = [s.strip() for s in args.trim_splits.split(",") if s.strip()]
    if "test" in args.trim_splits or not set(args.trim_splits) <= {"train", "validation"}:
        print("clinc150: --trim-splits takes train and/or validation", file=sys.stderr)
        return 2
    if args.levers and args.setting != "mpnet":
        print("clinc150: --levers is a study of the book's setting: add --setting mpnet", file=sys.stderr)
        return 2
    if args.levers:
        lever_rows(args)  # a bad --lever-rows stops here, not after the teacher's hour of training
    if args.setting == "mpnet" and (mpnet_dir(args) is None or not (mpnet_dir(args) / "config.json").is_file()):
        print("clinc150: --setting mpnet: no MPNet teacher folder (run benchmarks/fetch_mpnet_teacher.py or give "
              "--teacher-dir)", file=sys.stderr)
        return 2

    import torch

    from packager.training.common import TRAIN_PRECISION, resolve_precision, set_threads
    from packager.training.evaluate import accuracy, count_params
    from packager.recipe.run import calibration_texts

    set_threads(args.train_threads)
    TRAIN_PRECISION.set(args.precision)
    started = time.perf_counter()
    data = subsample(load_clinc(args.data, args.intents), args.max_train, args.max_eval)
    precision, device = resolve_precision()
    log(f"data: {data.summary()}; torch threads {torch.get_num_threads()}; training {precision} on {device}")
    cache = args.cache if args.intents is None else args.cache.with_name(args.cache.name + f"-{args.intents}")
    if args.max_train is not None or args.max_eval is not None:
        cache = cache.with_name(cache.name + f"-smoke{args.max_train}-{args.max_eval}")
    work = cache / "work"
    seq_len = args.seq_len
    stage_details: dict[str, Any] = {}
    chain = mpnet_chain if args.setting == "mpnet" else minilm_chain
    stages = chain(args, data, cache, work, seq_len, stage_details)
    if args.levers:
        log(f"lever study done in {(time.perf_counter() - started) / 60:.1f} min: {args.out / args.name}-levers.md")
        return 0

    fp32_acc = {}
    for st in stages:
        fp32_acc[st.name] = accuracy(st.model, st.tokenizer, data.test, seq_len)
        log(f"{st.name}: fp32 PyTorch test accuracy {fp32_acc[st.name]:.4f}, {count_params(st.model) / 1e6:.2f}M params")

    from targets import TARGETS

    finals = [t for t in FINAL_TARGETS if t in TARGETS]
    calib = calibration_texts(data, 200, 42)
    bundles_dir = cache / "bundles"
    bundles = []
    for st in stages:
        targets = [FP32_TARGET] + (finals if st.finals else [])
        bundles.append((st, *pack(st.name.replace(" ", "-"), st.key, st.model, st.tokenizer, data.labels, data,
                                  targets, bundles_dir, seq_len, calib)))

    from device_bench.bench import bench_bundle

    rows: list[Row] = []
    steps: list[dict[str, Any]] = []  # the per-step wall-time table: training sub-steps, packing, bench
    for st, bundle, manifest in bundles:
        trained = stage_details.get(st.name) or {}
        for step, seconds in (trained.get("steps") or {"train (sub-steps not recorded)": trained.get("train_seconds")}).items():
            if seconds is not None:
                steps.append({"stage": st.name, "step": step, "seconds": seconds})
        for step, seconds in (pack_steps(bundle).get("steps") or {}).items():
            steps.append({"stage": st.name, "step": f"pack: {step}", "seconds": seconds})
        log(f"bench {st.name}")
        bench_started = time.perf_counter()
        report = bench_bundle(bundle, threads=[args.threads], runs=args.runs, min_seconds=2.0 if args.runs >= 100 else 0.0,
                              warmup=min(20, args.runs))
        steps.append({"stage": st.name, "step": "bench (every artifact, one worker each)",
                      "seconds": round(time.perf_counter() - bench_started, 1)})
        timing = {r.target: r for r in report.results}
        for entry in manifest.targets:
            res = timing.get(entry.name)
            row = Row(name=st.description if entry.name == FP32_TARGET else f"final ({st.name}): {entry.name}",
                      stage=st.name, target=entry.name, precision=entry.precision or "-",
                      test_accuracy=entry.parity.accuracy if entry.parity else None,
                      size_mb=round(entry.size_bytes / 1e6, 2) if entry.size_bytes else None,
                      params=count_params(st.model), status=entry.status, note=entry.error or "")
            if res is not None and res.latency_ms is not None:
                row.latency_p50_ms, row.latency_std_ms = res.latency_ms.p50, res.latency_ms.std
                row.peak_rss_mb = res.peak_rss_mb
                full = [b for b in res.by_length if (b.padded_to or b.length) == seq_len]
                row.latency_full_ms = full[-1].p50 if full else None
            elif res is not None:
                row.note = (row.note + " " + (res.error or res.status)).strip()
            rows.append(row)
    fp = report.fingerprint
    elapsed = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    command = command_line()
    raw = {"rows": [asdict(r) for r in rows], "fp32_pytorch_accuracy": fp32_acc, "stages": stage_details, "steps": steps,
           "fingerprint": fp, "command": command, "seconds": round(elapsed), "setting": args.setting,
           "training": {"precision": precision, "device": device},
           "args": vars(args) | {"data": str(args.data), "out": str(args.out), "cache": str(args.cache),
                                 "teacher_dir": str(args.teacher_dir) if args.teacher_dir else None},
           "data": data.summary(), "protocol": report.protocol}
    (args.out / f"{args.name}.json").write_text(json.dumps(raw, indent=2, default=str))
    write_markdown(args.out / f"{args.name}.md", rows, raw)
    write_plot(args.out / f"{args.name}.png", rows)
    log(f"done in {elapsed / 60:.1f} min: {args.out / args.name}.md")
    print((args.out / f"{args.name}.md").read_text())
    return 0


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def write_markdown(path: Path, rows: list[Row], raw: dict[str, Any]) -> None:
    teacher = next(r for r in rows if r.stage == "teacher")
    title = ("MPNet-base teacher distilled into MiniLM-L6 (its own tokenizer), pruning, vocabulary trimming and int8"
             if raw.get("setting") == "mpnet" else "distillation, pruning, vocabulary trimming and int8 on MiniLM-L6")
    lines = [
        f"# CLINC150: {title}",
        "",
        f"Test split: {raw['data']['test']} utterances, {raw['data']['classes']} classes (150 intents + `oos`). "
        f"Batch 1, seq_len {raw['args']['seq_len']}, {raw['args']['threads']} thread(s), every row timed in one run "
        "through `device_bench` (fresh worker process per artifact). Latency: p50 over the calibration texts at "
        "their real lengths (each padded to the smallest bucket that holds it), and the p50 of inputs padded to "
        f"{raw['args']['seq_len']} tokens from the same run (the static-shape figure).",
        "",
        f"| model | artifact | test acc % | Δ vs teacher (pt) | size MB | × smaller | latency p50 ± std ms | × faster | "
        f"p50 at {raw['args']['seq_len']} tokens ms | × faster | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        delta = None if r.test_accuracy is None else (r.test_accuracy - teacher.test_accuracy) * 100
        smaller = teacher.size_mb / r.size_mb if r.size_mb else None
        faster = teacher.latency_p50_ms / r.latency_p50_ms if r.latency_p50_ms and teacher.latency_p50_ms else None
        lat = "-" if r.latency_p50_ms is None else f"{r.latency_p50_ms:.2f} ± {r.latency_std_ms:.2f}"
        full = getattr(r, "latency_full_ms", None)
        faster_full = teacher.latency_full_ms / full if full and teacher.latency_full_ms else None
        artifact = f"{r.target} ({r.precision})" + ("" if r.status == "ok" else f" — {r.status}: {r.note[:80]}")
        lines.append(f"| {r.name} | {artifact} | {_fmt(r.test_accuracy and r.test_accuracy * 100, '.2f')} | "
                     f"{_fmt(delta, '+.2f')} | {_fmt(r.size_mb, '.1f')} | {_fmt(smaller, '.1f')} | {lat} | "
                     f"{_fmt(faster, '.1f')} | {_fmt(full, '.2f')} | {_fmt(faster_full, '.1f')} | "
                     f"{_fmt(r.peak_rss_mb, '.0f')} |")
    peer = raw["stages"].get("teacher calibrated")
    if peer:
        lines += ["", f"The teacher with its `{peer['label']}` logit calibrated the same way as the student (bias "
                  f"{peer['bias']:+.2f}): {peer['test_accuracy'] * 100:.2f}% test (fp32 PyTorch); the rows' Δ against "
                  "it: " + ", ".join(f"{r.name.removeprefix('final ')}: {(r.test_accuracy - peer['test_accuracy']) * 100:+.2f}"
                                     for r in rows if r.test_accuracy is not None and r.name.startswith("final")) + " pt."]
    lines += ["", "fp32 PyTorch (eager) test accuracy per stage: " + ", ".join(
        f"{k} {v * 100:.2f}%" for k, v in raw["fp32_pytorch_accuracy"].items()), ""]
    search = (raw["stages"].get("student") or {}).get("search")
    if isinstance(search, dict) and search.get("tried"):
        lines += [f"## Distillation search: {search['trials']} trials, pruner {search['pruner']} "
                  f"({search['pruned']} stopped early)", "",
                  "| trial | α | T | epochs | lr | epochs run | val acc % | state |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
        for t in search["tried"]:
            lines.append(f"| {t['trial']} | {_fmt(t.get('alpha'), '.3f')} | {_fmt(t.get('temperature'), '.2f')} | "
                         f"{t.get('epochs', '-')} | {_fmt(t.get('lr'), '.2e')} | {t.get('epochs_run') or '-'} | "
                         f"{_fmt(t.get('val_accuracy') and t['val_accuracy'] * 100, '.2f')} | {t['state']} |")
        lines.append("")
    if raw.get("steps"):
        lines += ["## Wall time per step", "", "Training sub-steps as each stage ran them (a stage loaded from the cache "
                  "shows the run that trained it), each bundle's packing as recorded beside it, and this run's bench.",
                  "", "| stage | step | seconds |", "|---|---|---:|"]
        lines += [f"| {s['stage']} | {s['step']} | {s['seconds']:.1f} |" for s in raw["steps"]]
        lines += [f"| all | total of the steps above | {sum(s['seconds'] for s in raw['steps']):.0f} |", ""]
    lines += ["## Stages", "", "```json", json.dumps(raw["stages"], indent=1, default=str)[:6000], "```", ""]
    fp = raw["fingerprint"]
    lines += ["## Machine", "", "```json", json.dumps(fp, indent=1, default=str)[:3000], "```", "",
              "## Command", "", "```", raw["command"], "```", "", f"Wall time of the run: {raw['seconds'] / 60:.0f} min "
              "(cached stages are loaded, not retrained).", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.latency_p50_ms is not None and r.test_accuracy is not None and r.size_mb]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for i, r in enumerate(pts):
        final = r.name.startswith("final")
        ax.scatter(r.latency_p50_ms, r.test_accuracy * 100, s=max(r.size_mb, 0.5) * 12, alpha=0.55,
                   marker="o" if not final else "D", label=f"{r.stage}: {r.target} ({r.size_mb:.1f} MB)")
        # fp32 stage rows are named by stage, final rows by target; alternate sides so neighbours don't collide
        text = r.target if final else r.stage
        ax.annotate(text, (r.latency_p50_ms, r.test_accuracy * 100), fontsize=7,
                    xytext=(7, 7 if i % 2 == 0 else -11), textcoords="offset points")
    teacher = next((r for r in pts if r.stage == "teacher"), None)
    if teacher:
        ax.axhline(teacher.test_accuracy * 100, ls="--", lw=0.8, color="grey")
    ax.set_xlabel("latency p50, batch 1 (ms, log scale)")
    ax.set_ylabel("CLINC150 test accuracy (%)")
    ax.set_title("CLINC150: accuracy vs latency (marker area ∝ model size; ◆ = final int8 artifacts)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=0.4, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
