"""An index in Milvus (milvus://HOST:PORT/COLLECTION) against a real embedded Milvus server (tests/conftest.py's
``milvus_server``): export, search, serve and encode give the folder index's answers; errors are one line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import hashkit
from hashkit.errors import HashkitError
from hashkit.index import Index, open_index
from tests.test_retrieval_cli import make_checkpoint, make_images

_names = (f"c{i}" for i in itertools.count())


def fresh(server: str) -> str:
    """A new collection address on the test server."""
    return f"milvus://{server}/{next(_names)}"


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``hashkit ARGS`` in-process: (exit status, stdout, stderr)."""
    from hashkit.cli import main

    capsys.readouterr()
    status = main(list(args))
    out = capsys.readouterr()
    return status, out.out, out.err


def folder_with(tmp: Path, codes: np.ndarray, identity: dict | None = None) -> Index:
    index = Index.create(tmp, codes.shape[1], identity or {"code_length": codes.shape[1], "method": "synthetic"})
    index.add(codes, [f"item-{i:05d}" for i in range(len(codes))])
    return index


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny checkpoint and 16 images in a folder index (``hashkit encode``)."""
    tmp = tmp_path_factory.mktemp("milvus-photos")
    checkpoint = make_checkpoint(tmp / "model.pt", code_length=16)
    make_images(tmp / "photos", 16, seed=5)
    folder = tmp / "photos.index"
    model = hashkit.load(checkpoint)
    paths = sorted((tmp / "photos").rglob("*.png"))
    Index.create(folder, 16, model.identity).add(model.encode([str(p) for p in paths], progress=False),
                                                  [p.relative_to(tmp / "photos").as_posix() for p in paths])
    return {"tmp": tmp, "checkpoint": checkpoint, "folder": folder}


@pytest.fixture(scope="module")
def exported(milvus_server: str, photos: dict) -> str:
    """The photos' folder index copied into a collection by ``hashkit export`` (one collection for the module:
    loading a collection costs the embedded server ~2 s)."""
    from hashkit.cli import main

    address = fresh(milvus_server)
    assert main(["export", "--index", str(photos["folder"]), "--to", address, "--batch", "5"]) == 0
    return address


def test_export_then_cli_search_equals_the_folder_index(exported: str, photos: dict,
                                                        capsys: pytest.CaptureFixture) -> None:
    tmp, checkpoint, folder, address = photos["tmp"], str(photos["checkpoint"]), str(photos["folder"]), exported
    status, out, err = cli(capsys, "export", "--index", folder, "--to", address)  # a re-run adds nothing
    assert status == 0, err
    assert json.loads(out) == {"index": folder, "to": address, "added": 0, "count": 16, "bits": 16,
                               "index_type": "BIN_FLAT"}
    queries = [str(p) for p in sorted((tmp / "photos").rglob("*.png"))[:3]]
    for extra in (["--k", "6"], ["--radius", "7"], ["--k", "16", "--ties", "insertion"]):
        answers = []
        for index in (folder, address):
            status, out, err = cli(capsys, "search", "--index", index, "--checkpoint", checkpoint, "--query", *queries,
                                   "--json", *extra)
            assert status == 0, err
            doc = json.loads(out)
            assert doc.pop("index") == index
            answers.append(doc)
        assert answers[0] == answers[1], extra
        assert answers[0]["queries"][0]["results"], extra


def test_search_equals_the_scan_at_every_rank_with_cut_tie_groups(milvus_server: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """10-bit codes: hundreds of items per distance, so Milvus' top-k cuts a tie group at almost every k. Milvus'
    16,384-hit window is shrunk to 50 so that fetching a tie group also takes the split-by-position path."""
    from hashkit import ties
    from hashkit.index import milvus

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2, (3000, 10)).astype(np.int8)
    folder = folder_with(tmp_path / "f", codes)
    address = fresh(milvus_server)
    assert milvus.export(folder, address, batch=1000)["count"] == 3000
    monkeypatch.setattr(milvus, "MAX_HITS", 50)
    remote = open_index(address)
    queries = rng.integers(0, 2, (6, 10)).astype(np.int8)
    for k in (1, 9, 40):
        D, I = remote.search(queries, k)
        D0, I0 = folder.search(queries, k)
        np.testing.assert_array_equal(D, D0)
        np.testing.assert_array_equal(I, I0)
    for got, want in zip(remote.range_search(queries, 2), folder.range_search(queries, 2)):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    outputs = rng.normal(size=(6, 10)).astype(np.float32)  # real-valued outputs: the score tie rule
    for got, want in zip(ties.knn(remote, outputs, 12), ties.knn(folder, outputs, 12)):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # A short answer (Milvus gives fewer hits than asked while segments are sealed or indexed) is asked again.
    asked, real = [], remote._raw_search

    def short_once(q, limit, *args, **kwargs):
        asked.append(limit)
        answer = real(q, limit, *args, **kwargs)
        return [(d[:-2], p[:-2]) for d, p in answer] if len(asked) == 1 else answer

    monkeypatch.setattr(remote, "_raw_search", short_once)
    D, I = remote.search(queries, 9)
    np.testing.assert_array_equal(I, folder.search(queries, 9)[1])
    assert asked[:2] == [10, 10]
    monkeypatch.undo()
    assert remote.ids([[0, -1], [2999, 5]]) == [["item-00000", None], ["item-02999", "item-00005"]]
    np.testing.assert_array_equal(remote.codes(100, 140), folder.codes(100, 140))


def test_bin_ivf_flat_is_searched_exactly(milvus_server: str, tmp_path: Path) -> None:
    from hashkit.index import milvus

    rng = np.random.default_rng(8)
    codes = rng.integers(0, 2, (2000, 32)).astype(np.int8)
    folder = folder_with(tmp_path / "f", codes)
    address = fresh(milvus_server)
    assert milvus.export(folder, address, index_type="BIN_IVF_FLAT", nlist=8)["index_type"] == "BIN_IVF_FLAT"
    queries = rng.integers(0, 2, (5, 32)).astype(np.int8)
    D, I = open_index(address).search(queries, 25)
    D0, I0 = folder.search(queries, 25)
    np.testing.assert_array_equal(D, D0)
    np.testing.assert_array_equal(I, I0)


def test_appends_are_idempotent_per_item_id(milvus_server: str) -> None:
    from hashkit.index.milvus import open_or_create

    rng = np.random.default_rng(9)
    codes = rng.integers(0, 2, (30, 12)).astype(np.int8)
    ids = [f"photo{i}.jpg" for i in range(30)]
    identity = {"code_length": 12, "method": "synthetic"}
    address = fresh(milvus_server)
    index = open_or_create(address, 12, identity)
    assert index.add(codes[:20], ids[:20]) == 20
    again = open_or_create(address, 12, identity)  # a second run, e.g. after a kill, with overlapping items
    assert again.add(codes[10:], ids[10:]) == 10
    assert again.add(codes, ids) == 0
    assert len(again) == 30
    assert again.ids(list(range(30))) == ids  # positions continue in order, each id once
    np.testing.assert_array_equal(again.codes(), np.packbits(codes > 0, axis=1))


def test_a_killed_export_resumes_and_a_foreign_collection_is_refused(milvus_server: str, tmp_path: Path) -> None:
    from hashkit.index import milvus

    rng = np.random.default_rng(10)
    codes = rng.integers(0, 2, (500, 16)).astype(np.int8)
    folder = folder_with(tmp_path / "f", codes)
    address = fresh(milvus_server)
    # What a kill leaves: the first 120 rows and a stray later batch.
    partial = milvus.open_or_create(address, 16, folder.model_identity)
    for lo, hi in ((0, 120), (300, 350)):
        partial._insert(np.arange(lo, hi), folder.ids(np.arange(lo, hi)), folder.codes(lo, hi))
    partial.sync()
    with pytest.raises(HashkitError, match="has gaps in its positions"):  # appending now would reuse positions
        partial.add(codes[:1], ["late-item"])
    summary = milvus.export(folder, address, batch=100)
    assert (summary["added"], summary["count"]) == (500 - 170, 500)
    queries = rng.integers(0, 2, (4, 16)).astype(np.int8)
    np.testing.assert_array_equal(open_index(address).search(queries, 30)[1], folder.search(queries, 30)[1])

    # Another folder of the same model with other items at the same positions: refused, nothing written.
    renamed = Index.create(tmp_path / "r", 16, folder.model_identity)
    renamed.add(np.concatenate([codes, codes[:5]]), [f"x{i}" for i in range(505)])
    with pytest.raises(HashkitError, match=r"position 0 holds 'item-00000', not 'x0'.*new collection"):
        milvus.export(renamed, address)
    assert len(open_index(address)) == 500


def test_errors_are_one_line_and_change_nothing(milvus_server: str, photos: dict, tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import _free_port

    tmp, checkpoint = photos["tmp"], str(photos["checkpoint"])
    query = str(next((tmp / "photos").rglob("*.png")))
    address = fresh(milvus_server)
    assert cli(capsys, "encode", "--checkpoint", checkpoint, "--images", str(tmp / "photos"), "--out", address)[0] == 0
    assert len(open_index(address)) == 16
    other = str(make_checkpoint(tmp_path / "other.pt", code_length=16, seed=3))
    monkeypatch.setenv("HASHKIT_MILVUS_TIMEOUT", "1")
    cases = {
        "milvus://nohost/photos": "no HOST:PORT",
        f"milvus://{milvus_server}/9bad-name": "collection name '9bad-name'",
        f"milvus://127.0.0.1:{_free_port()}/photos": "cannot reach Milvus at 127.0.0.1:",  # nothing listens there
        f"milvus://{milvus_server}/missing_collection": "does not exist",
    }
    for target, expected in cases.items():
        export = ["export", "--index", str(photos["folder"]), "--to", target]  # export creates a missing collection
        for args in (["search", "--index", target, "--checkpoint", checkpoint, "--query", query],
                     *([export] if "does not exist" not in expected else [])):
            status, out, err = cli(capsys, *args)
            lines = err.strip().splitlines()
            assert status == 2 and expected in lines[-1] and lines[-1].startswith("hashkit: error: "), (args, err)
            assert "Traceback" not in err and out == ""
    # A collection of another model: refused for search and for encode, and nothing is added.
    for args in (["search", "--index", address, "--checkpoint", other, "--query", query],
                 ["encode", "--checkpoint", other, "--images", str(tmp / "photos"), "--out", address]):
        status, _, err = cli(capsys, *args)
        assert status == 2 and "model does not match index " + address in err and "weights_sha256" in err, err
    assert len(open_index(address)) == 16
    # Encoding the same images again adds nothing (idempotent per id) and encodes nothing.
    status, out, err = cli(capsys, "encode", "--checkpoint", checkpoint, "--images", str(tmp / "photos"), "--out", address)
    assert status == 0 and json.loads(out)["added"] == 0 and json.loads(out)["count"] == 16, err
    # A collection hashkit did not write is refused, not misread.
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema

    from hashkit.index.milvus import MilvusIndex, parse_address

    foreign = parse_address(fresh(milvus_server))
    alias = MilvusIndex._connect(foreign)
    Collection(foreign.collection, CollectionSchema([FieldSchema("pk", DataType.INT64, is_primary=True),
                                                     FieldSchema("v", DataType.BINARY_VECTOR, dim=16)]), using=alias)
    with pytest.raises(HashkitError, match="not written by hashkit"):
        open_index(str(foreign))


def test_serve_answers_searches_from_milvus(exported: str, photos: dict) -> None:
    from fastapi.testclient import TestClient

    from hashkit.serve.app import create_app

    tmp, checkpoint, folder, address = photos["tmp"], photos["checkpoint"], photos["folder"], exported
    query = sorted((tmp / "photos").rglob("*.png"))[2]
    answers = []
    for index in (folder, address):
        client = TestClient(create_app(index, checkpoint, images_root=tmp / "photos", labels=False,
                                       cache_dir=tmp / "cache"))
        response = client.post("/api/search", files={"image": (query.name, query.read_bytes(), "image/png")},
                               data={"k": "5"})
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc.pop("index") == str(index) and doc.pop("count") == 16
        doc.pop("timings")
        answers.append(doc)
        thumb = client.get(f"/thumb/{doc['queries'][0]['results'][1]['position']}")
        assert thumb.status_code == 200  # the page's result thumbnails resolve ids through the index
        page = client.get("/")
        assert page.status_code == 200 and str(index) in page.text
    assert answers[0] == answers[1]
    assert answers[0]["queries"][0]["results"][0]["distance"] == 0
