"""Labelled text data for the compression stages: local files read through `datasets`.

(Named ``labelled_data`` rather than ``data`` because ``packager/data/`` is the
package-data folder holding the built-in sample texts.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import EdgepackError

SPLITS = ("train", "validation", "test")
#: file suffix -> `datasets` builder name
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class LabelledSplit:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> "LabelledSplit":
        return LabelledSplit(self.texts[:n], self.labels[:n])


@dataclass
class LabelledData:
    train: LabelledSplit
    labels: list[str]  # label names in id order
    validation: LabelledSplit | None = None
    test: LabelledSplit | None = None
    #: texts without labels (``data.unlabeled``): a distill stage has the teacher label them
    unlabeled: list[str] = field(default_factory=list)

    def split(self, name: str) -> LabelledSplit | None:
        return getattr(self, name)

    def summary(self) -> dict[str, int]:
        counts = {name: len(s) for name in SPLITS if (s := self.split(name)) is not None}
        return counts | ({"unlabeled": len(self.unlabeled)} if self.unlabeled else {}) | {"classes": len(self.labels)}


def _load_table(path: Path, where: str, also: str = ""):
    """A local CSV/TSV/JSON/JSONL/parquet file through ``datasets``; errors name the recipe key and the file."""
    import datasets

    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise EdgepackError(f"recipe {where}: {path.name}: unsupported file type (use {also}{', '.join(BUILDERS)})")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # datasets raises many types for malformed files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EdgepackError(f"recipe {where}: {path.name}: cannot read ({first})") from None


def read_texts(path: Path, column: str, where: str = "data.unlabeled") -> list[str]:
    """Unlabeled texts: a .txt file holds one text a line (blank lines skipped), other files a text column."""
    if not path.is_file():
        raise EdgepackError(f"recipe {where}: {path}: no such file")
    if path.suffix.lower() == ".txt":
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgepackError(f"recipe {where}: {path.name}: cannot read ({type(exc).__name__})") from None
    else:
        ds = _load_table(path, where, also=".txt, ")
        if column not in ds.column_names:
            raise EdgepackError(f"recipe {where}: {path.name} has no column {column!r} (has {', '.join(ds.column_names)}; "
                                "set data.unlabeled_column)")
        texts = [t.strip() for t in ds[column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise EdgepackError(f"recipe {where}: {path.name} has no texts")
    return texts


def read_split(path: Path, text_column: str, label_column: str, where: str) -> tuple[list[str], list]:
    """Texts and raw labels of one file; errors name the recipe key and the file."""
    if path.suffix.lower() in BUILDERS and not path.is_file():
        raise EdgepackError(f"recipe {where}: {path}: no such file")
    ds = _load_table(path, where)
    for column, key in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in ds.column_names:
            raise EdgepackError(
                f"recipe data.{key}: {path.name} has no column {column!r} (has {', '.join(ds.column_names)})")
    texts, labels = ds[text_column], ds[label_column]
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()), None)
    if bad is not None:
        raise EdgepackError(f"recipe {where}: {path.name} row {bad}: empty or non-text {text_column!r}")
    if any(l is None for l in labels):
        raise EdgepackError(f"recipe {where}: {path.name}: a row has no {label_column!r}")
    if not texts:
        raise EdgepackError(f"recipe {where}: {path.name} has no rows")
    return list(texts), list(labels)


def label_names(raw_train: list, given: list[str] | None) -> list[str]:
    """Names in id order: the recipe's list, else sorted names, else 0..max for integer labels."""
    if given:
        return [str(x) for x in given]
    if all(isinstance(l, int) and not isinstance(l, bool) for l in raw_train):
        return [str(i) for i in range(max(raw_train) + 1)]
    return sorted({str(l) for l in raw_train})


def encode_labels(raw: list, names: list[str], where: str) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for value in raw:
        if isinstance(value, int) and not isinstance(value, bool) and str(value) not in index:
            if not 0 <= value < len(names):
                raise EdgepackError(f"recipe {where}: label id {value} is outside 0..{len(names) - 1}")
            out.append(value)
            continue
        try:
            out.append(index[str(value)])
        except KeyError:
            raise EdgepackError(f"recipe {where}: label {value!r} is not in the label list "
                                f"(labels come from data.labels or the train split)") from None
    return out


def load_labelled(paths: dict[str, Path | None], text_column: str = "text", label_column: str = "label",
                  labels: list[str] | None = None) -> LabelledData:
    """Read the splits in ``paths`` (train required); labels are encoded against one name list."""
    if paths.get("train") is None:
        raise EdgepackError("recipe data.train: required")
    raw = {split: read_split(Path(p), text_column, label_column, f"data.{split}")
           for split, p in paths.items() if p is not None}
    names = label_names(raw["train"][1], labels)
    if len(names) < 2:
        raise EdgepackError(f"recipe data.train: needs at least 2 classes, found {len(names)}")
    splits = {split: LabelledSplit(texts, encode_labels(lbls, names, f"data.{split}"))
              for split, (texts, lbls) in raw.items()}
    return LabelledData(train=splits["train"], labels=names, validation=splits.get("validation"),
                        test=splits.get("test"))
