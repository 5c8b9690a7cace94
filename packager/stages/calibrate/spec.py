"""The calibrate stage's options: which class's logit is shifted."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CalibrateSpec:
    #: the class whose logit gets the bias, by its label name: typically an intent set's "none of these" class
    #: (CLINC150's "oos"), which a distilled student predicts less often than its teacher does
    label: str
    #: the bias is searched in [-bound, bound]; a fit at a bound is reported as such
    bound: float = 20.0
