"""`edgepack bench BUNDLE --browser`: the web artifacts timed in headless Chromium, as rows of the bench's own table.

Each row is a ``TargetResult`` (runtime ``chromium-wasm`` for onnxruntime-web, ``chromium-mediapipe`` for
@mediapipe/tasks-text) timed over the same texts at their real lengths, so the browser sits beside LiteRT, ONNX
Runtime and the others in one report. The times are the page's own (``performance.now()`` around each inference,
5 µs resolution in a cross-origin isolated page); load is the page's fetch + session creation.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..manifest import Manifest
from ..report import RESULT_FAILED, RESULT_OK, InputLengths, LatencyStats, TargetResult
from .browser import BrowserError, run_in_browser, web_kind, web_targets

#: the report's runtime name per page runtime
RUNTIMES = {"onnx": "chromium-wasm", "mediapipe": "chromium-mediapipe"}


def _latency(ms: np.ndarray) -> LatencyStats:
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(mean=float(ms.mean()), std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0, min=float(ms.min()),
                        p50=float(p50), p90=float(p90), p99=float(p99), max=float(ms.max()))


def bench_in_browser(bundle: Path, texts: list[str], threads: list[int | None], runs: int, warmup: int,
                     targets: list[str] | None = None) -> list[TargetResult]:
    """One row per web artifact and thread count (MediaPipe's WASM has one thread: one row): at least ``runs``
    timed inferences spread over ``texts``, each text run once untimed first when ``warmup`` asks for it."""
    manifest = Manifest.load(bundle)
    entries = web_targets(manifest, [t for t in targets or [] if t in {e.name for e in manifest.targets}] or None)
    per_text = max(1, math.ceil(runs / len(texts)))
    warm = 1 if warmup > 0 else 0
    rows: list[TargetResult] = []
    for entry in entries:
        kind = web_kind(entry)
        for t in ([1] if kind == "mediapipe" else threads):
            size = (bundle / entry.file).stat().st_size if entry.file and (bundle / entry.file).is_file() else None
            row = TargetResult(target=entry.name, runtime=RUNTIMES[kind], precision=entry.precision, threads=t,
                               status=RESULT_OK, file_size_bytes=size, latency_inputs="real-length")
            try:
                run = run_in_browser(bundle, manifest, entry, texts, runs=per_text, warmup=warm, threads=t or 0)
            except BrowserError as exc:
                row.status, row.error = RESULT_FAILED, str(exc)
                rows.append(row)
                continue
            ms = np.asarray([v for per in run.ms for v in per], dtype=np.float64)
            row.latency_ms = _latency(ms)
            row.raw_ms = [float(v) for v in ms]
            row.runs, row.warmup_runs = int(len(ms)), warm * len(texts)
            row.timed_s = float(ms.sum() / 1000)
            row.throughput_ips = float(1000 / ms.mean())
            row.load_cold_ms = run.load_ms
            row.first_inference_ms = float(run.ms[0][0]) if warm == 0 else None
            lengths = [len(ids) for ids in run.token_ids if ids is not None]
            if lengths:
                row.input_lengths = InputLengths(n=len(lengths), mean=round(float(np.mean(lengths)), 2),
                                                 p50=float(np.percentile(lengths, 50)),
                                                 p90=float(np.percentile(lengths, 90)), max=int(max(lengths)))
            isolated = "cross-origin isolated" if run.cross_origin_isolated else "not isolated: 1 thread"
            row.notes.append(f"headless Chromium {run.browser}, WASM SIMD, {run.threads} thread(s) used "
                             f"({isolated}; {run.hardware_concurrency} logical CPUs seen)")
            rows.append(row)
    return rows
