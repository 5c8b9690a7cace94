"""Serve a bundle on loopback, run one of its web artifacts in headless Chromium, compare with `edgepack run`.

Why a real browser: onnxruntime-web and MediaPipe's WASM kernels, and the JavaScript tokenizer, are not the
ones `edgepack run` uses; a bundle meant for a web page is only verified once the page itself has run it.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..manifest import Manifest, ManifestError, TargetEntry
from ..parity import task_metrics

WEB_DIR = Path(__file__).resolve().parent
NODE_MODULES = WEB_DIR / "node_modules"
UNSEEN_TEXTS = WEB_DIR / "unseen_texts.txt"
SETUP_HINT = "scripts/setup_web.sh installs it"
#: per task: metric -> its lower bound for a web artifact against `edgepack run` on unseen texts (embeddings: the
#: worst text's cosine; classifiers: the share of texts whose top-1 class agrees)
BROWSER_GATES: dict[str, dict[str, float]] = {
    "feature-extraction": {"min_cosine": 0.99},
    "sequence-classification": {"top1_agreement": 0.98},
}
#: the npm packages the page imports (package.json pins them)
REQUIRED_PACKAGES = ("playwright-core", "onnxruntime-web", "@huggingface/tokenizers", "@mediapipe/tasks-text")
DEFAULT_TIMEOUT_S = 300.0


class BrowserError(RuntimeError):
    """The browser check cannot run or the page failed; one line for the user."""


def chromium_path() -> str | None:
    """Debian's Chromium (``$EDGEPACK_CHROMIUM`` overrides)."""
    override = os.environ.get("EDGEPACK_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_problem() -> str | None:
    """Why the browser device cannot run here (one line), or None when Chromium, node and the packages are there."""
    if chromium_path() is None:
        return f"no Chromium here ({SETUP_HINT}: apt-get install chromium)"
    if shutil.which("node") is None:
        return "no node here (Node.js >= 18 drives the browser)"
    missing = [name for name in REQUIRED_PACKAGES if not (NODE_MODULES / name / "package.json").is_file()]
    if missing:
        return f"npm packages missing in {NODE_MODULES} ({', '.join(missing)}; {SETUP_HINT})"
    return None


def web_kind(entry: TargetEntry) -> str | None:
    """Which page runtime runs ``entry``'s artifact: "onnx" (onnxruntime-web), "mediapipe" (@mediapipe/tasks-text)."""
    if entry.runtime == "onnxruntime" and (entry.file or "").endswith(".onnx"):
        return "onnx"
    if (entry.runtime == "mediapipe" or entry.name.startswith("mediapipe")) and (entry.file or "").endswith(".tflite"):
        return "mediapipe"
    return None


def web_targets(manifest: Manifest, names: list[str] | None = None) -> list[TargetEntry]:
    """The bundle's artifacts a page can run (``names``: only those, each checked)."""
    runnable = {t.name: t for t in manifest.runnable_targets()}
    if names:
        unknown = [n for n in names if n not in runnable]
        if unknown:
            raise BrowserError(f"--targets {unknown[0]}: no artifact of that name in this bundle "
                               f"(it has: {', '.join(runnable) or 'none'})")
        chosen = [runnable[n] for n in names]
        other = [t.name for t in chosen if web_kind(t) is None]
        if other:
            raise BrowserError(f"--targets {other[0]}: not a web artifact (the browser runs .onnx and MediaPipe .tflite)")
        return chosen
    return [t for t in runnable.values() if web_kind(t) is not None]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """/bundle/* from the bundle, /web/* from this folder; cross-origin isolated so WASM threads are allowed."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json"}

    def __init__(self, *args, bundle: Path, **kwargs) -> None:
        self.bundle = bundle
        super().__init__(*args, directory=str(WEB_DIR), **kwargs)

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, root in (("/bundle/", self.bundle), ("/web/", WEB_DIR)):
            if path.startswith(prefix):
                self.directory = str(root)
                return super().translate_path("/" + path[len(prefix):])
        return str(WEB_DIR / "__nothing__")

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # the page's requests are not the user's business
        pass


@contextlib.contextmanager
def serve(bundle: Path) -> Iterator[str]:
    """The bundle and the harness on a free loopback port for the ``with`` block; yields the page's URL."""
    handler = functools.partial(_Handler, bundle=Path(bundle).resolve())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/web/page.html"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class BrowserRun:
    """What the page computed for each text: raw outputs [N, D], the token ids it fed (onnx) and per-run times."""

    target: str
    kind: str
    outputs: np.ndarray
    token_ids: list[list[int] | None]
    ms: list[list[float]]  # per text: one time per timed run, milliseconds
    load_ms: float
    threads: int
    cross_origin_isolated: bool
    browser: str | None
    hardware_concurrency: int | None = None
    console_errors: list[str] = field(default_factory=list)


def _normalization(bundle: Path, entry: TargetEntry, kind: str) -> str | None:
    """What the MediaPipe artifact's metadata asks the app to do to a text first (its runner's rule), else None."""
    if kind != "mediapipe":
        return None
    from ..runners.mediapipe import text_normalization

    return text_normalization(Path(bundle) / str(entry.file))


#: the kind of run that calls the bundle's USAGE.md JavaScript snippet (its MediaPipe artifact, as an app would)
USAGE_KIND = "usage"
USAGE_SNIPPET = re.compile(r"```javascript\n(.*?)```", re.DOTALL)


def usage_snippet(bundle: Path) -> str | None:
    """The JavaScript module of the bundle's USAGE.md (written at pack time for its MediaPipe artifact), or None."""
    try:
        found = USAGE_SNIPPET.search((Path(bundle) / "USAGE.md").read_text(encoding="utf-8"))
    except OSError:
        return None
    return found.group(1) if found else None


def run_in_browser(bundle: Path, manifest: Manifest, entry: TargetEntry, texts: list[str], *, runs: int = 1,
                   warmup: int = 0, threads: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S,
                   snippet: str | None = None) -> BrowserRun:
    """Run ``entry``'s artifact on ``texts`` in headless Chromium (``runs`` timed runs per text after ``warmup``;
    ``threads``: onnxruntime-web's WASM threads, 0 = its choice; ``snippet``: call this USAGE.md module on the
    artifact instead of the page's own code); raises BrowserError with one line on failure."""
    problem = browser_problem()
    if problem:
        raise BrowserError(problem)
    kind = web_kind(entry)
    if kind is None:
        raise BrowserError(f"{entry.name}: not a web artifact")
    if snippet is not None:
        kind = USAGE_KIND
    job = {"kind": kind, "module_source": snippet, "file": entry.file, "tokenizer": manifest.tokenizer, "task": manifest.task,
           "inputs": [{"name": s.name, "dtype": s.dtype} for s in manifest.input_spec.inputs],
           "max_tokens": int(manifest.input_spec.seq_len), "texts": list(texts), "warmup": int(warmup),
           "runs": int(runs), "threads": int(threads), "normalization": _normalization(bundle, entry, kind)}
    with tempfile.TemporaryDirectory(prefix="edgepack-chromium-") as profile, serve(bundle) as url:
        request = {"chromium": chromium_path(), "url": url, "job": job, "timeout_ms": int(timeout_s * 1000),
                   "user_data_dir": profile}
        try:
            done = subprocess.run(["node", str(WEB_DIR / "drive.mjs")], input=json.dumps(request), text=True,
                                  capture_output=True, cwd=WEB_DIR, timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"{entry.name}: the browser did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise BrowserError(f"{entry.name} in Chromium: {why}")
    reply = json.loads(done.stdout)
    result = reply["result"]
    rows = result["rows"]
    return BrowserRun(target=entry.name, kind=kind, outputs=np.asarray([r["output"] for r in rows], dtype=np.float32),
                      token_ids=[r["ids"] for r in rows], ms=[[float(t) for t in r["ms"]] for r in rows],
                      load_ms=float(result["load_ms"]), threads=int(result["threads"]),
                      cross_origin_isolated=bool(result["cross_origin_isolated"]), browser=reply.get("browser"),
                      hardware_concurrency=result.get("hardware_concurrency"),
                      console_errors=list(reply.get("console") or []))


@dataclass
class BrowserCheck:
    """One web artifact in Chromium against `edgepack run` on the same texts."""

    target: str
    kind: str
    reference: str  # the target `edgepack run` used for the comparison
    n_texts: int
    metrics: dict[str, float]
    gates: dict[str, float]
    failures: list[str]
    token_mismatches: int | None  # texts whose ids differ from the bundle's tokenizer (None: the page tokenizes inside)
    browser: str | None
    load_ms: float
    median_ms: float

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"target": self.target, "kind": self.kind, "reference": self.reference, "n_texts": self.n_texts,
                "metrics": self.metrics, "gates": self.gates, "passed": self.passed, "failures": self.failures,
                "token_mismatches": self.token_mismatches, "browser": self.browser, "load_ms": self.load_ms,
                "median_ms": self.median_ms}

    def summary(self) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items() if k in ("min_cosine", "mean_cosine",
                                                                                       "top1_agreement"))
        tokens = "" if self.token_mismatches is None else f", token ids differ on {self.token_mismatches}"
        verdict = "PASS" if self.passed else "FAIL (" + "; ".join(self.failures) + ")"
        return (f"{self.target} ({self.kind}) in Chromium vs edgepack run ({self.reference}) on {self.n_texts} "
                f"unseen texts: {shown}{tokens}; median {self.median_ms:.2f} ms/text -> {verdict}")


