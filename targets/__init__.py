"""edgepack conversion targets: one module per target, found through the registry in ``base``.

Adding a target = a new module with a ``@register``-ed ``Target`` subclass, listed in
``BUILTIN_MODULES``. Target modules import their converters lazily, so listing
targets is cheap.
"""
from __future__ import annotations

import importlib

from .base import TARGETS, ExportContext, ExportResult, Target, TargetError, TargetOption, get_target, register

BUILTIN_MODULES = ("torchscript_mobile", "tflite", "tflite_full", "onnx_int8", "executorch", "mediapipe_text")

for _module in BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

DEFAULT_TARGETS = ("torchscript-mobile", "tflite-int8")

__all__ = ["TARGETS", "DEFAULT_TARGETS", "ExportContext", "ExportResult", "Target", "TargetError", "TargetOption", "get_target", "register"]
