"""Center: pull each item's tanh output to the fixed ±1 code of its classes (CSQ's Hadamard centers),
by mean squared error. The centers, multi-label targets and checkpointing come from the shared class."""

from __future__ import annotations

import torch

from hashkit.method_parts.classification import ClassCodeMethod


class CenterExample(ClassCodeMethod):
    name = "center_example"
    family = "class-codes"
    reference_code = ("none: an example",)
    paper = "example: squared distance to Hadamard class codes"
    relaxation = "tanh"  # reads tanh(u) through tanh_outputs, so --hash-activation tanh is accepted
    center_kind = "hadamard"

    def class_code_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"center": (self.tanh_outputs(outputs) - targets).pow(2).mean()}
