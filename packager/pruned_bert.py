"""BERT with a different number of attention heads per layer: the ``bert`` entry of ``packager.pruned_models``
(kept under this name for the folders and imports that use it)."""
from __future__ import annotations

from .pruned_models import ARCHS, PrunedBertConfig  # noqa: F401  (registered by pruned_models)

MODEL_TYPE = ARCHS["bert"].model_type
