"""Closed-form: PCA hashing. The head projects centred features on their top principal directions,
u = Vᵀ(x − μ); fitted once on the training split's frozen features, no epochs and no optimiser."""

from __future__ import annotations

import torch

from hashkit.method import HashingMethod


class ClosedFormExample(HashingMethod):
    name = "closed_form_example"
    family = "shallow"
    reference_code = ("none: an example",)
    paper = "example: PCA hashing"
    supervised = False
    closed_form = True
    head = "fixed_linear"
    recipes = {"cpu": {"freeze_backbone": True}}

    def bind_model(self, model: torch.nn.Module) -> None:
        self.head_module = model.head

    def fit(self, features: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        x = features.double()
        mean = x.mean(dim=0)
        covariance = (x - mean).t() @ (x - mean) / max(len(x) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        directions = eigenvectors[:, -self.code_length :].flip(1).t()  # (bits, d), largest variance first
        self.head_module.set_projection(directions.float(), -(directions @ mean).float())
        return {"explained_variance": float(eigenvalues[-self.code_length :].sum() / eigenvalues.sum())}
