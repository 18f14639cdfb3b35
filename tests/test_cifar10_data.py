"""CIFAR-10 readers: every supported form gives the same pool; mistakes give one-line errors."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashkit.data.cifar10 import CLASS_NAMES, load_cifar10_pool
from hashkit.errors import HashkitError

PER_BATCH = 10  # tiny synthetic batches: one image per class each


def synthetic_batches() -> dict[str, dict]:
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_BATCH, 3 * 32 * 32), dtype=np.uint8)
        batches[name] = {"data": data, "labels": list(range(PER_BATCH))}
    return batches


def write_batch_folder(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, batch in synthetic_batches().items():
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def write_official_archive(root: Path) -> Path:
    folder = write_batch_folder(root / "staging")
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


def write_image_tree(root: Path, per_class: int = 2) -> Path:
    rng = np.random.default_rng(1)
    for part in ("train", "test"):
        for name in CLASS_NAMES:
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def test_python_batches_folder_and_archive_agree(tmp_path: Path) -> None:
    folder = write_batch_folder(tmp_path / "a")
    archive = write_official_archive(tmp_path / "b")
    from_folder = load_cifar10_pool(str(folder.parent))
    from_archive = load_cifar10_pool(str(archive))
    assert len(from_folder) == 6 * PER_BATCH
    assert np.array_equal(from_folder.pixels, from_archive.pixels)
    assert np.array_equal(from_folder.labels, from_archive.labels)
    # row-major CHW → HWC: pixel (0,0) of image 0 is data[0][0], data[0][1024], data[0][2048]
    raw = synthetic_batches()["data_batch_1"]["data"][0]
    assert tuple(from_folder.pixels[0, 0, 0]) == (raw[0], raw[1024], raw[2048])
    assert from_folder.labels.shape == (60, 10) and (from_folder.labels.sum(1) == 1).all()


def test_image_tree_and_tar_of_it(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "tree")
    pool = load_cifar10_pool(str(tree))
    assert len(pool) == 40
    assert pool.paths[0].endswith("train/airplane/0000.png") and pool.paths[-1].endswith("test/truck/0001.png")
    tar_path = tmp_path / "cifar10-img.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(tree / "train", arcname="cifar10/train")
        tar.add(tree / "test", arcname="cifar10/test")
    cache = tmp_path / "cache"
    first = load_cifar10_pool(str(tar_path), cache_dir=str(cache))
    unpacked = list((cache / "datasets").iterdir())
    assert len(unpacked) == 1 and (unpacked[0] / ".complete").exists()
    stamp = (unpacked[0] / ".complete").stat().st_mtime_ns
    second = load_cifar10_pool(str(tar_path), cache_dir=str(cache))  # reused, not unpacked again
    assert (unpacked[0] / ".complete").stat().st_mtime_ns == stamp
    assert first.paths == second.paths
    assert np.array_equal(first.labels, pool.labels)
    assert np.array_equal(np.asarray(first.load(3)), np.asarray(pool.load(3)))


def test_parallel_runs_unpacking_at_once_keep_the_published_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of a sweep started together both unpack the tar; the second to finish must keep the tree the
    first published (and may be reading), not delete it. Fails if ``_publish_unpacked`` replaces a complete
    target (the former ``rmtree(target)`` before ``os.replace``): the parallel run's marker file is gone."""
    tree = write_image_tree(tmp_path / "tree")
    tar_path = tmp_path / "cifar10-img.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(tree / "train", arcname="cifar10/train")
        tar.add(tree / "test", arcname="cifar10/test")
    cache = tmp_path / "cache"
    real_extract = tarfile.TarFile.extractall

    datasets = cache / "datasets"

    def publish_first(self, path, *args, **kwargs):
        real_extract(self, path, *args, **kwargs)
        other = Path(path).parent / "other-run"
        real_extract(self, other, *args, **kwargs)
        name = Path(path).name.split(".")[1]  # ".<target name>.<random>" -> target name
        (other / ".complete").write_text("parallel run\n")
        (other / "parallel-run-marker").write_text("")
        other.replace(datasets / name)

    monkeypatch.setattr(tarfile.TarFile, "extractall", publish_first)
    pool = load_cifar10_pool(str(tar_path), cache_dir=str(cache))
    published = [p for p in datasets.iterdir()]
    assert len(published) == 1, published  # our staging copy was dropped
    assert (published[0] / "parallel-run-marker").exists()  # theirs kept, never deleted under them
    assert len(pool) == 40 and Path(pool.paths[0]).is_file()


def test_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(HashkitError, match="does not exist.*--download"):
        load_cifar10_pool(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HashkitError, match="holds no CIFAR-10 data"):
        load_cifar10_pool(str(empty))
    tree = write_image_tree(tmp_path / "tree")
    for f in (tree / "test" / "cat").iterdir():
        f.unlink()
    with pytest.raises(HashkitError, match=r"class folder .*test/cat has no images"):
        load_cifar10_pool(str(tree))
    broken = write_image_tree(tmp_path / "broken")
    bad = broken / "train" / "dog" / "0000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    pool = load_cifar10_pool(str(broken))
    with pytest.raises(HashkitError, match=r"0000.png is unreadable"):
        pool.load(pool.paths.index(str(bad)))
    with pytest.raises(HashkitError, match="no CIFAR-10 location"):
        load_cifar10_pool(None)


def test_non_rgb_images_are_converted(tmp_path: Path) -> None:
    tree = write_image_tree(tmp_path / "tree", per_class=1)
    grey = tree / "train" / "cat" / "0000.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(grey)
    cmyk = tree / "train" / "dog" / "0000.jpg"
    (tree / "train" / "dog" / "0000.png").unlink()
    Image.new("CMYK", (32, 32), (0, 0, 0, 0)).save(cmyk)
    pool = load_cifar10_pool(str(tree))
    for path in (grey, cmyk):
        image = pool.load(pool.paths.index(str(path)))
        assert image.mode == "RGB" and image.size == (32, 32)


def test_download_failure_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(HashkitError, match="--download could not fetch CIFAR-10.*without internet"):
        load_cifar10_pool(str(tmp_path / "dl"), download=True)
