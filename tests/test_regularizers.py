"""--hash-dropout and --drop-path: what they change in training, and that evaluation never sees them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hashkit.errors import HashkitError
from hashkit.model import build_model, set_drop_path


def lite(**options) -> nn.Module:
    torch.manual_seed(0)
    return build_model("efficientnet_lite0", 16, pretrained=False, **options)


def test_drop_path_follows_efficientnets_schedule_and_drops_whole_rows() -> None:
    model = lite()
    assert set_drop_path(model.backbone, 0.2) == 16
    rates = [model.backbone[1 + i].drop_path for i in range(16)]  # stages: stem, block0..block15, head
    assert rates == pytest.approx([0.2 * i / 16 for i in range(16)])
    block = model.backbone[13]  # block12: 192 → 192 channels, stride 1, a residual block
    assert block.residual and block.drop_path == pytest.approx(0.15)
    block.drop_path = 0.5  # a large rate, so that both outcomes occur in 64 rows
    x = torch.randn(64, 192, 4, 4)
    block.eval()
    plain = block(x)
    block.drop_path = 0.0
    assert torch.equal(block(x), plain)  # evaluation: the rate changes nothing
    branch = plain - x
    block.drop_path = 0.5
    block.train()
    for m in block.modules():  # keep BN statistics out of it: only the drop is compared
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    torch.manual_seed(1)
    out = block(x)
    dropped = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
    kept = torch.tensor([torch.allclose(out[i], x[i] + 2 * branch[i], atol=1e-5) for i in range(64)])
    assert bool((dropped | kept).all()) and 10 < int(dropped.sum()) < 54  # each row: dropped, or kept ×1/(1−p)


def test_hash_dropout_only_acts_in_training() -> None:
    plain, dropped = lite(), lite(hash_dropout=0.5)
    assert plain.feature_dropout is None and isinstance(dropped.feature_dropout, nn.Dropout)
    assert plain.state_dict().keys() == dropped.state_dict().keys()  # checkpoints stay interchangeable
    dropped.load_state_dict(plain.state_dict())
    features = torch.randn(4, 1280)  # start after the last stage: the input is the backbone's features
    end = len(plain.backbone)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(features, start=end), dropped(features, start=end))
    dropped.train()
    seen = []
    dropped.feature_dropout.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0], output)))
    out = dropped(features, start=end)
    given, kept = seen[0]
    assert torch.equal(given, features)
    zero = kept == 0
    assert torch.allclose(kept[~zero], 2 * features[~zero]) and 0.4 < zero.float().mean() < 0.6  # ×1/(1−p)
    assert torch.allclose(out, plain.head.linear(kept), atol=1e-6)  # the hash layer sees the dropped features


@pytest.mark.parametrize("options", [{"hash_dropout": 1.0}, {"hash_dropout": -0.1}])
def test_out_of_range_rates_are_refused(options) -> None:
    with pytest.raises(HashkitError, match="--hash-dropout must be in"):
        lite(**options)
    with pytest.raises(HashkitError, match="--drop-path must be in"):
        set_drop_path(lite().backbone, 1.0)


def test_mixup_mixes_inputs_and_labels_by_one_lambda_and_a_permutation() -> None:
    """With label i = the i-th unit vector, mixed labels are the mixing matrix M = λI + (1 − λ)P itself, so
    the mixed inputs must be M @ x: one λ for the batch, a permutation P, inputs and labels mixed alike."""
    from hashkit.method import Batch
    from hashkit.trainer import mix_batch

    rows = 8
    inputs = torch.randn(rows, 2, 3, 3)  # (b, views, …): views mix along the batch dimension only
    torch.manual_seed(0)
    batch = Batch(inputs=inputs.clone(), labels=torch.eye(rows), index=torch.arange(rows))
    mix_batch(batch, 0.4)
    mixing = batch.labels
    lam = float(mixing.diagonal().min())
    assert 0.0 < lam < 1.0 and torch.allclose(mixing.sum(dim=1), torch.ones(rows))
    partner = (mixing - lam * torch.eye(rows)).argmax(dim=1)
    assert sorted(partner.tolist()) == list(range(rows))  # a permutation
    expected = lam * torch.eye(rows) + (1 - lam) * torch.eye(rows)[partner]
    assert torch.allclose(mixing, expected, atol=1e-6)
    assert torch.allclose(batch.inputs, torch.einsum("ij,j...->i...", mixing, inputs), atol=1e-5)
    torch.manual_seed(0)  # the draws come from torch's global generator, which the Trainer seeds each epoch
    again = Batch(inputs=inputs.clone(), labels=torch.eye(rows), index=torch.arange(rows))
    mix_batch(again, 0.4)
    assert torch.equal(again.inputs, batch.inputs) and torch.equal(again.labels, batch.labels)


def test_mixups_lambda_follows_beta_alpha_alpha() -> None:
    """α small: λ mostly near 0 or 1 (little mixing); α = 1: uniform; the mean is ½ either way."""
    from hashkit.method import Batch
    from hashkit.trainer import mix_batch

    def lambdas(alpha: float, draws: int = 2000) -> torch.Tensor:
        torch.manual_seed(3)
        values = []
        for _ in range(draws):  # λ = the smallest diagonal entry (the rows π moves; all but 1 in 8! draws)
            batch = Batch(inputs=torch.zeros(8, 1), labels=torch.eye(8), index=torch.arange(8))
            mix_batch(batch, alpha)
            values.append(float(batch.labels.diagonal().min()))
        return torch.tensor(values)

    small, uniform = lambdas(0.2), lambdas(1.0)
    edge = lambda v: float(((v < 0.1) | (v > 0.9)).float().mean())  # noqa: E731
    assert abs(float(small.mean()) - 0.5) < 0.05 and abs(float(uniform.mean()) - 0.5) < 0.05
    assert edge(small) > 0.5 and abs(edge(uniform) - 0.2) < 0.04
