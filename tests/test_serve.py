"""hashkit serve without a browser: the JSON API against `hashkit search --json`, tie order against a brute-force
reference, safety (paths, uploads, host), and a concurrent append never showing a half-written segment."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from loguru import logger  # noqa: E402

import hashkit  # noqa: E402
from hashkit import ties  # noqa: E402
from hashkit.index import Index  # noqa: E402
from hashkit.serve import serve  # noqa: E402
from hashkit.serve.app import create_app  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_report import write_run  # noqa: E402
from test_retrieval_cli import make_checkpoint, make_images  # noqa: E402


# ---- tie order: hashkit.ties against a slow obvious reference ----------------------------------------------


def reference(codes_pm1: np.ndarray, output: np.ndarray, k: int | None, radius: int | None) -> list[tuple[int, int]]:
    """Every item's (distance, position), sorted by distance, then u·b descending, then identical codes by
    the position times 0x9E3779B97F4A7C15 modulo 2**64 (Python integers: an independent transcription)."""
    q = np.where(output >= 0, 1, -1)
    rows = []
    for pos, code in enumerate(codes_pm1):
        dist = int((code != q).sum())
        score = float(np.dot(code.astype(np.float32), output.astype(np.float32)))
        rows.append((dist, -score, (pos * 0x9E3779B97F4A7C15) % 2**64, pos))
    rows.sort()
    if radius is not None:
        rows = [r for r in rows if r[0] <= radius]
    if k is not None:
        rows = rows[:k]
    return [(d, p) for d, _, _, p in rows]


def small_index(tmp_path: Path, n: int = 600, bits: int = 12, seed: int = 0) -> tuple[Index, np.ndarray]:
    """Few distinct codes (many exact duplicates and many ties at every distance)."""
    rng = np.random.default_rng(seed)
    distinct = rng.choice([-1, 1], size=(40, bits)).astype(np.int8)
    codes = distinct[rng.integers(0, len(distinct), n)]
    index = Index.create(tmp_path / "ties.index", bits)
    index.add(codes[: n // 2], ids=[f"item{i}" for i in range(n // 2)])
    index.add(codes[n // 2:], ids=[f"item{i}" for i in range(n // 2, n)])  # two segments
    return index, codes


def test_ties_match_brute_force_reference(tmp_path: Path) -> None:
    index, codes = small_index(tmp_path)
    rng = np.random.default_rng(1)
    outputs = rng.normal(size=(6, index.bits)).astype(np.float32)
    for k in (1, 5, 17, 100, 599, 600, 1000):
        hits = ties.knn(index, outputs, k)
        for row, (d, i) in enumerate(hits):
            assert list(zip(d.tolist(), i.tolist())) == reference(codes, outputs[row], k, None), (k, row)
    for radius in (0, 2, 5):
        hits = ties.within(index, outputs, radius)
        for row, (d, i) in enumerate(hits):
            assert list(zip(d.tolist(), i.tolist())) == reference(codes, outputs[row], None, radius)


def test_identical_codes_are_not_in_insertion_order(tmp_path: Path) -> None:
    """A class-sorted collection where every item has the query's code: the score ties them all, and the
    order must not be the insertion order (which would show the first-stored class first)."""
    index = Index.create(tmp_path / "same.index", 8)
    index.add(np.ones((200, 8), np.int8), ids=[f"class{i // 50}/{i}" for i in range(200)])
    d, i = ties.knn(index, np.full((1, 8), 0.5, np.float32), 10)[0]
    assert d.tolist() == [0] * 10
    assert i.tolist() != list(range(10))
    assert len({int(p) // 50 for p in i}) > 1  # more than one stored "class" among the first ten
    assert i.tolist() == sorted(range(200), key=lambda p: (p * 0x9E3779B97F4A7C15) % 2**64)[:10]


def test_ties_insertion_is_index_order(tmp_path: Path) -> None:
    index, _ = small_index(tmp_path)
    outputs = np.random.default_rng(2).normal(size=(3, index.bits)).astype(np.float32)
    D, I = index.search(ties.signs(outputs), 25)
    for row, (d, i) in enumerate(ties.knn(index, outputs, 25, ties="insertion")):
        assert d.tolist() == D[row].tolist() and i.tolist() == I[row].tolist()
    # with score ties the distances are the same multiset per row: only the order within a distance changes
    for row, (d, _) in enumerate(ties.knn(index, outputs, 25)):
        assert d.tolist() == D[row].tolist()


def test_search_batcher_answers_each_query_as_alone(tmp_path: Path) -> None:
    """Queued searches with mixed k / radius / tie rules are batched (the worker is held on its first
    batch so the rest queue up) and each gets exactly the brute-force reference's answer."""
    from hashkit.serve.engine import SearchBatcher, SearchRequest

    index, codes = small_index(tmp_path)
    rng = np.random.default_rng(5)
    started, gate = threading.Event(), threading.Event()
    batcher = SearchBatcher()
    run_batch = batcher.run_batch
    batcher.run_batch = lambda requests: (started.set(), gate.wait(10), run_batch(requests))[2]  # type: ignore[method-assign]
    try:
        asks = [(k, None) for k in (1, 7, 7, 7, 50)] + [(None, r) for r in (0, 3, 3)]
        outputs = rng.normal(size=(len(asks) + 1, index.bits)).astype(np.float32)
        futures = [batcher.submit(SearchRequest(index, outputs[0], 3, None, "score"))]  # held in the worker
        assert started.wait(10)
        futures += [batcher.submit(SearchRequest(index, o, k, r, "score")) for o, (k, r) in zip(outputs[1:], asks)]
        gate.set()
        got = [f.result(timeout=30) for f in futures]
    finally:
        batcher.close()
    assert batcher.items == len(futures) and batcher.batches == 2  # the held one, then the eight queued at once
    for (d, i), o, (k, r) in zip(got, outputs, [(3, None)] + asks):
        assert list(zip(d.tolist(), i.tolist())) == reference(codes, o, k, r), (k, r)


