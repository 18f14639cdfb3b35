"""CE on tanh codes — hashkit's earlier cross-entropy baseline, kept under its own name: the linear classifier of
``ce`` (methods/ce.py) reads tanh(u) instead of FIRe's raw u.

    L = CE(W tanh(u) + c, y)

Not a reference method: the README's CPU measurement of "the CE baseline" (0.7779 at 32 bits, seed 0, note 11)
and note 6 ("the CE baseline is not beaten") were taken with this form. Codes are sign(u).
"""

from __future__ import annotations

import torch

from hashkit.registry import METHODS
from hashkit.methods.ce import CE


@METHODS.register("ce_tanh")
class CETanh(CE):
    name = "ce_tanh"
    family = "classifier"
    reference_code = ('CISiPLab/cisip-FIRe',)
    paper = "cross-entropy baseline on tanh codes (hashkit's variant of CISiPLab's FIRe 'ce')"

    def classifier_inputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(outputs)
