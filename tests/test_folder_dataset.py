"""``--dataset folder``: any folder of images (data/folder.py). Labels from class subfolders checked against
torchvision's ImageFolder; a flat folder and --unlabelled; one warning for skipped files; seeded splits;
the same ids as ``hashkit encode --images``; supervised methods refused and no mAP on unlabelled data,
end to end through the CLI; and CIFAR-10 JPEGs unpacked as a plain folder, against the cifar10 loader."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from loguru import logger
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_input import cli, error_line  # noqa: E402
from test_distributed import use_tiny_backbones  # noqa: E402

from hashkit.atomic import atomic_write_json, json_safe  # noqa: E402
from hashkit.commands.encode import collect_images  # noqa: E402
from hashkit.data.base import DataConfig  # noqa: E402
from hashkit.data.folder import scan_folder  # noqa: E402
from hashkit.errors import HashkitError  # noqa: E402
from hashkit.evaluate import evaluate_codes  # noqa: E402
from hashkit.registry import DATASETS  # noqa: E402
from hashkit.run import check_labels  # noqa: E402

# Created in this (unsorted) order on purpose: classes must come out sorted by name.
CLASSES = {"zebra": 7, "ant": 5, "moth": 6}  # moth gets one more: zz.jpg
BROKEN = {"moth/broken.jpg": b"\xff\xd8 not really a jpeg", "ant/empty.png": b""}


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    logger.remove()
    logger.add(sys.stderr)


def save_image(path: Path, colour: int, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((8, 8, 3), (colour * 40 + index * 3) % 256, dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def write_labelled_tree(root: Path) -> dict[str, str]:
    """Class folders (JPEG and PNG, one class with a nested folder), two broken images, a .txt, hidden files,
    and a loose image in the root. Returns {relative path of each good image in a class folder: class}."""
    good: dict[str, str] = {}
    for colour, (name, count) in enumerate(CLASSES.items()):
        for i in range(count):
            rel = f"{name}/{'deep/' if name == 'moth' and i >= 4 else ''}{i:02d}.{'png' if i % 2 else 'jpg'}"
            save_image(root / rel, colour, i)
            good[rel] = name
    save_image(root / "moth" / "zz.jpg", 2, 9)  # ImageFolder order: moth/ before moth/deep/, though "deep" < "zz"
    good["moth/zz.jpg"] = "moth"
    for rel, data in BROKEN.items():
        (root / rel).write_bytes(data)
    (root / "zebra" / "notes.txt").write_text("not an image\n")
    (root / "ant" / ".DS_Store").write_bytes(b"\0\0")
    save_image(root / ".thumbnails" / "t.jpg", 0, 0)  # a hidden folder: ignored, not a class
    save_image(root / "loose.jpg", 0, 99)  # outside the class folders
    return good


def write_flat_folder(root: Path, count: int = 12) -> list[str]:
    """``count`` images in one folder plus a broken image and a .txt; returns the good images' names."""
    names = []
    for i in range(count):
        name = f"photo{i:02d}.{'png' if i % 3 == 0 else 'jpg'}"
        save_image(root / name, 1, i)
        names.append(name)
    (root / "corrupt.jpg").write_bytes(b"GIF89a truncated")
    (root / "readme.txt").write_text("holiday photos\n")
    return sorted(names)


def warnings_of(call) -> tuple[object, list[str]]:
    """(result of ``call()``, the WARNING messages logged meanwhile)."""
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        return call(), messages
    finally:
        logger.remove(sink)


def folder_splits(root: Path, **options):
    numbers = {k: options.pop(k) for k in ("seed", "num_query", "num_train", "num_database") if k in options}
    return DATASETS.get("folder")(DataConfig(root=str(root), options=options, **numbers))


