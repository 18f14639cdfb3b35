"""DIHN — Deep Incremental Hashing Network (Wu, Dai, Liu, Li, Wang, CVPR 2019).

New classes arrive: DIHN learns codes for the incremental database images directly, keeps the
original database codes of an ADSH run **fixed** (bit-identical: never re-encoded), and updates the
query network. Start from the ADSH checkpoint trained on the seen classes::

    hashkit train --method adsh --num-seen 7 --out runs/adsh …
    hashkit train --method dihn --num-seen 7 --from runs/adsh/checkpoint.pt --out runs/dihn …

With B = [B_orig (fixed, from ADSH); B_new (learned)] over the whole database Γ = original +
incremental, Ω sampled from all of Γ each outer iteration and ũ_i = tanh(F(x_i)), the objective is
(the IIE-MR/DIHN seed's ``DIHN_Loss``, normalised by batch size × |Γ| as there)::

    Σ_{i∈Ω} Σ_{j∈Γ} (ũ_iᵀ b_j − c S_ij)²  +  γ Σ_{i∈Ω} ‖b_i − ũ_i‖²  +  μ Σ_{i∈Ω} ũ_iᵀ 1

with the seeds' soft S (+1 / −#similar/#dissimilar, see methods/adsh.py). The μ term is the seed's
"correlation" term, taken as written there (a linear sum of the relaxed bits). B_new is updated by
the same DCC as ADSH restricted to the incremental columns: Q = −2c S_{Ω,new}ᵀ Ũ − 2γ Ū_new, and the
μ term (a function of Θ only) does not enter it.

Seed defaults: γ 200, μ 50, 50 outer iterations × 3 epochs × 2,000 samples, Adam lr 1e-4, batch 64,
B_new initialised with random signs. The seed restarts the network from ImageNet AlexNet; hashkit
starts from the ADSH checkpoint's network (``--from``), the natural incremental setting.
"""

from __future__ import annotations

from typing import Any

import torch

from hashkit.errors import HashkitError
from hashkit.method import Batch, Hyper, TrainingData
from hashkit.registry import DATASETS, METHODS

from hashkit.data.incremental import PROTOCOL_KEYS as INCREMENTAL_PROTOCOL_KEYS

from .adsh import ADSH, adsh_loss, incremental_info, random_codes, soft_similarity


@METHODS.register("dihn")
class DIHN(ADSH):
    name = "dihn"
    family = "asymmetric"
    reference_code = ('IIE-MR/DIHN',)
    relaxation = "tanh"
    paper = "Wu, Dai, Liu, Li, Wang. Deep Incremental Hashing Network for Efficient Image Retrieval. CVPR 2019"
    hyperparameters = {
        **ADSH.hyperparameters,
        "mu": Hyper(50.0, "weight μ of DIHN's correlation term μ Σ tanh(F(x_i))ᵀ1 (IIE-MR/DIHN seed)"),
    }
    recipes = {
        # IIE-MR/DIHN dihn.py / run.py: as its ADSH, with ExponentialLR(0.91) stepped before each outer
        # iteration (iteration k at 1e-4 · 0.91^(k+1) = 9.1e-5 · 0.91^k) and μ 50.
        "seed": {**ADSH.recipes["seed"], "lr": 9.1e-5, "lr_gamma": 0.91, "mu": 50.0},
        "cpu": dict(ADSH.recipes["cpu"]),
    }
    # The incremental split must be ADSH's: taken from the --from checkpoint unless given (then checked).
    init_fixed_keys = ("dataset", *INCREMENTAL_PROTOCOL_KEYS)
    starts_from = "adsh"
    test_flags = {"num_seen": 3}
    training_split = "database"  # the whole database: original + incremental

    def setup(self, data: TrainingData) -> None:
        if data.labels is None:
            raise HashkitError("dihn is supervised: it needs the database labels")
        info = incremental_info(data.splits)
        checkpoint = data.init_checkpoint
        if info is None:
            hint = (checkpoint or {}).get("config", {}).get("num_seen") or 7
            raise HashkitError(
                f"dihn learns codes for new classes: it needs the incremental protocol; pass --num-seen {hint} "
                "(the same as the ADSH checkpoint given with --from)"
            )
        if checkpoint is None:
            raise HashkitError(
                "dihn starts from an ADSH checkpoint trained on the seen classes: run `hashkit train --method adsh "
                f"--num-seen {info['num_seen']} --out runs/adsh …` first, then pass --from runs/adsh/checkpoint.pt"
            )
        old = original_codes(checkpoint, info, self.code_length)
        self.num_codes = data.num_items
        self.num_frozen = info["num_original"]
        if self.num_codes != self.num_frozen + info["num_incremental"]:
            raise HashkitError("dihn trains on the whole database (original + incremental); the training split differs")
        self.labels = data.labels
        new = random_codes(info["num_incremental"], self.code_length, self.device)
        self.V = torch.cat([old.to(self.device), new])

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        u = self.tanh_outputs(outputs)  # the seed's tanh hash layer, applied once
        self.U[self.slot[batch.index.cpu()].to(self.device)] = u.detach().to(self.U.dtype)
        s = soft_similarity(batch.labels, self.labels, self.ratio)
        return dihn_loss(u, s, self.V, self.V[batch.index], self.hparams["gamma"], self.hparams["mu"], self.code_length)