def test_gather_codes_reads_any_positions(tmp_path: Path) -> None:
    index, codes = small_index(tmp_path, n=9000, bits=20)
    positions = np.array([8999, 0, 4500, 4500, 17, 4096, 4095])
    assert np.array_equal(ties.gather_codes(index, positions), codes[positions].astype(np.float32))


# ---- the app on a small index of random images -------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("serve")
    checkpoint = make_checkpoint(tmp / "model.pt", code_length=16)
    images = make_images(tmp / "photos", 24, seed=3)
    model = hashkit.load(checkpoint)
    index_dir = tmp / "photos.index"
    index = Index.create(index_dir, model.code_length, model.identity)
    index.add(model.encode([str(p) for p in images], progress=False),
              ids=[p.relative_to(tmp / "photos").as_posix() for p in images])
    runs = tmp / "runs"
    write_run(runs, "dpsh-32", curves=True)
    write_run(runs, "dhn-32", method="dhn", map_value=0.65, curves=True)
    write_run(runs, "plain", method="hashnet", map_value=0.6)
    app = create_app(index_dir, checkpoint, runs=runs, images_root=tmp / "photos", cache_dir=tmp / "cache")
    return {"tmp": tmp, "checkpoint": checkpoint, "images": images, "index": index_dir, "runs": runs,
            "client": TestClient(app), "app": app}


def upload(client: TestClient, name: str, data: bytes, **fields: str):
    return client.post("/api/search", files={"image": (name, data, "application/octet-stream")}, data=fields)


def test_api_search_is_the_cli_json(setup: dict, capsys: pytest.CaptureFixture) -> None:
    from hashkit.cli import main

    query = setup["images"][5]
    for args, fields in ((["--k", "7"], {"k": "7"}), (["--radius", "3"], {"radius": "3"})):
        capsys.readouterr()
        assert main(["search", "--index", str(setup["index"]), "--checkpoint", str(setup["checkpoint"]),
                     "--query", str(query), "--json", *args]) == 0
        cli = json.loads(capsys.readouterr().out)
        response = upload(setup["client"], query.name, query.read_bytes(), **fields)
        assert response.status_code == 200, response.text
        api = response.json()
        timings = api.pop("timings")
        assert set(timings) == {"decode_ms", "encode_ms", "search_ms", "total_ms"}
        assert api.pop("count") == 24 and api.pop("matched") == len(api["queries"][0]["results"])
        assert api["queries"][0].pop("query") == query.name
        assert cli["queries"][0].pop("query") == str(query)
        assert api == cli
    assert cli["queries"][0]["results"][0]["distance"] == 0


