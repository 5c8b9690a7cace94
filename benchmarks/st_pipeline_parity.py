"""Embedding parity against the model's own pipeline: pack a sentence-transformers folder, compare the artifact
with ``SentenceTransformer(folder).encode`` on sentences the pack never saw.

    python benchmarks/st_pipeline_parity.py --pooling cls --targets tflite-int8

The folder is the built-in all-MiniLM-L6-v2 with its pipeline rewritten (``--pooling``, Normalize on unless
``--no-normalize``), the case of issue #15: a CLS-pooled MiniLM packed as if it were mean-pooled measured
cosine 0.37–0.57. No timings: this prints cosines only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: written for this check; none of them is in packager/data/sample_texts.txt (the pack's calibration texts)
UNSEEN = [
    "The lighthouse keeper logged every passing ship in a leather notebook.",
    "Our quarterly invoice was paid two days after the deadline.",
    "Can you recommend a vegetarian restaurant near the harbour?",
    "The volcano has been dormant for nearly four centuries.",
    "Please reset my password, the old one stopped working yesterday.",
    "A heavy frost damaged most of the apple blossoms this spring.",
    "The chess tournament ended in a surprising draw.",
    "He repaired the bicycle chain with a borrowed tool.",
    "Satellite images show the glacier retreating faster than expected.",
    "I would like to book a table for six on Friday evening.",
    "The orchestra tuned their instruments before the overture.",
    "My flight to Lisbon was delayed because of fog.",
]

ST_MODES = {"cls": "cls", "mean": "mean", "max": "max", "last-token": "lasttoken",
            "mean-sqrt-len": "mean_sqrt_len_tokens", "weighted-mean": "weightedmean"}


def build_folder(out: Path, pooling: str, normalize: bool) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    from packager.models import default_model_path

    transformer = Transformer(str(default_model_path()), max_seq_length=256)
    modules = [transformer, Pooling(transformer.get_word_embedding_dimension(), pooling_mode=ST_MODES[pooling])]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pooling", default="cls", choices=sorted(ST_MODES))
    parser.add_argument("--no-normalize", action="store_true")
    parser.add_argument("--targets", default="tflite-int8")
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from device_bench.manifest import Manifest
    from device_bench.runners import load_runner
    from packager.calib import tokenize

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / "st-model", args.pooling, not args.no_normalize)
        bundle = Path(tmp) / "bundle"
        cmd = [str(Path(sys.executable).parent / "edgepack"), "pack", "--model", str(folder), "--task",
               "feature-extraction", "--targets", args.targets, "--seq-len", str(args.seq_len), "-o", str(bundle)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            sys.exit(f"pack failed: {proc.stderr.strip()}")
        manifest = Manifest.load(bundle)
        spec = manifest.input_spec
        print(f"pipeline in the manifest: pooling={spec.pooling} normalize={spec.normalize} "
              f"source={getattr(spec, 'pooling_source', None)}; parity reference: "
              f"{getattr(manifest, 'parity_reference', None)}")
        expected = SentenceTransformer(str(folder), device="cpu").encode(UNSEEN, convert_to_numpy=True)
        tokenizer = AutoTokenizer.from_pretrained(str(bundle / manifest.tokenizer))
        inputs = tokenize(tokenizer, UNSEEN, spec.seq_len)
        for entry in manifest.runnable_targets():
            runner = load_runner(entry.runtime, bundle / entry.file)
            got = np.concatenate([runner.run({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(len(UNSEEN))])
            cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
            print(f"{entry.name}: pack parity {entry.parity.mean_cosine if entry.parity else None:.4f}; "
                  f"cosine vs SentenceTransformer.encode on {len(UNSEEN)} unseen sentences: "
                  f"min {cos.min():.4f} mean {cos.mean():.4f} max {cos.max():.4f}")
        shutil.rmtree(bundle, ignore_errors=True)


if __name__ == "__main__":
    main()
