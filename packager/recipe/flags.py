"""Recipe keys as `edgepack pack` flags: override a recipe file's keys, or write a whole recipe on the command line.

``--stage``, ``--train``/``--validation``/``--test``, ``--gate-max-drop`` and ``--set KEY=VALUE`` are recipe keys;
the plain pack flags given explicitly (``--model``, ``--targets``, ``--seq-len``, ``--runtime``, ``-O``…) set the
recipe keys of the same meaning. Overrides are applied to the raw mapping before validation, so a bad one gets
the recipe's own error naming the key. Paths given on the command line are relative to the current folder
(those in a recipe file stay relative to the file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RecipeError

#: flags of `pack` that only mean something without a recipe, with the recipe key that replaces them
NOT_FOR_RECIPES = {
    "calib": "a recipe calibrates on its training split (data.train)",
    "calib_column": "a recipe calibrates on its training split (data.train)",
    "allow_parity_failure": "a recipe keeps its parity gate (parity.min_cosine / parity.min_agreement)",
}
#: `pack` parameters given explicitly -> the recipe key they set (``target_list`` is split on commas)
FLAG_KEYS = {"model": "model", "task": "task", "target_list": "targets", "seq_len": "seq_len",
             "calib_limit": "calib_samples", "min_cosine": "parity.min_cosine",
             "min_agreement": "parity.min_agreement", "fallback": "parity.fallback", "runtimes": "runtimes", "target_options": "target_options",
             "threads": "threads", "verify_isa": "parity.isas"}
DATA_SPLITS = ("train", "validation", "test")


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{text!r}: not a YAML value ({getattr(exc, 'problem', None) or exc})") from None


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw["stages"][1]["distill"]["temperature"] = value`` for ``key="stages.1.distill.temperature"``."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise RecipeError(f"--set {key}=...: expected a dotted recipe key such as gate.max_accuracy_drop")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"--set {key}: {where}: no such list item (the list has {len(node)})")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if node is None:
                    raise RecipeError(f"--set {key}: {where} is empty")
        else:
            raise RecipeError(f"--set {key}: {'.'.join(parts[:i])} is a value, not a mapping or a list")


def parse_stage_flag(text: str) -> dict[str, Any]:
    """``"prune={method: structured, heads: 0.25}"`` or ``"trim_vocab"`` -> one stage mapping of a recipe."""
    kind, sep, body = text.partition("=")
    kind = kind.strip()
    if not kind:
        raise RecipeError(f"--stage {text!r}: expected KIND or KIND={{key: value, ...}}, e.g. distill={{epochs: 3}}")
    spec = _yaml_value(body) if sep else {}
    if spec is not None and not isinstance(spec, dict):
        raise RecipeError(f"--stage {text!r}: the part after '=' must be a mapping, e.g. {kind}={{epochs: 3}}")
    return {kind: spec or {}}


def parse_set_flag(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. gate.max_accuracy_drop=0.01")
    return key.strip(), _yaml_value(value)


def apply_overrides(raw: dict[str, Any], overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """Apply (dotted key, value) pairs in order; a whole-mapping value for ``target_options``/``runtimes`` merges."""
    for key, value in overrides:
        if key in ("target_options", "runtimes") and isinstance(value, dict) and isinstance(raw.get(key), dict):
            for name, item in value.items():
                if isinstance(item, dict) and isinstance(raw[key].get(name), dict):
                    raw[key][name] = {**raw[key][name], **item}
                else:
                    raw[key][name] = item
        else:
            set_dotted(raw, key, value)
    return raw


def cli_overrides(*, stages: tuple[str, ...] = (), sets: tuple[str, ...] = (), data_paths: dict[str, Path | None],
                  data_columns: dict[str, str | None], gate_max_drop: float | None,
                  explicit: dict[str, Any]) -> list[tuple[str, Any]]:
    """The (key, value) overrides a `pack` command line asks for, in precedence order (``--set`` last)."""
    out: list[tuple[str, Any]] = []
    for name, value in explicit.items():
        if name in NOT_FOR_RECIPES:
            raise RecipeError(f"--{name.replace('_', '-')}: not used with a recipe ({NOT_FOR_RECIPES[name]})")
        if name == "target_list":
            value = [t.strip() for t in value.split(",") if t.strip()]
        out.append((FLAG_KEYS[name], value))
    for split, path in data_paths.items():
        if path is not None:
            out.append((f"data.{split}", str(Path(path).expanduser().resolve())))
    for column, value in data_columns.items():
        if value is not None:
            out.append((f"data.{column}", value))
    if stages:
        out.append(("stages", [parse_stage_flag(s) for s in stages]))
    if gate_max_drop is not None:
        out.append(("gate.max_accuracy_drop", gate_max_drop))
    for text in sets:
        key, value = parse_set_flag(text)
        if key.startswith("data.") and key.split(".")[-1] in DATA_SPLITS and isinstance(value, str):
            value = str(Path(value).expanduser().resolve())  # relative to where the command runs
        out.append((key, value))
    return out
