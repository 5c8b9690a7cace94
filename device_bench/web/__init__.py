"""The browser as a device: a bundle's web artifacts run in headless Chromium, checked against `edgepack run`.

``harness.mjs`` (the page) runs an ``.onnx`` artifact with onnxruntime-web plus the bundle's ``tokenizer.json``
(@huggingface/tokenizers, transformers.js's tokenizer) and a MediaPipe ``.tflite`` with ``@mediapipe/tasks-text``;
``drive.mjs`` starts Debian's Chromium through playwright-core; ``browser.py`` serves the bundle and this folder on
loopback, calls the driver and compares what the page computed with the same texts through
``device_bench.predict.Bundle``. The JavaScript packages are pinned in ``package.json`` / ``package-lock.json`` and
installed by ``scripts/setup_web.sh``; nothing is fetched at run time.
"""
from .browser import (BrowserCheck, BrowserError, BrowserRun, browser_problem, check_in_browser, run_in_browser,
                      web_kind, web_targets)

__all__ = ["BrowserCheck", "BrowserError", "BrowserRun", "browser_problem", "check_in_browser", "run_in_browser",
           "web_kind", "web_targets"]
