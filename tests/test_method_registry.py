"""Every registered method, tested the same way (as timm tests every model): registering a method in
``methods/`` is enough for it to be trained, checkpointed, evaluated, resumed and documented here.

Each test is parametrised over ``METHODS.names()`` and calls one of the ``check_*`` functions below; the last
test registers a throwaway method inside the test and runs the same checks on it, so the checks cannot
depend on anything but the method contract (hashkit/method.py).

The data: a synthetic in-memory dataset (``synthetic``, registered for the test only) of 32×32 images in four
colour/stripe classes, plus the tiny ``tiny-bn`` / ``tiny-plain`` test backbones of tests/test_distributed.py;
a run takes a second or two on a CPU. A method that starts from another method's checkpoint
(``HashingMethod.starts_from``, e.g. DIHN from ADSH) gets that run first, with the same flags; flags a method
needs for a minimal run are its ``HashingMethod.test_flags``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from loguru import logger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import HERE as RUNNER, free_port, tiny_env, use_tiny_backbones  # noqa: E402

from hashkit.checkpoint import load_checkpoint  # noqa: E402
from hashkit.method import Batch, HashingMethod, Hyper  # noqa: E402
from hashkit.registry import DATASETS, METHODS  # noqa: E402

METHOD_NAMES = METHODS.names()
NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def restore_logging():
    """hashkit.cli.main points loguru at the test's captured stderr; put the default sink back after."""
    yield
    logger.remove()
    logger.add(sys.stderr)


# ------------------------------------------------------------------------------------------- the data
def synthetic_splits(config: Any, permute_train_labels: bool = False):
    """A small labelled protocol held in memory: 48 training, 12 query, 36 database images of 4 classes
    (colour + stripe width per class, Gaussian noise); ``permute_train_labels`` shuffles the training labels
    (same images), for the unsupervised check."""
    from hashkit.data.base import DatasetSplits, ImageCollection, one_hot

    rng = np.random.default_rng(0)
    n_train, n_query, n_db = 48, 12, 36
    classes = np.arange(n_train + n_query + n_db) % NUM_CLASSES
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [180, 180, 40]], dtype=np.float64)
    pixels = base[classes][:, None, None, :] + rng.normal(0, 30, (len(classes), 32, 32, 3))
    stripes = (np.arange(32) // (2 + 2 * classes[:, None])) % 2
    pixels = np.clip(pixels + 50 * stripes[:, None, :, None], 0, 255).astype(np.uint8)
    labels = one_hot(classes, NUM_CLASSES)
    train_labels = labels[:n_train]
    if permute_train_labels:
        train_labels = train_labels[np.random.default_rng(1).permutation(n_train)]

    def part(lo: int, hi: int, lab: np.ndarray) -> Any:
        return ImageCollection(lab, pixels=pixels[lo:hi], source="synthetic")

    return DatasetSplits(
        name="synthetic",
        train=part(0, n_train, train_labels),
        query=part(n_train, n_train + n_query, labels[n_train : n_train + n_query]),
        database=part(n_train + n_query, len(classes), labels[n_train + n_query :]),
        class_names=["red", "green", "blue", "yellow"],
        default_topk=None,
        protocol="synthetic: 48 train / 12 query / 36 database, 4 classes",
    )


@pytest.fixture
def tiny_world(monkeypatch: pytest.MonkeyPatch):
    """The tiny backbones and the ``synthetic`` dataset (with the incremental ``--num-seen`` option), for
    this test only."""
    from hashkit.data.incremental import incremental_option

    use_tiny_backbones(monkeypatch)
    DATASETS.names()  # load the real entries first
    state = {"permute": False}
    factory = incremental_option(lambda config: synthetic_splits(config, state["permute"]))
    monkeypatch.setitem(DATASETS._entries, "synthetic", factory)
    return state


def tiny_argv(method: str, out: Path, *extra: str, max_iter: int = 3, arch: str = "tiny-bn") -> list[str]:
    """A minimal run of ``method`` (plus the flags its test needs)."""
    method_cls = METHODS.get(method)
    needs = [token for key, value in method_cls.test_flags.items() for token in ("--" + key.replace("_", "-"), str(value))]
    return [
        "train", "--method", method, "--dataset", "synthetic", "--out", str(out), "--arch", arch, "--no-pretrained",
        "--image-size", "32", "--code-length", "8", "--batch-size", "8", "--max-iter", str(max_iter),
        "--optimizer", "adam", "--lr", "0.003", "--hash-lr-mult", "1", "--lr-schedule", "constant",
        "--train-transform", "resize_flip", "--test-transform", "resize", "--evaluate-interval", "1",
        "--seed", "0", *needs, *extra,
    ]  # fmt: skip


def cli(argv: list[str]) -> int:
    from hashkit.cli import main

    return main(argv)


def train_ok(argv: list[str]) -> dict[str, Any]:
    assert cli(argv) == 0, argv
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "result.json").read_text())


