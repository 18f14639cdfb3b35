"""List-file datasets: parsing real CIFAR-10 JPEG lists with synthetic multi-labels, both layouts, the
presets' protocols, every user error (file and line named), and a multi-label training run."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hashkit.data.base import DataConfig
from hashkit.data.listfile import PRESETS, read_list
from hashkit.errors import HashkitError
from hashkit.registry import DATASETS

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
VEHICLE = {0, 1, 8, 9}


def synthetic_labels(class_index: int, item: int) -> list[int]:
    """10 CIFAR classes + 2 synthetic super-classes (vehicle, animal) given to every other item: multi-hot."""
    row = [0] * 12
    row[class_index] = 1
    if item % 2 == 0:
        row[10 if class_index in VEHICLE else 11] = 1
    return row


def line(path: str, labels: list[int]) -> str:
    return path + " " + " ".join(map(str, labels)) + "\n"


@pytest.fixture(scope="module")
def jpeg_root(cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    """60 real CIFAR-10 JPEGs (6 per class) under <root>/images/<class>/, and their (relative path, class)."""
    root = tmp_path_factory.mktemp("listroot")
    wanted = {c: 6 for c in CLASSES}
    items: list[tuple[str, int]] = []
    with tarfile.open(cifar_tar) as archive:
        for member in archive:
            parts = member.name.split("/")
            if len(parts) == 3 and parts[0] == "train" and member.isfile() and wanted.get(parts[1], 0) > 0:
                wanted[parts[1]] -= 1
                rel = f"images/{parts[1]}/{parts[2]}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
                items.append((rel, CLASSES.index(parts[1])))
                if not any(wanted.values()):
                    break
    assert len(items) == 60
    return root, items


def write_lists(root: Path, items: list[tuple[str, int]], query_name: str = "test.txt") -> None:
    rows = [line(rel, synthetic_labels(c, i)) for i, (rel, c) in enumerate(items)]
    (root / "train.txt").write_text("".join(rows[:30]))
    (root / query_name).write_text("".join(rows[30:40]))
    (root / "database.txt").write_text("".join(rows[10:]))


def build(name: str, root: Path | None, seed: int = 0, **options) -> object:
    sizes = {k: options.pop(k) for k in ("num_query", "num_train", "num_database") if k in options}
    return DATASETS.get(name)(DataConfig(root=str(root) if root else None, seed=seed, options=options, **sizes))


def test_three_lists_load_with_multi_labels(jpeg_root, tmp_path: Path) -> None:
    src, items = jpeg_root
    root = tmp_path / "ds"
    root.mkdir()
    (root / "images").symlink_to(src / "images")
    write_lists(root, items)
    splits = build("list", root)
    assert (len(splits.train), len(splits.query), len(splits.database)) == (30, 10, 50)
    assert splits.num_classes == 12 and splits.default_topk is None
    assert splits.train.source == str(root / "train.txt") and splits.query.source == str(root / "test.txt")
    expected = np.array([synthetic_labels(c, i) for i, (_, c) in enumerate(items)], dtype=np.uint8)
    assert splits.train.labels.dtype == np.uint8
    assert np.array_equal(splits.train.labels, expected[:30]) and np.array_equal(splits.database.labels, expected[10:])
    assert (splits.train.labels.sum(axis=1) == 2).sum() == 15  # multi-hot rows
    assert splits.query.paths[0] == str(root / items[30][0]) and Path(splits.query.paths[0]).is_absolute()
    image = splits.query.load(0)
    assert image.mode == "RGB" and image.size == (32, 32)


def test_query_txt_and_explicit_list_flags(jpeg_root, tmp_path: Path) -> None:
    src, items = jpeg_root
    write_lists(tmp_path, items, query_name="query.txt")
    splits = build("list", src, train_list=str(tmp_path / "train.txt"), query_list=str(tmp_path / "query.txt"),
                   database_list=str(tmp_path / "database.txt"))
    assert (len(splits.train), len(splits.query), len(splits.database)) == (30, 10, 50)
    assert splits.train.paths[0] == str(src / items[0][0])  # relative paths resolve against --root
    # without --root, relative image paths resolve against the list file's folder
    lists = src / "lists-here"
    lists.mkdir(exist_ok=True)
    (lists / "q.txt").write_text(line("../" + items[3][0], synthetic_labels(items[3][1], 3)))
    coll = read_list(lists / "q.txt")
    assert coll.paths == [str(src / items[3][0])]


def test_subsampling_given_lists_is_seeded(jpeg_root, tmp_path: Path) -> None:
    src, items = jpeg_root
    write_lists(tmp_path, items)
    kwargs = dict(train_list=str(tmp_path / "train.txt"), query_list=str(tmp_path / "test.txt"),
                  database_list=str(tmp_path / "database.txt"), num_train=12, num_query=4, num_database=20)
    a = build("list", src, seed=3, **dict(kwargs))
    b = build("list", src, seed=3, **dict(kwargs))
    assert (len(a.train), len(a.query), len(a.database)) == (12, 4, 20)
    assert a.train.paths == b.train.paths and a.database.paths == b.database.paths
    with pytest.raises(HashkitError, match=r"--num-train=31 but .*train.txt lists only 30"):
        build("list", src, **{**kwargs, "num_train": 31})


def test_pooled_all_txt_needs_sizes_for_list_and_draws_them(jpeg_root, tmp_path: Path) -> None:
    src, items = jpeg_root
    (tmp_path / "all.txt").write_text("".join(line(rel, synthetic_labels(c, i)) for i, (rel, c) in enumerate(items)))
    with pytest.raises(HashkitError, match="needs --num-query and --num-train"):
        build("list", src, all_list=str(tmp_path / "all.txt"))
    splits = build("list", src, all_list=str(tmp_path / "all.txt"), num_query=10, num_train=20, seed=1)
    assert (len(splits.query), len(splits.train), len(splits.database)) == (10, 20, 50)
    query, train = set(splits.query.paths), set(splits.train.paths)
    assert not query & set(splits.database.paths) and train <= set(splits.database.paths)


def _pool_file(path: Path, image: str, n: int, classes: int, single_label: bool, seed: int = 0) -> None:
    """A synthetic pool of n entries that all point at one real image (existence is checked per path)."""
    rng = np.random.default_rng(seed)
    if single_label:
        labels = np.eye(classes, dtype=np.uint8)[np.arange(n) % classes]
    else:
        labels = (rng.random((n, classes)) < 0.15).astype(np.uint8)
        labels[np.arange(n), rng.integers(0, classes, n)] = 1
    text = "\n".join(image + " " + " ".join("1" if v else "0" for v in row) for row in labels)
    path.write_text(text + "\n")


@pytest.mark.parametrize(
    "preset, pool, single_label, expected",
    [
        ("nuswide21", 13_000, False, (2100, 10500, 10900, 5000)),
        ("imagenet100", 16_000, True, (5000, 10000, 11000, 1000)),
        ("coco", 15_500, False, (5000, 10000, 10500, 5000)),
        ("flickr25k", 12_500, False, (2000, 10000, 10500, 5000)),
        ("nuswide10", 10_500, False, (5000, 5000, 5500, 5000)),
    ],
)
def test_presets_draw_their_protocol_from_all_txt(jpeg_root, tmp_path: Path, preset, pool, single_label, expected) -> None:
    src, items = jpeg_root
    classes = PRESETS[preset].num_classes or 24
    _pool_file(tmp_path / "all.txt", str(src / items[0][0]), pool, classes, single_label)
    splits = build(preset, tmp_path)
    assert (len(splits.query), len(splits.train), len(splits.database), splits.default_topk) == expected
    if single_label:  # class-balanced draws: 50 queries and 100 training images per ImageNet100 class
        assert set(splits.query.labels.sum(axis=0)) == {50} and set(splits.train.labels.sum(axis=0)) == {100}
    assert DATASETS.canonical(PRESETS[preset].aliases[0]) == preset if PRESETS[preset].aliases else True


def test_preset_three_lists_are_used_as_given_and_checked(jpeg_root, tmp_path: Path, caplog) -> None:
    src, items = jpeg_root
    image = items[0][0]
    for name, n in (("train.txt", 30), ("test.txt", 7), ("database.txt", 40)):
        _pool_file(tmp_path / name, image, n, 21, single_label=False)
    splits = build("nuswide21", src, train_list=str(tmp_path / "train.txt"), query_list=str(tmp_path / "test.txt"),
                   database_list=str(tmp_path / "database.txt"))
    assert (len(splits.train), len(splits.query), len(splits.database), splits.default_topk) == (30, 7, 40, 5000)
    _pool_file(tmp_path / "test.txt", image, 7, 81, single_label=False)
    with pytest.raises(HashkitError, match=r"disagree on the number of label columns"):
        build("nuswide21", src, train_list=str(tmp_path / "train.txt"), query_list=str(tmp_path / "test.txt"),
              database_list=str(tmp_path / "database.txt"))
    for name in ("train.txt", "database.txt"):
        _pool_file(tmp_path / name, image, 10, 81, single_label=False)
    with pytest.raises(HashkitError, match=r"train.txt: 81 label columns, but --dataset nuswide21 .* has 21"):
        build("nuswide21", src, train_list=str(tmp_path / "train.txt"), query_list=str(tmp_path / "test.txt"),
              database_list=str(tmp_path / "database.txt"))


# ---------------------------------------------------------------- errors name the file and the line

def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_errors_name_file_and_line(jpeg_root, tmp_path: Path) -> None:
    src, items = jpeg_root
    ok = f"{items[0][0]} 1 0 1\n"
    f = _write(tmp_path / "cols.txt", ok + "\n" + f"{items[1][0]} 1 0\n")
    with pytest.raises(HashkitError, match=r"cols.txt:3: 2 label columns but the first entry has 3"):
        read_list(f, src)
    f = _write(tmp_path / "values.txt", ok + f"{items[1][0]} 1 2 0\n")
    with pytest.raises(HashkitError, match=r"values.txt:2: label value '2' is not 0 or 1"):
        read_list(f, src)
    f = _write(tmp_path / "nolabels.txt", f"{items[1][0]}\n")
    with pytest.raises(HashkitError, match=r"nolabels.txt:1: no label columns"):
        read_list(f, src)
    f = _write(tmp_path / "missing.txt", ok + "images/cat/nope.jpg 0 1 0\n" + "images/cat/nope2.jpg 0 1 0\n")
    with pytest.raises(HashkitError, match=r"missing.txt:2: image .*nope.jpg does not exist \(2 of 3 listed"):
        read_list(f, src)
    f = _write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(HashkitError, match=r"list file .*empty.txt holds no entries"):
        read_list(f, src)
    with pytest.raises(HashkitError, match=r"list file .*absent.txt does not exist"):
        read_list(tmp_path / "absent.txt", src)


def test_missing_list_files_name_the_expected_files_and_flags(tmp_path: Path) -> None:
    with pytest.raises(HashkitError, match=r"no list files under --root .*train.txt, test.txt \(or query.txt\) and "
                                           r"database.txt, or one all.txt.*--train-list"):
        build("coco", tmp_path)
    (tmp_path / "train.txt").write_text("x 1\n")
    with pytest.raises(HashkitError, match=r"no test.txt or query.txt / database.txt under --root .*--query-list, --database-list"):
        build("list", tmp_path)
    with pytest.raises(HashkitError, match=r"--root .*nowhere does not exist"):
        build("list", tmp_path / "nowhere")
    with pytest.raises(HashkitError, match=r"no list files \(no --root given\)"):
        build("list", None)


def test_cli_reports_list_errors_as_one_line(jpeg_root, tmp_path: Path) -> None:
    src, items = jpeg_root
    (tmp_path / "train.txt").write_text(f"{items[0][0]} 1 0\n{items[1][0]} 1 x\n")
    (tmp_path / "test.txt").write_text(f"{items[2][0]} 1 0\n")
    (tmp_path / "database.txt").write_text(f"{items[3][0]} 1 0\n")
    exe = str(Path(sys.executable).parent / "hashkit")
    proc = subprocess.run([exe, "train", "--method", "dpsh", "--dataset", "list", "--root", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("hashkit: error:")]
    assert len(errors) == 1 and "train.txt:2: label value 'x' is not 0 or 1" in errors[0]


# ---------------------------------------------------------------- a multi-label training run

def test_multi_label_training_run_on_cifar_lists(cifar_tar: Path, hashkit_cache: Path, tmp_path: Path) -> None:
    """HashNet on lists of real CIFAR-10 JPEGs with synthetic super-class labels (multi-hot), frozen features."""
    from hashkit.cli import build_parser
    from hashkit.commands.common import namespace_config
    from hashkit.data.cifar10 import load_cifar10_pool
    from hashkit.data.splits import query_train_database
    from hashkit.run import train

    pool = load_cifar10_pool(str(cifar_tar), cache_dir=str(hashkit_cache))  # unpacked once per session
    classes = pool.labels.argmax(axis=1)
    query, train_idx, database = query_train_database(pool.labels, 100, 500, 500, seed=0)
    root = Path(pool.paths[0]).parents[2]
    for name, idx in (("train.txt", train_idx), ("test.txt", query), ("database.txt", database)):
        rows = [line(str(Path(pool.paths[i]).relative_to(root)), synthetic_labels(int(classes[i]), int(i))) for i in idx]
        (tmp_path / name).write_text("".join(rows))
    argv = ["train", "--method", "hashnet", "--dataset", "list", "--root", str(root),
            "--train-list", str(tmp_path / "train.txt"), "--query-list", str(tmp_path / "test.txt"),
            "--database-list", str(tmp_path / "database.txt"), "--cache-dir", str(hashkit_cache),
            "--arch", "efficientnet_lite0", "--image-size", "64", "--freeze-backbone", "--code-length", "16",
            "--optimizer", "adam", "--lr", "1e-5", "--hash-lr-mult", "10", "--batch-size", "25", "--max-iter", "20",
            "--evaluate-interval", "20", "--out", str(tmp_path / "run")]
    result = train(namespace_config(build_parser().parse_args(argv)))
    losses = [h["losses"]["total"] for h in result["history"]]
    q = np.array([synthetic_labels(int(classes[i]), int(i)) for i in query])
    d = np.array([synthetic_labels(int(classes[i]), int(i)) for i in database])
    chance = float(((q @ d.T) > 0).mean())  # mAP of a random ranking ≈ the share of relevant items
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "finished" and saved["dataset"]["num_classes"] == 12
    assert sum(losses[-3:]) < sum(losses[:3])
    assert result["map"] > chance + 0.1, (result["map"], chance)
