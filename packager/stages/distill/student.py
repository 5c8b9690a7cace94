"""The distil stage's student: cut from the teacher's layers, built from its config, or a pretrained model
with its own tokenizer; and the checks that refuse a student that cannot be matched to the teacher.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ...errors import EdgepackError
from ...training.common import encoder_layer_prefix, encoder_layers
from .spec import DistillSpec, StudentSpec

#: config attributes holding one value per encoder layer: kept heads and their original indices
#: (``pruned_models``), attention type
#: (ModernBERT's local / global alternation: each kept block keeps the attention it was trained with)
PER_LAYER_CONFIG = ("layer_heads", "layer_head_ids", "layer_types")


def _subset_config(config, layers: list[int]):
    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = len(layers)
    for name in PER_LAYER_CONFIG:
        values = getattr(cfg, name, None)
        if values:
            setattr(cfg, name, [values[i] for i in layers])
    return cfg


def student_from_layers(teacher, layers: list[int]):
    """DistilBERT-style init: the teacher's embeddings, head and the chosen encoder blocks, in order."""
    n_teacher = len(encoder_layers(teacher))
    bad = [l for l in layers if l >= n_teacher]
    if bad:
        raise EdgepackError(f"recipe distill.student.layers: layer {bad[0]} does not exist (the teacher has {n_teacher})")
    from ...families import family_of

    family = family_of(str(teacher.config.model_type))
    if family is not None and family.first_layer_fixed and layers[0] != 0:
        raise EdgepackError(f"recipe distill.student.layers: must begin with layer 0 ({family.first_layer_fixed})")
    student = type(teacher)(_subset_config(teacher.config, layers))
    state = teacher.state_dict()
    prefix = encoder_layer_prefix(teacher)
    remapped = {}
    for key, value in state.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in layers:
                remapped[f"{prefix}{layers.index(int(index))}.{rest}"] = value
        else:
            remapped[key] = value
    missing, unexpected = student.load_state_dict(remapped, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise EdgepackError(f"student init: state mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student


def student_from_config(teacher, overrides: dict[str, Any]):
    """A fresh student from the teacher's config with ``overrides``; tensors whose name and shape match are copied."""
    from transformers import AutoModelForSequenceClassification

    cfg = copy.deepcopy(teacher.config)
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise EdgepackError(f"recipe distill.student.config.{key}: not an attribute of {type(cfg).__name__}")
        setattr(cfg, key, value)
    student = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager")
    own = student.state_dict()
    shared = {k: v for k, v in teacher.state_dict().items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(shared, strict=False)
    return student


#: names under which ``distill.student.model`` means the built-in all-MiniLM-L6-v2 (no download)
BUILTIN_STUDENT_NAMES = ("builtin", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


#: training texts whose tokenization is compared to decide whether teacher and student tokenize alike
TOKENIZATION_PROBE = 64


def student_source(source: str) -> str:
    """A student folder: the built-in MiniLM for its names, else as given (folder or Hub id in the local cache)."""
    if source in BUILTIN_STUDENT_NAMES:
        from ...models import default_model_path

        return str(default_model_path())
    return str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source


def student_from_model(teacher, source: str):
    """A pretrained student with its own tokenizer; the teacher's labels, a fresh classification head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = teacher.config
    folder = student_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        student = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=cfg.num_labels, id2label=cfg.id2label, label2id=cfg.label2id,
            ignore_mismatched_sizes=True, attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepackError(f"recipe distill.student.model: cannot load {source!r} ({first})") from None
    return student, tokenizer


def make_student(teacher, tokenizer, spec: StudentSpec):
    """(student, its tokenizer): cut from the teacher (the teacher's tokenizer) or a pretrained model (its own)."""
    if spec.layers is not None:
        return student_from_layers(teacher, spec.layers), tokenizer
    if spec.config is not None:
        return student_from_config(teacher, spec.config), tokenizer
    return student_from_model(teacher, str(spec.model))


def tokenization_mismatch(teacher_tokenizer, student_tokenizer, texts: list[str]) -> str | None:
    """Why teacher and student do not see the same token positions, or None when they tokenize alike."""
    if teacher_tokenizer is student_tokenizer:
        return None
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if len(t_vocab) != len(s_vocab):
        return f"teacher vocabulary {len(t_vocab)}, student {len(s_vocab)}"
    if t_vocab != s_vocab:
        return "their vocabularies differ"
    probe = texts[:TOKENIZATION_PROBE]
    if teacher_tokenizer(probe)["input_ids"] != student_tokenizer(probe)["input_ids"]:
        return "they split the training texts differently"
    return None


def layer_map(spec: StudentSpec, n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer matched by each student layer: the copied one, else evenly spaced."""
    if spec.layers is not None:
        return list(spec.layers)
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


def check_matching(teacher, student, spec: DistillSpec, mismatch: str | None) -> None:
    """Refuse, in one line, a hidden-state / attention matching request that cannot line up."""
    for key, weight, what in (("hidden_weight", spec.hidden_weight, "hidden-state"),
                              ("attention_weight", spec.attention_weight, "attention")):
        if weight > 0 and mismatch is not None:
            raise EdgepackError(f"recipe distill.{key}: {what} matching compares token positions, but the student "
                                f"tokenizes differently from the teacher ({mismatch}); distil from logits only "
                                f"({key}: 0)")
    if spec.hidden_weight > 0 and teacher.config.hidden_size != student.config.hidden_size:
        raise EdgepackError("recipe distill.hidden_weight: hidden-state matching needs the same hidden size "
                            f"(teacher {teacher.config.hidden_size}, student {student.config.hidden_size})")
    if spec.attention_weight > 0:
        heads = lambda m: getattr(m.config, "layer_heads", None) or [m.config.num_attention_heads] * m.config.num_hidden_layers
        t_heads, s_heads = heads(teacher), heads(student)
        mapped = layer_map(spec.student, len(s_heads), len(t_heads))
        if any(s_heads[i] != t_heads[t] for i, t in enumerate(mapped)):
            raise EdgepackError("recipe distill.attention_weight: attention matching needs the same head count "
                                "in the matched layers")


def preflight(teacher, tokenizer, spec: DistillSpec, texts: list[str], seq_len: int) -> None:
    """Checks of a pretrained student that need only its config and tokenizer: run before any training.

    (Earlier stages keep the hidden size and the tokenizer's kind, so these verdicts still hold at the distill
    stage; students cut from the teacher are checked when they are built.)"""
    if spec.student.model is None:
        return
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoTokenizer

    folder = student_source(str(spec.student.model))
    try:
        config = AutoConfig.from_pretrained(folder)
        student_tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgepackError(f"recipe distill.student.model: cannot load {spec.student.model!r} ({first})") from None
    limit = getattr(config, "max_position_embeddings", seq_len)
    if seq_len > limit:
        raise EdgepackError(f"recipe distill.student: the student takes at most {limit} positions (recipe seq_len {seq_len})")
    check_matching(teacher, SimpleNamespace(config=config), spec,
                    tokenization_mismatch(tokenizer, student_tokenizer, texts))
