"""How closely a bundle's MediaPipe artifact, loaded as is by MediaPipe's Python Tasks API, follows what
`edgepack run` gives on texts the pack never saw.

    python benchmarks/mediapipe_agreement.py BUNDLE TEXTS.jsonl [--column text] [--limit 400]

TEXTS is a JSONL file (one object per line, the text under --column) or a plain text file (one text per line).
Prints one line per comparison and writes benchmarks/results/mediapipe_agreement.{md,json}: embedders are
compared by cosine, classifiers by top-1 agreement (and the cosine of the logit vectors).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from device_bench.predict import Bundle

RESULTS = Path(__file__).parent / "results"


def read_texts(path: Path, column: str, limit: int) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [json.loads(line)[column] if path.suffix == ".jsonl" else line for line in lines]
    return texts[:limit]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("texts", type=Path)
    parser.add_argument("--column", default="text")
    parser.add_argument("--limit", type=int, default=400)
    args = parser.parse_args()
    texts = read_texts(args.texts, args.column, args.limit)
    pick = Bundle(args.bundle)  # what `edgepack run` runs here
    mediapipe = Bundle(args.bundle, target="mediapipe-text")
    task = pick.manifest.task
    reference, ours = pick.outputs(texts), mediapipe.outputs(texts)
    cos = cosines(reference, ours)
    row = {"bundle": str(args.bundle), "task": task, "texts": len(texts), "texts_file": str(args.texts),
           "edgepack_run_target": pick.target.name, "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
           "host": platform.machine()}
    if task != "feature-extraction":
        row["top1_agreement"] = float((reference.argmax(1) == ours.argmax(1)).mean())
    print(json.dumps(row))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "mediapipe_agreement.json"
    rows = [r for r in (json.loads(out.read_text()) if out.exists() else []) if r["bundle"] != row["bundle"]] + [row]
    out.write_text(json.dumps(rows, indent=1) + "\n")
    md = ["| bundle | task | texts | `edgepack run` target | mean cos | min cos | top-1 agreement |", "|---|---|---:|---|---:|---:|---:|"]
    md += [f"| {r['bundle']} | {r['task']} | {r['texts']} | {r['edgepack_run_target']} | {r['mean_cosine']:.4f} | "
           f"{r['min_cosine']:.4f} | {r.get('top1_agreement', float('nan')):.4f} |" for r in rows]
    (RESULTS / "mediapipe_agreement.md").write_text(
        "# MediaPipe Python (TextEmbedder / TextClassifier, the file as is) vs `edgepack run`, unseen texts\n\n"
        + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