def test_labelled_tree_matches_torchvision_imagefolder(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    root = tmp_path / "tree"
    good = write_labelled_tree(root)
    scan, warned = warnings_of(lambda: scan_folder(root))
    assert scan.class_names == ["ant", "moth", "zebra"]
    # Independent reference: ImageFolder's classes and (path, class) order, less the files PIL cannot read.
    # Its find_classes counts hidden folders as classes; torchvision's documented hook drops them here.
    class VisibleImageFolder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes, _ = super().find_classes(directory)
            classes = [c for c in classes if not c.startswith(".")]
            return classes, {c: i for i, c in enumerate(classes)}

    reference = VisibleImageFolder(str(root), is_valid_file=lambda p: Path(p).relative_to(root).as_posix() in good)
    assert reference.classes == scan.class_names
    assert [(Path(p), c) for p, c in reference.samples] == [(Path(p), int(c)) for p, c in zip(scan.paths, scan.classes)]
    assert len(scan.paths) == sum(CLASSES.values()) + 1
    # One warning listing every skipped file with its reason; hidden files are not listed.
    assert len(warned) == 1, warned
    for name in ("moth/broken.jpg", "ant/empty.png", "zebra/notes.txt", "loose.jpg"):
        assert name in warned[0], (name, warned[0])
    assert "skipped 4 file(s)" in warned[0] and ".DS_Store" not in warned[0] and "t.jpg" not in warned[0]
    assert sorted(n for n, _ in scan.skipped) == ["ant/empty.png", "loose.jpg", "moth/broken.jpg", "zebra/notes.txt"]


def test_labelled_splits_are_seeded_class_balanced_and_partition_the_pool(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    good = write_labelled_tree(root)
    splits = folder_splits(root, seed=3, num_query=3, num_train=9)
    assert splits.class_names == ["ant", "moth", "zebra"] and splits.default_topk is None
    pool = splits.extra["pool"]
    ids = [pool.item_id(i) for i in range(len(pool))]
    assert sorted(ids) == sorted(good)
    # Each label is the item's folder (read from its id, not from the loader's bookkeeping).
    for i, item in enumerate(ids):
        assert splits.class_names[int(pool.labels[i].argmax())] == good[item]
    query, train, database = (set(map(int, splits.extra[f"{p}_index"])) for p in ("query", "train", "database"))
    assert not query & database and query | database == set(range(len(pool))) and train <= database
    assert splits.query.labels.sum(axis=0).tolist() == [1, 1, 1]
    assert splits.train.labels.sum(axis=0).tolist() == [3, 3, 3]
    again = folder_splits(root, seed=3, num_query=3, num_train=9)
    other = folder_splits(root, seed=4, num_query=3, num_train=9)
    assert list(again.extra["query_index"]) == list(splits.extra["query_index"])
    assert list(other.extra["train_index"]) != list(splits.extra["train_index"])
    # Defaults: per class max(1, smallest // 10) = 1 query; the largest balanced training set from the rest.
    default = folder_splits(root)
    assert (len(default.query), len(default.train), len(default.database)) == (3, 12, 16)
    assert len(folder_splits(root, num_query=3, num_train=6, num_database=9).database) == 9
    with pytest.raises(HashkitError, match="--num-query=4 must be a multiple of the 3 classes"):
        folder_splits(root, num_query=4)


def test_flat_folder_and_unlabelled_have_no_labels_and_encode_gives_the_same_ids(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    names = write_flat_folder(flat)
    splits, warned = warnings_of(lambda: folder_splits(flat, seed=1, num_query=2, num_train=5))
    assert splits.num_classes == 0 and splits.train.labels.shape == (5, 0)
    assert len(warned) == 1 and "corrupt.jpg" in warned[0] and "readme.txt" in warned[0]
    pool = splits.extra["pool"]
    pool_ids = [pool.item_id(i) for i in range(len(pool))]
    assert pool_ids == names
    encode_paths, encode_ids = collect_images(flat)  # hashkit encode --images FLAT: same scan, ids and order
    assert encode_ids == pool_ids and encode_paths == pool.paths
    assert [splits.database.item_id(i) for i in range(len(splits.database))] == [
        names[i] for i in splits.extra["database_index"]
    ]
    assert len(splits.database) == 10 and not set(splits.extra["query_index"]) & set(splits.extra["database_index"])
    default = folder_splits(flat)  # 12 images: 1 query (12 // 10), the other 11 train
    assert (len(default.query), len(default.train)) == (1, 11)

    tree = tmp_path / "tree"
    good = write_labelled_tree(tree)
    unlabelled = folder_splits(tree, unlabelled=True, num_query=2, num_train=4)
    ids = {unlabelled.extra["pool"].item_id(i) for i in range(len(unlabelled.extra["pool"]))}
    assert unlabelled.num_classes == 0 and ids == set(good) | {"loose.jpg"}  # every image at any depth
    assert ids == set(collect_images(tree)[1])


def test_default_sizes_on_large_folders() -> None:
    """10 % queries up to 1,000; training images up to 10,000 (per class for labelled data, class-balanced)."""
    from hashkit.data.folder import FolderScan, default_sizes

    flat = FolderScan(Path("/x"), ["p"] * 50_000, [], np.zeros(0, dtype=np.int64))
    assert default_sizes(flat, None, None) == (1000, 10_000)
    assert default_sizes(FolderScan(Path("/x"), ["p"] * 5_000, [], np.zeros(0, dtype=np.int64)), None, None) == (500, 4_500)
    classes = np.repeat(np.arange(4), [3_000, 2_000, 400, 9_000])  # smallest class: 400 images
    labelled = FolderScan(Path("/x"), ["p"] * len(classes), ["a", "b", "c", "d"], classes)
    assert default_sizes(labelled, None, None) == (160, 1_440)  # 40 + 360 per class
    assert default_sizes(labelled, 40, None) == (40, 1_560)  # 10 + 390 per class
    big = np.repeat(np.arange(4), 5_000)
    assert default_sizes(FolderScan(Path("/x"), ["p"] * len(big), list("abcd"), big), None, None) == (1000, 10_000)


def test_layout_errors_are_one_line(tmp_path: Path) -> None:
    one = tmp_path / "one"
    save_image(one / "only" / "a.jpg", 0, 0)
    save_image(one / "only" / "b.jpg", 0, 1)
    with pytest.raises(HashkitError, match="one class folder .only.: labels need at least two.*--unlabelled"):
        folder_splits(one)
    assert folder_splits(one, unlabelled=True, num_query=1).num_classes == 0
    empty_class = tmp_path / "empty"
    save_image(empty_class / "a" / "1.jpg", 0, 0)
    save_image(empty_class / "b" / "1.jpg", 0, 0)
    (empty_class / "c").mkdir()
    (empty_class / "c" / "x.txt").write_text("")
    with pytest.raises(HashkitError, match=r"class folder .*c holds no readable images"):
        folder_splits(empty_class)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(HashkitError, match="holds no readable images"):
        folder_splits(tmp_path / "nothing")
    with pytest.raises(HashkitError, match="does not exist"):
        folder_splits(tmp_path / "missing")
    with pytest.raises(HashkitError, match="needs --root"):
        DATASETS.get("folder")(DataConfig())


def test_supervised_methods_are_refused_on_unlabelled_data(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    write_flat_folder(flat)
    splits = folder_splits(flat, num_query=2, num_train=5)
    with pytest.raises(HashkitError) as refused:
        check_labels({"method": "dpsh", "dataset": "folder"}, splits)
    message = str(refused.value)
    assert "--method dpsh is supervised" in message and "ssdh" in message and "one subfolder per class" in message
    assert "\n" not in message
    check_labels({"method": "ssdh", "dataset": "folder"}, splits)  # unsupervised: allowed
    labelled = tmp_path / "tree"
    write_labelled_tree(labelled)
    check_labels({"method": "dpsh", "dataset": "folder"}, folder_splits(labelled, num_query=3, num_train=3))


def test_no_labels_means_no_map_and_strict_json(tmp_path: Path) -> None:
    codes = np.sign(np.random.default_rng(0).standard_normal((6, 8)))
    none = np.zeros((6, 0), dtype=np.uint8)
    result = evaluate_codes(codes[:2], codes[2:], none[:2], none[2:], metrics="map,pr_curve")
    assert list(result) == ["map"] and np.isnan(result["map"])
    with pytest.raises(HashkitError, match="4 bits"):  # the codes are still checked
        evaluate_codes(codes[:2, :4], codes[2:], none[:2], none[2:])
    assert json_safe({"a": [float("nan"), 1.5, (float("inf"),)], "b": np.float64("nan")}) == {"a": [None, 1.5, [None]], "b": None}
    atomic_write_json(tmp_path / "r.json", {"map": float("nan"), "x": np.float32("nan"), "y": np.float32(0.5)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"map": None, "x": None, "y": 0.5}


def test_cli_unlabelled_folder_trains_without_map_and_evaluate_refuses(tmp_path: Path, monkeypatch, capsys) -> None:
    """Through ``hashkit.cli.main``: dpsh refused in one line before any network is built; ssdh trains one
    epoch and records map null; evaluate refuses in one line; encode --database stores ids of --images."""
    use_tiny_backbones(monkeypatch)
    flat = tmp_path / "flat"
    names = write_flat_folder(flat, count=16)
    common = ["--dataset", "folder", "--root", str(flat), "--arch", "tiny-plain", "--no-pretrained", "--image-size", "16",
              "--code-length", "8", "--num-query", "4", "--num-train", "8", "--batch-size", "4", "--max-iter", "1",
              "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    status, err = cli(capsys, ["train", "--method", "dpsh", "--out", str(tmp_path / "dpsh"), *common])
    error_line(status, err, "--method dpsh is supervised", "ssdh")
    assert not (tmp_path / "dpsh").exists()
    out = tmp_path / "ssdh"
    status, err = cli(capsys, ["train", "--method", "ssdh", "--out", str(out), *common])
    assert status == 0, err[-3000:]
    assert "no ground truth and no mAP" in err
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["map"] is None and result["best_map"] is None
    assert result["dataset"]["num_classes"] == 0 and (out / "checkpoint.pt").is_file()
    from hashkit.report import collect

    runs, problems = collect(out)  # hashkit report lists it among the runs without a number, saying why
    assert runs == [] and [p.reason for p in problems] == ["trained on unlabelled data: no ground truth, no mAP"]
    status, err = cli(capsys, ["evaluate", "--checkpoint", str(out / "checkpoint.pt")])
    error_line(status, err, "has no labels here", "no mAP")
    status, err = cli(capsys, ["encode", "--checkpoint", str(out / "checkpoint.pt"), "--database", "--out", str(tmp_path / "index")])
    assert status == 0, err[-3000:]
    from hashkit.index import Index

    index = Index.open(tmp_path / "index")
    stored = index.ids(np.arange(len(index)))
    assert len(stored) == 12 and set(stored) <= set(names)  # the database: the 16 less the 4 queries


def test_unlabelled_is_a_switch_on_the_command_line() -> None:
    import argparse

    from hashkit.commands import evaluate, train

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    train.add_parser(subparsers)
    evaluate.add_parser(subparsers)
    assert parser.parse_args(["train", "--method", "ssdh", "--unlabelled"]).unlabelled is True
    assert parser.parse_args(["train", "--method", "ssdh"]).unlabelled is None  # not given: the config default
    assert parser.parse_args(["evaluate", "--checkpoint", "c", "--no-unlabelled"]).unlabelled is False


def test_cifar10_jpegs_as_a_plain_folder(cifar_tar: Path, tmp_path: Path) -> None:
    """30 real CIFAR-10 training JPEGs per class unpacked as <root>/<class>/<file>: the folder dataset's classes
    and labels equal the cifar10 loader's on the same files, and the protocol draws class-balanced splits."""
    from hashkit.data.cifar10 import CLASS_NAMES, load_cifar10_pool

    plain = tmp_path / "plain"
    tree = tmp_path / "tree"  # the same files in the cifar10 loader's train/ + test/ layout (test: one per class)
    wanted = {c: 31 for c in CLASS_NAMES}
    with tarfile.open(cifar_tar) as archive:
        for member in archive:
            parts = member.name.split("/")
            if len(parts) == 3 and parts[0] == "train" and member.isfile() and wanted.get(parts[1], 0) > 0:
                wanted[parts[1]] -= 1
                data = archive.extractfile(member).read()  # type: ignore[union-attr]
                part, target = ("test", None) if wanted[parts[1]] == 0 else ("train", plain / parts[1] / parts[2])
                (tree / part / parts[1]).mkdir(parents=True, exist_ok=True)
                (tree / part / parts[1] / parts[2]).write_bytes(data)
                if target is not None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                if not any(wanted.values()):
                    break
    reference = load_cifar10_pool(str(tree))
    expected = {Path(p).relative_to(tree / "train").as_posix(): int(l.argmax())
                for p, l in zip(reference.paths, reference.labels) if "/train/" in p}  # fmt: skip
    splits = folder_splits(plain, seed=0, num_query=100, num_train=50)
    assert splits.class_names == CLASS_NAMES  # sorted folder names = the CIFAR-10 class order
    pool = splits.extra["pool"]
    assert {pool.item_id(i): int(pool.labels[i].argmax()) for i in range(len(pool))} == expected
    assert len(pool) == 300 and splits.query.labels.sum(axis=0).tolist() == [10] * 10
    assert splits.train.labels.sum(axis=0).tolist() == [5] * 10 and len(splits.database) == 200
    assert Image.open(splits.query.paths[0]).size == (32, 32)