def dihn_loss(
    u: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, batch_codes: torch.Tensor, gamma: float, mu: float, code_length: int
) -> dict[str, torch.Tensor]:
    """ADSH's two terms over the whole database (fixed original + learned new codes) plus the seed's
    correlation term μ Σ ũ_iᵀ1, all divided by b·|Γ|."""
    terms = adsh_loss(u, s, codes, batch_codes, gamma, code_length)
    terms["correlation"] = mu * u.sum() / (u.shape[0] * codes.shape[0])
    return terms


def original_codes(checkpoint: dict[str, Any], info: dict[str, Any], code_length: int) -> torch.Tensor:
    """The ADSH checkpoint's V after checking it was trained on this run's original database."""
    source = checkpoint.get("config", {})
    where = f"--from {source['out']}/checkpoint.pt" if source.get("out") else "the --from checkpoint"
    if checkpoint.get("method") != "adsh":
        raise HashkitError(
            f"{where} is a {checkpoint.get('method')} checkpoint; dihn starts from an ADSH checkpoint trained with --num-seen"
        )
    if source.get("num_seen") is None:
        raise HashkitError(
            f"{where} was trained without --num-seen (its codes cover the whole database, new classes included); "
            f"train ADSH with --num-seen {info['num_seen']} first"
        )
    current = dict(info["protocol"])
    differ = [key for key in current if source.get(key) != current[key]]
    same_dataset = _canonical(source.get("dataset")) == _canonical(info["dataset"])
    if differ or not same_dataset:
        flags = [f"--dataset {source.get('dataset')}"] if not same_dataset else []
        for key in differ:
            flag = "--" + key.replace("_", "-")
            flags.append(f"{flag} {source[key]}" if source.get(key) is not None else f"no {flag}")
        raise HashkitError(
            f"{where} was trained on another original database (this run differs in "
            f"{', '.join(['dataset'] * (not same_dataset) + differ)}); pass {' '.join(flags)} as the ADSH run did"
        )
    v = checkpoint.get("method_state", {}).get("V")
    expected = (info["num_original"], code_length)
    if v is None or tuple(v.shape) != expected:
        raise HashkitError(
            f"{where} holds database codes of shape {None if v is None else tuple(v.shape)}, expected {expected} "
            "(original database × code length); use the ADSH checkpoint of this protocol"
        )
    return v.float()


def _canonical(name: Any) -> str:
    """A dataset's registered name (aliases resolved); unregistered names compare as written."""
    try:
        return DATASETS.canonical(str(name))
    except HashkitError:
        return str(name).strip().lower()