def reference_target(manifest: Manifest, entry: TargetEntry) -> str:
    """What `edgepack run` runs for the comparison: the same artifact where its runtime is installed here, else
    the first verified artifact it can run (a MediaPipe file the device's LiteRT cannot open)."""
    from ..fingerprint import device_runtimes
    from ..predict import verified_here

    installed = device_runtimes()
    if installed.get(entry.runtime) is not None:
        return entry.name
    usable = verified_here(manifest, installed)
    if not usable:
        raise BrowserError(f"{entry.name}: no artifact of this bundle runs here to compare with")
    return usable[0].name


def check_in_browser(bundle: Path | str, targets: list[str] | None = None, texts: list[str] | None = None,
                     timeout_s: float = DEFAULT_TIMEOUT_S) -> list[BrowserCheck]:
    """Each web artifact of the bundle in Chromium against `edgepack run` on ``texts`` (default: texts no pack
    has seen, ``unseen_texts.txt``), gated as ``BROWSER_GATES`` says."""
    from ..predict import Bundle, BundleError

    problem = browser_problem()
    if problem:
        raise BrowserError(problem)
    bundle = Path(bundle)
    try:
        manifest = Manifest.load(bundle)
    except ManifestError as exc:
        raise BrowserError(str(exc)) from None
    if manifest.task not in BROWSER_GATES:
        raise BrowserError(f"task {manifest.task!r}: the browser check covers {', '.join(BROWSER_GATES)}")
    entries = web_targets(manifest, targets)
    if not entries:
        raise BrowserError(f"{bundle}: no web artifact (pack --targets onnx-int8,onnx-fp32 or a MediaPipe target)")
    texts = texts or [t.strip() for t in UNSEEN_TEXTS.read_text(encoding="utf-8").splitlines() if t.strip()]
    snippet = usage_snippet(bundle)
    checks = []
    for entry in entries:
        reference = reference_target(manifest, entry)
        try:
            native = Bundle(bundle, target=reference)
        except BundleError as exc:
            raise BrowserError(str(exc)) from None
        expected = native.outputs(texts)
        expected_ids = [t.ids for t in native.tokenize(texts)]
        # the page's own code, then (for the MediaPipe artifact) the USAGE.md snippet an app would paste
        for code in [None] + ([snippet] if snippet and web_kind(entry) == "mediapipe" else []):
            run = run_in_browser(bundle, manifest, entry, texts, timeout_s=timeout_s, snippet=code)
            got = run.outputs.reshape(len(texts), -1)
            expected = expected.reshape(len(texts), -1)
            if got.shape != expected.shape:
                raise BrowserError(f"{entry.name}: the page gave outputs {got.shape}, edgepack run {expected.shape}")
            metrics = task_metrics(manifest.task, expected, got)
            gates = BROWSER_GATES[manifest.task]
            failures = [f"{name}={metrics[name]:.4f} < {limit}" for name, limit in gates.items()
                        if metrics[name] < limit]
            mismatches = None if run.kind != "onnx" else sum(a != b for a, b in zip(run.token_ids, expected_ids))
            times = [t for per_text in run.ms for t in per_text]
            checks.append(BrowserCheck(target=entry.name, kind=run.kind, reference=reference, n_texts=len(texts),
                                       metrics=metrics, gates=gates, failures=failures, token_mismatches=mismatches,
                                       browser=run.browser, load_ms=run.load_ms, median_ms=float(np.median(times))))
    return checks


__all__ = ["BROWSER_GATES", "BrowserCheck", "BrowserError", "BrowserRun", "browser_problem", "check_in_browser",
           "run_in_browser", "web_kind", "web_targets"]
