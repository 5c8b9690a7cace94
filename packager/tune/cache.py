"""Stage outputs kept on disk between trials and runs, keyed by the stage's options and its input's key, so
trials share every common prefix of stages and a resumed tune trains nothing twice."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..recipe.spec import Recipe
from ..stages import Stage


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_fingerprint(path: Path | None) -> Any:
    if path is None:
        return None
    if path.is_dir():
        return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                      for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)


def input_key(recipe: Recipe, source: str) -> str:
    """What the first stage's input depends on: the model, the data, and the settings that shape training."""
    folder = Path(source)
    data = {split: _file_fingerprint(recipe.data_path(split)) for split in ("train", "validation", "test", "unlabeled")}
    return digest({"model": _file_fingerprint(folder) if folder.is_dir() else source, "data": data,
                    "columns": [recipe.data.text_column, recipe.data.label_column, recipe.data.unlabeled_column],
                    "labels": recipe.data.labels, "task": recipe.task, "seq_len": recipe.seq_len, "seed": recipe.seed,
                    "precision": recipe.precision})


class StageCache:
    """Stage outputs on disk (model, tokenizer, the measured row), keyed by the stage's options and its input."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(input_key: str, stage: Stage) -> str:
        return digest({"input": input_key, "stage": stage.to_dict()})

    def has(self, key: str) -> bool:
        return (self.root / key / "meta.json").is_file()

    def meta(self, key: str) -> dict[str, Any]:
        return json.loads((self.root / key / "meta.json").read_text())

    def row(self, key: str):
        from ..training.evaluate import StageRow

        return StageRow(**self.meta(key)["row"])

    def save(self, key: str, model: Any, tokenizer: Any, row: Any) -> None:
        """Written to a temporary folder, then renamed: an interrupted save leaves nothing half-written."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            model.save_pretrained(tmp / "model")
            tokenizer.save_pretrained(tmp / "model")
            meta = {"row": row.to_dict(), "num_layers": getattr(model.config, "num_hidden_layers", None)}
            (tmp / "meta.json").write_text(json.dumps(meta, default=str))
            if (self.root / key).exists():
                shutil.rmtree(self.root / key)
            tmp.rename(self.root / key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self, key: str, task: Any, labels: list[str] | None):
        from transformers.utils import logging as hf_logging

        from ..models import load_model

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # one bar per load and trial is noise
        try:
            loaded = load_model(str(self.root / key / "model"), task, labels=labels)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        return loaded.model, loaded.tokenizer