def test_search_by_position_and_items(setup: dict) -> None:
    client = setup["client"]
    response = client.post("/api/search", data={"position": "4", "k": "5"})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["queries"][0]["query"] == "group0/img004.png"
    assert [r["distance"] for r in doc["queries"][0]["results"]] == sorted(r["distance"] for r in doc["queries"][0]["results"])
    items = client.get("/api/items?positions=4,0").json()["items"]
    assert [(i["position"], i["id"], i["labels"]) for i in items] == [(4, "group0/img004.png", None), (0, "group0/img000.png", None)]
    assert client.get("/api/items?positions=24").status_code == 404


def test_thumbnails_by_position_only_and_cached(setup: dict) -> None:
    client = setup["client"]
    response = client.get("/thumb/3")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (32, 32)
    cached = list((setup["tmp"] / "cache" / "thumbnails").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.content
    assert not list((setup["tmp"] / "cache").rglob("*.tmp"))  # atomic writes leave no temp file
    assert client.get("/thumb/3").content == response.content
    for bad in ("/thumb/24", "/thumb/-1", "/thumb/1e2", "/thumb/%2Fetc%2Fpasswd", "/thumb/..%2F..%2Fetc%2Fpasswd",
                "/thumb/../../etc/passwd", "/thumb/%2e%2e%2fmodel.pt", "/thumb/3.0", "/thumb/%EF%BC%93"):
        response = client.get(bad)
        assert response.status_code == 404 and response.json()["error"], bad
    assert client.post("/api/search", data={"position": "../model.pt", "k": "3"}).status_code == 404


def test_bad_uploads_are_one_line_400_and_the_server_keeps_serving(setup: dict, tmp_path: Path) -> None:
    client = setup["client"]
    good = setup["images"][0].read_bytes()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 MP declared in a ~10 KB file
    assert len(bomb.getvalue()) < 100_000
    cases = {
        "notes.txt": (b"just some text\n", "not an image"),
        "half.jpg": (truncated, "truncated or corrupt"),
        "empty.png": (b"", "empty file"),
        "bomb.png": (bomb.getvalue(), "decompression-bomb"),
    }
    for name, (data, words) in cases.items():
        response = upload(client, name, data, k="3")
        assert response.status_code == 400, (name, response.text)
        error = response.json()["error"]
        assert words in error and name in error and "\n" not in error
        assert upload(client, "ok.png", good, k="3").status_code == 200
    for fields, words in (({"k": "0"}, "k '0'"), ({"k": "x"}, "k 'x'"), ({"radius": "17"}, "radius '17'"),
                          ({"k": "3", "radius": "1"}, "not both")):
        response = upload(client, "ok.png", good, **fields)
        assert response.status_code == 400 and words in response.json()["error"], fields
    assert client.post("/api/search", data={"k": "3"}).status_code == 400  # no image at all


def test_upload_size_limit(setup: dict) -> None:
    small = TestClient(create_app(setup["index"], setup["checkpoint"], max_upload_mb=0.01, labels=False))
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(big, "PNG")
    assert len(big.getvalue()) > 0.01 * 2**20
    response = upload(small, "big.png", big.getvalue(), k="3")
    assert response.status_code == 413 and "0.01 MB limit" in response.json()["error"]
    assert upload(small, "small.png", setup["images"][1].read_bytes(), k="3").status_code == 200

    def chunks():  # no Content-Length: the limit is counted while reading
        yield b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 1024
        yield b"\r\n--x--\r\n"

    response = small.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_favicon_and_no_query_card_before_a_search(setup: dict) -> None:
    client = setup["client"]
    page = client.get("/").text
    assert '<link rel="icon" href="/static/favicon.svg"' in page
    for path in ("/static/favicon.svg", "/favicon.ico"):
        icon = client.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml") and b"<svg" in icon.content
    # The query card (and its image without a src) is hidden until the first search, and CSS cannot override it.
    assert '<section id="query" class="query" hidden' in page
    assert "[hidden] { display: none !important; }" in client.get("/static/style.css").text


def test_runs_page_and_curves(setup: dict) -> None:
    client = setup["client"]
    page = client.get("/runs")
    assert page.status_code == 200
    assert 'id="report"' in page.text and "dpsh" in page.text.lower() and "hashnet" in page.text
    runs = {r["run"]: r for r in client.get("/api/runs").json()["runs"]}
    assert runs["dpsh-32"]["curves"] and not runs["plain"]["curves"]
    png = client.get("/runs/curves.png?run=dpsh-32&run=dhn-32")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/runs/curves.png?run=../dpsh-32").status_code == 404
    response = client.get("/runs/curves.png?run=plain")
    assert response.status_code == 400 and "pr_curve" in response.json()["error"]


def test_binds_localhost_by_default_and_warns_otherwise(setup: dict) -> None:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        handle = serve(setup["index"], setup["checkpoint"], port=0, block=False, labels=False)
        try:
            assert handle.server.servers[0].sockets[0].getsockname()[0] == "127.0.0.1"
            assert not messages
        finally:
            handle.stop()
        handle = serve(setup["index"], setup["checkpoint"], host="0.0.0.0", port=0, block=False, labels=False)
        handle.stop()
    finally:
        logger.remove(sink)
    assert len(messages) == 1 and "serving on 0.0.0.0" in messages[0]


APPENDER = textwrap.dedent("""
    import sys, numpy as np
    from hashkit.index import Index
    index = Index.open(sys.argv[1])
    rng = np.random.default_rng(0)
    for step in range(int(sys.argv[2])):
        n = 200
        start = len(index)
        index.add(rng.choice([-1, 1], size=(n, index.bits)).astype(np.int8), ids=[f"added{start + j}" for j in range(n)])
""")


def test_concurrent_append_never_shows_a_half_written_segment(setup: dict, tmp_path: Path) -> None:
    import shutil

    index_dir = tmp_path / "live.index"
    shutil.copytree(setup["index"], index_dir)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    client = TestClient(create_app(index_dir, setup["checkpoint"], images_root=setup["tmp"] / "photos", labels=False))
    script = tmp_path / "append.py"
    script.write_text(APPENDER)
    appends = 15
    proc = subprocess.Popen([sys.executable, str(script), str(index_dir), str(appends)])
    counts = []
    query = setup["images"][2].read_bytes()
    try:
        while True:
            done = proc.poll() is not None
            response = upload(client, "q.png", query, k="50")
            assert response.status_code == 200, response.text
            doc = response.json()
            count = doc["count"]
            assert (count - 24) % 200 == 0  # only whole appends are ever visible
            counts.append(count)
            positions = [r["position"] for r in doc["queries"][0]["results"]]
            assert max(positions) < count
            for r in doc["queries"][0]["results"]:
                assert r["id"] == (f"added{r['position']}" if r["position"] >= 24 else r["id"])
            items = client.get(f"/api/items?positions={count - 1}").json()["items"]
            assert items[0]["id"] == ("added%d" % (count - 1) if count > 24 else items[0]["id"])
            if done:
                break
    finally:
        proc.wait(timeout=60)
        logger.remove(sink)
    assert proc.returncode == 0
    assert counts == sorted(counts) and counts[-1] == 24 + 200 * appends
    assert len(set(counts)) >= 2  # the server saw the index grow while it served
    assert not [w for w in warnings if "keeping the previous snapshot" in w]
    assert Index.open(index_dir).num_segments == 1 + appends


def test_cli_mistakes_are_one_line_errors(setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hashkit.cli import main

    cases = [
        (["--index", str(tmp_path / "none.index"), "--checkpoint", str(setup["checkpoint"])], "none.index"),
        (["--index", str(setup["index"]), "--checkpoint", str(setup["checkpoint"]), "--runs", str(tmp_path / "x")],
         "--runs"),
        (["--index", str(setup["index"]), "--checkpoint", str(setup["checkpoint"]), "--max-upload-mb", "0"],
         "--max-upload-mb"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("hashkit: error:") and words in err[0], err