def prerequisite(method: str, tmp_path: Path, max_iter: int = 3) -> list[str]:
    """``--from CHECKPOINT`` for a method that starts from another method's run (DIHN from ADSH), else []."""
    source = METHODS.get(method).starts_from
    if not source:
        return []
    out = tmp_path / f"prerequisite-{source}"
    if not (out / "checkpoint.pt").exists():
        base = tiny_argv(source, out, max_iter=max_iter)
        for key, value in METHODS.get(method).test_flags.items():  # the same protocol flags as the method's run
            if "--" + key.replace("_", "-") not in base:
                base += ["--" + key.replace("_", "-"), str(value)]
        train_ok(base)
    return ["--from", str(out / "checkpoint.pt")]


# ------------------------------------------------------------------------------------------- the checks
def check_trains_evaluates_and_reproduces(method: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          extra: tuple[str, ...] = ()) -> None:  # fmt: skip
    """A few epochs: finite loss terms, a total loss that goes down, a finished result.json with the full
    config, and ``hashkit evaluate`` on the checkpoint reproducing the trained mAP. A closed-form method:
    one fit, no optimiser state in the checkpoint."""
    out = tmp_path / "run"
    result = train_ok(tiny_argv(method, out, *prerequisite(method, tmp_path), *extra, max_iter=4))
    assert result["status"] == "finished" and result["config"]["method"] == method
    totals = [epoch["losses"]["total"] for epoch in result["history"]]
    assert all(np.isfinite(list(e["losses"].values())).all() for e in result["history"])
    if METHODS.get(method).closed_form:
        assert len(totals) == 1 and load_checkpoint(out / "checkpoint.pt")["optimizer"] is None
    else:
        assert len(totals) == 4 and totals[-1] < totals[0], f"{method}: the training loss did not go down: {totals}"
    assert 0.0 <= result["map"] <= 1.0 and result["metrics"]["num_query"] == 12
    capsys.readouterr()
    assert cli(["evaluate", "--checkpoint", str(out / "checkpoint.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["map"] == pytest.approx(result["map"], abs=1e-6)


def check_resume_after_interrupted_epoch(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         extra: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Ctrl-C in the middle of epoch 2, then ``--resume``: weights, method state, losses and mAP are
    bit-identical to an uninterrupted run. A closed-form method: two fits are bit-identical, and ``--resume``
    of a finished fit changes nothing."""
    start = (*prerequisite(method, tmp_path), *extra)
    whole = train_ok(tiny_argv(method, tmp_path / "whole", *start))
    method_cls = METHODS.get(method)
    if method_cls.closed_form:
        again = train_ok(tiny_argv(method, tmp_path / "again", *start))
        resumed = train_ok(tiny_argv(method, tmp_path / "whole", *start, "--resume"))
        assert again["map"] == whole["map"] == resumed["map"] and resumed["history"] == whole["history"]
        a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("whole", "again"))
        _assert_equal_state(a["model"], b["model"])
        return
    real_step = method_cls.training_step
    calls = {"n": 0}

    def interrupted(self: HashingMethod, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if self.epoch == 1 and calls["n"] > 1:  # inside the second epoch (0-based 1), after its first step
            raise KeyboardInterrupt
        return real_step(self, outputs, batch)

    with monkeypatch.context() as patch:
        patch.setattr(method_cls, "training_step", interrupted)
        calls["n"] = 0
        patch.setattr(method_cls, "on_epoch_start", _counting_epoch_start(method_cls, calls))
        assert cli(tiny_argv(method, tmp_path / "resumed", *start)) == 130
    stopped = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert stopped["status"] == "failed" and stopped["epochs_done"] == 1
    resumed = train_ok(tiny_argv(method, tmp_path / "resumed", *start, "--resume"))
    assert [h["losses"] for h in resumed["history"]] == [h["losses"] for h in whole["history"]]
    assert resumed["map"] == whole["map"]
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("whole", "resumed"))
    for part in ("model", "method_state", "method_module", "method_own_modules", "method_own_optimizers", "optimizer"):
        _assert_equal_state(a[part], b[part], part)


def _counting_epoch_start(method_cls: type[HashingMethod], calls: dict[str, int]):
    real = method_cls.on_epoch_start

    def on_epoch_start(self: HashingMethod, epoch: int) -> None:
        calls["n"] = 0  # count the steps of each epoch
        real(self, epoch)

    return on_epoch_start


def _assert_equal_state(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_equal_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def check_unsupervised_ignores_labels(method: str, tmp_path: Path, tiny_world: dict) -> None:
    """An unsupervised method trained with permuted training labels ends with bit-identical weights."""
    runs = []
    for permute in (False, True):
        tiny_world["permute"] = permute
        out = tmp_path / f"labels-permuted-{permute}"
        train_ok(tiny_argv(method, out, *prerequisite(method, tmp_path), max_iter=2))
        runs.append(load_checkpoint(out / "checkpoint.pt")["model"])
    tiny_world["permute"] = False
    _assert_equal_state(runs[0], runs[1])


def check_encodes_and_searches(method: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``hashkit encode --database`` then ``hashkit search`` with an image file: the hits' distances are the
    Hamming distances between the codes ``hashkit.load`` gives the query and the database images (the
    codes come from the saved model alone), ranked with ties by insertion order."""
    import hashkit
    from PIL import Image

    out = tmp_path / "run"
    train_ok(tiny_argv(method, out, *prerequisite(method, tmp_path), max_iter=1))
    checkpoint, index = out / "checkpoint.pt", tmp_path / "index"
    assert cli(["encode", "--checkpoint", str(checkpoint), "--database", "--out", str(index)]) == 0
    model = hashkit.load(checkpoint)
    from hashkit.run import build_splits

    splits = build_splits(dict(model.config))  # the run's protocol (DIHN's orders the database by class stage)
    query = tmp_path / "query.png"
    Image.fromarray(splits.query.pixels[0]).save(query)
    database = model.encode(splits.database, progress=False).astype(np.int64)
    distances = (database != model.encode([str(query)], progress=False).astype(np.int64)).sum(axis=1).tolist()
    expected = sorted(range(len(distances)), key=lambda j: (distances[j], j))[:5]
    capsys.readouterr()
    assert cli(["search", "--index", str(index), "--checkpoint", str(checkpoint), "--query", str(query), "--k", "5",
                "--ties", "insertion", "--json"]) == 0  # fmt: skip
    hits = json.loads(capsys.readouterr().out)["queries"][0]["results"]
    assert [h["position"] for h in hits] == expected
    assert [h["distance"] for h in hits] == [distances[j] for j in expected]


def write_multi_label_lists(root: Path) -> list[str]:
    """The synthetic protocol's images as PNG files and three list files with multi-hot labels: the 4 colour
    classes plus 2 super-classes (warm: red, yellow; cool: green, blue) given to every other item; the
    ``--dataset list`` flags that read them."""
    from PIL import Image

    splits = synthetic_splits(None)
    flags = []
    for part, flag in (("train", "--train-list"), ("query", "--query-list"), ("database", "--database-list")):
        collection = getattr(splits, part)
        rows = []
        for i, (pixels, labels) in enumerate(zip(collection.pixels, collection.labels)):
            name = f"images/{part}-{i:03d}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name)
            colour = int(np.argmax(labels))
            extra = [0, 0] if i % 2 else ([1, 0] if colour in (0, 3) else [0, 1])
            rows.append(name + " " + " ".join(str(int(v)) for v in [*labels, *extra]) + "\n")
        (root / f"{part}.txt").write_text("".join(rows))
        flags += [flag, str(root / f"{part}.txt")]
    return flags


def check_trains_on_multi_label_lists(method: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A list-file data set with multi-hot labels (6 classes, half the items with 2 labels): a method defined for
    multi-label data trains on it (finite losses, 6 classes seen, mAP in [0, 1] against shared-label relevance);
    a single-label-only method (``single_label_only``) refuses in one line that names it, before training."""
    root = tmp_path / "lists"
    list_flags = write_multi_label_lists(root)
    argv = tiny_argv(method, tmp_path / "run", max_iter=2)
    at = argv.index("--dataset")
    argv[at + 1 : at + 2] = ["list", "--root", str(root), *list_flags]
    capsys.readouterr()
    code = cli(argv)
    if METHODS.get(method).single_label_only:
        err = [line for line in capsys.readouterr().err.strip().splitlines() if "| INFO" not in line]
        assert code != 0 and len(err) == 1 and method in err[0] and "single-label" in err[0], err
        return
    assert code == 0, capsys.readouterr().err[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "finished" and result["dataset"]["num_classes"] == 6
    assert all(np.isfinite(list(e["losses"].values())).all() for e in result["history"])
    assert 0.0 < result["map"] <= 1.0


def check_help_documents_hyperparameters(method: str, capsys: pytest.CaptureFixture) -> None:
    """``hashkit train --method M --help`` names the method's paper and documents each of its hyper-parameters
    with its default; ``hashkit train --help`` lists the method."""
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--help"])
    assert exit_info.value.code == 0
    assert method in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", "--method", method, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert " ".join(METHODS.get(method).paper.split()) in text
    for name, spec in METHODS.get(method).hyperparameters.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, f"{flag} of {method} is not in hashkit train --method {method} --help"
        assert f"(default: {spec.default})" in text, f"{flag}'s default for {method} is not in --help"


def check_two_processes_match_one(method: str, tmp_path: Path) -> None:
    """Under torchrun with 2 gloo processes the per-epoch losses, the weights and mAP equal one process's
    with the same global batch (BatchNorm-free backbone, left–right symmetric images: see test_distributed)."""
    from test_distributed import LOSS_RTOL, WEIGHT_ATOL, write_tree

    root = write_tree(tmp_path / "tree", per_class=2, symmetric=True)
    env = tiny_env()

    def argv(out: Path) -> list[str]:
        return [
            "train", "--method", method, "--root", str(root), "--out", str(out), "--arch", "tiny-plain",
            "--no-pretrained", "--image-size", "32", "--code-length", "16", "--num-query", "10", "--num-train", "30",
            "--batch-size", "8", "--max-iter", "2", "--optimizer", "adam", "--lr", "0.01", "--hash-lr-mult", "1",
            "--lr-schedule", "constant", "--train-transform", "resize_flip", "--test-transform", "resize",
            "--evaluate-interval", "1", "--cache-dir", str(tmp_path / "cache"),
            *[t for k, v in METHODS.get(method).distributed_flags.items() for t in ("--" + k.replace("_", "-"), str(v))],
        ]  # fmt: skip

    one = subprocess.run([sys.executable, str(RUNNER), *argv(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(RUNNER)]  # fmt: skip
    two = subprocess.run([*torchrun, *argv(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("one", "two"))
    for ra, rb in zip(a["history"], b["history"], strict=True):
        for term, value in ra["losses"].items():
            assert rb["losses"][term] == pytest.approx(value, rel=LOSS_RTOL, abs=1e-7), (method, term, ra, rb)
        assert rb["metrics"]["map"] == pytest.approx(ra["metrics"]["map"], abs=1e-6)
    wa, wb = (load_checkpoint(tmp_path / name / "checkpoint.pt")["model"] for name in ("one", "two"))
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=0, atol=WEIGHT_ATOL), (method, key)


# ------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_trains_and_evaluate_reproduces_its_map(method: str, tmp_path: Path, tiny_world, capsys) -> None:
    check_trains_evaluates_and_reproduces(method, tmp_path, capsys)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_resumes_bit_identically(method: str, tmp_path: Path, tiny_world, monkeypatch) -> None:
    check_resume_after_interrupted_epoch(method, tmp_path, monkeypatch)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_encodes_and_searches_from_its_checkpoint(method: str, tmp_path: Path, tiny_world, capsys) -> None:
    check_encodes_and_searches(method, tmp_path, capsys)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_help_documents_its_hyperparameters(method: str, capsys) -> None:
    check_help_documents_hyperparameters(method, capsys)


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if not METHODS.get(m).supervised])
def test_unsupervised_method_never_reads_labels(method: str, tmp_path: Path, tiny_world) -> None:
    check_unsupervised_ignores_labels(method, tmp_path, tiny_world)


# DIHN is left out: its incremental protocol (--num-seen) splits the data by class, which list files do not set.
@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if METHODS.get(m).supervised and not METHODS.get(m).starts_from])
def test_supervised_method_trains_on_multi_label_list_files(method: str, tmp_path: Path, tiny_world, capsys) -> None:
    check_trains_on_multi_label_lists(method, tmp_path, capsys)


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES if METHODS.get(m).torchrun_obstacle() is None])
def test_distributed_method_matches_one_process(method: str, tmp_path: Path) -> None:
    check_two_processes_match_one(method, tmp_path)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_method_declares_a_seed_recipe_and_resolves_under_both_recipes(method: str) -> None:
    """Every method's recipes are data over known keys, and both recipes resolve to a full config."""
    from hashkit.config import all_flags, resolve_config

    method_cls = METHODS.get(method)
    known = set(all_flags()) | set(method_cls.hyperparameters)
    for name, values in method_cls.recipes.items():
        recipe, _, dataset = name.partition("@")
        assert recipe in ("seed", "cpu") and (not dataset or dataset in DATASETS), f"{method}: unknown recipe {name!r}"
        assert set(values) <= known, f"{method}: recipe {name} sets unknown keys {set(values) - known}"
    for recipe in ("seed", "cpu"):
        config = resolve_config({"method": method, "recipe": recipe})
        assert config["recipe"] == recipe and config["method"] == method
    # Each table reaches the run it is for: RECIPE@DATASET on DATASET, RECIPE on a data set without its own table
    # (the values themselves are pinned against the references in tests/test_seed_recipes.py).
    for name, values in method_cls.recipes.items():
        recipe, _, dataset = name.partition("@")
        config = resolve_config({"method": method, "recipe": recipe, "dataset": dataset or "imagenet100"})
        for key, value in values.items():
            assert config[key] == value, (method, name, key)


class Throwaway(HashingMethod):
    """A method that exists only inside a test: in-batch pairwise regression of tanh codes."""

    name = "throwaway"
    paper = "none (test only)"
    hyperparameters = {"margin_weight": Hyper(0.5, "weight of the throwaway's quantisation term")}
    supports_distributed = False

    def training_step(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        h = torch.tanh(outputs)
        s = 2.0 * (batch.labels @ batch.labels.t() > 0).float() - 1.0
        pairs = (h @ h.t() / h.shape[1] - s).pow(2).mean()
        return {"pairs": pairs, "quantization": self.hparams["margin_weight"] * (h.abs() - 1).pow(2).mean()}


def test_a_method_registered_in_a_test_is_checked_like_the_others(tmp_path: Path, tiny_world, monkeypatch, capsys) -> None:
    """The checks above depend only on the method contract: a throwaway method registered here passes them."""
    METHODS.names()
    monkeypatch.setitem(METHODS._entries, "throwaway", Throwaway)
    assert "throwaway" in METHODS.names()
    check_help_documents_hyperparameters("throwaway", capsys)
    check_trains_evaluates_and_reproduces("throwaway", tmp_path / "a", capsys)
    check_resume_after_interrupted_epoch("throwaway", tmp_path / "b", monkeypatch)
