"""The FastAPI application of ``hashkit serve``: two pages (search, runs) and a small JSON API.

Routes
    GET  /                    search page
    GET  /runs                runs page (with ``runs=``): the ``hashkit report`` table and curves of ticked runs
    POST /api/search          multipart: ``image`` (a file) or ``position`` (an indexed item), and ``k`` or
                              ``radius``; answers ``hashkit search --json``'s document plus ``timings``
    GET  /api/items           ``?positions=3,5,8``: ids and label names of indexed items
    GET  /api/runs            the report table (``hashkit report --format json``) and the list of runs
    GET  /runs/curves.png     ``?run=REL&run=REL``: ``hashkit plot``'s figure of the ticked runs
    GET  /thumb/{position}    JPEG thumbnail of the item at ``position`` (an integer, nothing else)

Every error is JSON ``{"error": "<one line>"}`` with status 400 (bad input), 404 (no such item/run) or
413 (upload over the size limit).
"""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import hashkit
from hashkit import ties as tie_order
from hashkit.errors import HashkitError
from hashkit.serve.engine import (
    DEFAULT_MAX_PIXELS,
    EncodeBatcher,
    SearchBatcher,
    SearchRequest,
    ItemSource,
    LiveIndex,
    UploadError,
    decode_upload,
    now_ms,
    thumbnail_cache,
)

HERE = Path(__file__).parent
MAX_K = 1000
MAX_RESULTS = 5000  # a radius search returns at most this many items to the page (the count says how many matched)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes on /api/ routes, even without Content-Length."""

    def __init__(self, app: Any, limit_mb: float) -> None:
        self.app = app
        self.limit_mb = limit_mb
        self.limit = int(limit_mb * 2**20)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        message = f"upload is larger than the {self.limit_mb:g} MB limit; send a smaller image or raise --max-upload-mb"
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(message)
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message.splitlines()[0] if message else "error"}, status_code=status)


def create_app(
    index: str | Path,
    checkpoint: str | Path,
    runs: str | Path | None = None,
    images_root: str | Path | None = None,
    max_upload_mb: float = 20.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    ties: str = "score",
    cache_dir: str | Path | None = None,
    gpu: int | None = None,
    labels: bool = True,
) -> FastAPI:
    """Load the model and open the index once; return the ASGI app (run it with uvicorn, or use :func:`serve`)."""
    from hashkit.api import load

    tie_order.check_ties(ties)
    if max_upload_mb <= 0:
        raise HashkitError(f"--max-upload-mb {max_upload_mb}: must be positive")
    if runs is not None and not Path(runs).is_dir():
        raise HashkitError(f"--runs {runs} is not a folder; pass the folder holding your run folders (e.g. runs/)")
    if images_root is not None and not Path(images_root).is_dir():
        raise HashkitError(f"--images {images_root} is not a folder; pass the folder given to hashkit encode --images")
    hasher = load(checkpoint, gpu=gpu)
    live = LiveIndex(index, hasher.identity)
    items = ItemSource(images_root, thumbnail_cache(cache_dir, str(index)), max_pixels)
    if labels and hasher.config.get("dataset"):
        threading.Thread(target=items.load_dataset, args=(dict(hasher.config),), daemon=True).start()
    else:
        items.dataset_ready.set()
    batcher = EncodeBatcher(hasher)
    searcher = SearchBatcher()
    index_label = str(index)
    runs_root = Path(runs) if runs is not None else None

    app = FastAPI(title="hashkit serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.searcher = searcher
    app.state.live = live
    app.state.items = items
    app.add_middleware(BodyLimit, limit_mb=max_upload_mb)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        what = "not found" if exc.status_code == 404 else str(exc.detail)
        return _error(f"{what}: {request.url.path}", exc.status_code)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse)
    async def search_page(request: Request) -> Any:
        current = live.current()
        identity = current.model_identity
        return templates.TemplateResponse(request, "search.html", {
            "index": index_label, "count": len(current), "bits": current.bits, "identity": identity,
            "runs": runs_root is not None, "ties": ties, "version": hashkit.__version__,
            "max_upload_mb": max_upload_mb,
        })

    @app.post("/api/search")
    async def api_search(request: Request) -> Any:
        started = now_ms()
        try:
            form = await request.form(max_files=1, max_fields=8)
        except _TooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed multipart
            return _error(f"cannot read the form: {exc}; send multipart/form-data with the file in field 'image'")
        try:
            k, radius = _k_or_radius(form.get("k"), form.get("radius"), live.current().bits)
            upload = form.get("image")
            position = form.get("position")
            if (upload is None) == (position is None or position == ""):
                raise UploadError("send the image in field 'image' (or an indexed item's 'position'), not both or neither")
            if upload is not None:
                if isinstance(upload, str):
                    raise UploadError("field 'image' must be a file upload (multipart/form-data)")
                name = upload.filename or "upload"
                data = await upload.read()
                image = await run_in_threadpool(decode_upload, data, name, max_pixels)
            else:
                name, image = await run_in_threadpool(_indexed_image, live, items, position)
            tensor = await run_in_threadpool(hasher.transform, image)
        except UploadError as exc:
            return _error(str(exc), exc.status)
        finally:
            await form.close()
        decoded = now_ms()
        output = await asyncio.wrap_future(batcher.submit(tensor))
        encoded = now_ms()
        current = live.current()
        outputs = output[None, :]
        hits = [await asyncio.wrap_future(searcher.submit(SearchRequest(current, output, k, radius, ties)))]
        searched = now_ms()
        matched = len(hits[0][1])
        if radius is not None and matched > MAX_RESULTS:
            hits = [(hits[0][0][:MAX_RESULTS], hits[0][1][:MAX_RESULTS])]
        doc = tie_order.results_json(current, index_label, [name], outputs, hits, k, radius, ties)
        doc["matched"] = matched
        doc["count"] = len(current)
        doc["timings"] = {
            "decode_ms": round(decoded - started, 2),
            "encode_ms": round(encoded - decoded, 2),
            "search_ms": round(searched - encoded, 2),
            "total_ms": round(now_ms() - started, 2),
        }
        return JSONResponse(doc)

    @app.get("/api/items")
    async def api_items(positions: str = "") -> Any:
        current = live.current()
        try:
            wanted = [int(p) for p in positions.split(",") if p.strip()]
        except ValueError:
            return _error("positions: a comma-separated list of integers, e.g. ?positions=0,5,9")
        if len(wanted) > MAX_RESULTS:
            return _error(f"positions: at most {MAX_RESULTS} per request")
        bad = [p for p in wanted if not 0 <= p < len(current)]
        if bad:
            return _error(f"position {bad[0]} is not in the index (0..{len(current) - 1})", 404)
        out = []
        for p in wanted:
            item_id = current.ids(p)
            out.append({"position": p, "id": item_id, "labels": items.labels(item_id)})
        return JSONResponse({"items": out})

    @app.get("/thumb/{position}")
    async def thumb(position: str) -> Any:
        current = live.current()
        if not position.isdigit() or not position.isascii() or len(position) > 18 or int(position) >= len(current):
            return _error(f"no item at position {position!r} in the index", 404)
        item_id = current.ids(int(position))
        try:
            data = await run_in_threadpool(items.thumbnail, item_id)
        except (HashkitError, UploadError, OSError) as exc:
            logger.warning(f"thumbnail of {item_id}: {exc}")
            data = None
        if data is None:
            return _error(f"the image of item {position} ({item_id}) cannot be found; pass --images FOLDER", 404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    # ---- runs -------------------------------------------------------------------------------

    def _run_list() -> list[dict[str, Any]]:
        from hashkit.plotting import NEEDED
        from hashkit.report import find_results, read_result

        assert runs_root is not None
        results, _ = find_results(runs_root)
        out = []
        for path in results:
            result, _problem = read_result(path)
            metrics = (result or {}).get("metrics") or {}
            config = (result or {}).get("config") or {}
            evaluation = path.parent / "evaluation.json"
            curves = all(metrics.get(k) for k in NEEDED) or evaluation.is_file()
            out.append({
                "run": path.parent.relative_to(runs_root).as_posix() if path.parent != runs_root else ".",
                "method": config.get("method"), "dataset": config.get("dataset"), "bits": config.get("code_length"),
                "seed": config.get("seed"), "map": (result or {}).get("map"), "status": (result or {}).get("status"),
                "curves": bool(curves),
            })
        return out

    def _report() -> dict[str, Any]:
        import json

        from hashkit.report import collect, render_json, tabulate

        assert runs_root is not None
        found, problems = collect(runs_root, "map")
        return json.loads(render_json(tabulate(found, problems, "map")))

    @app.get("/runs", response_class=HTMLResponse)
    async def runs_page(request: Request) -> Any:
        if runs_root is None:
            return HTMLResponse("<p>No runs folder: start hashkit serve with --runs DIR.</p>", status_code=404)
        report, run_list = await run_in_threadpool(lambda: (_report(), _run_list()))
        return templates.TemplateResponse(request, "runs.html", {
            "report": report, "runs": run_list, "root": str(runs_root), "version": hashkit.__version__,
        })

    @app.get("/api/runs")
    async def api_runs() -> Any:
        if runs_root is None:
            return _error("no runs folder: start hashkit serve with --runs DIR", 404)
        report, run_list = await run_in_threadpool(lambda: (_report(), _run_list()))
        return JSONResponse({"report": report, "runs": run_list})

    @app.get("/runs/curves.png")
    async def curves(request: Request) -> Any:
        if runs_root is None:
            return _error("no runs folder: start hashkit serve with --runs DIR", 404)
        wanted = request.query_params.getlist("run")
        if not wanted:
            return _error("tick at least one run (?run=NAME)")
        known = {r["run"]: r for r in await run_in_threadpool(_run_list)}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            return _error(f"no run {unknown[0]!r} under {runs_root}", 404)

        def draw() -> bytes:
            from hashkit.plotting import load_curves, plot_curves

            fig = plot_curves(load_curves([runs_root / w for w in wanted]))
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            return buffer.getvalue()

        try:
            png = await run_in_threadpool(draw)
        except HashkitError as exc:
            return _error(str(exc))
        return Response(png, media_type="image/png")

    return app


def _k_or_radius(k: Any, radius: Any, bits: int) -> tuple[int | None, int | None]:
    k = None if k in (None, "") else k
    radius = None if radius in (None, "") else radius
    if k is not None and radius is not None:
        raise UploadError("give k or radius, not both")
    try:
        if radius is not None:
            value = int(radius)
            if not 0 <= value <= bits:
                raise ValueError
            return None, value
        value = 10 if k is None else int(k)
        if not 1 <= value <= MAX_K:
            raise ValueError
        return value, None
    except (TypeError, ValueError):
        if radius is not None:
            raise UploadError(f"radius {radius!r}: a whole number from 0 to {bits} (the code length)") from None
        raise UploadError(f"k {k!r}: a whole number from 1 to {MAX_K}") from None


def _indexed_image(live: LiveIndex, items: ItemSource, position: Any) -> tuple[str, Any]:
    current = live.current()
    text = str(position)
    if not text.isdigit() or not text.isascii() or len(text) > 18 or int(text) >= len(current):
        raise UploadError(f"no item at position {text!r} in the index", 404)
    item_id = current.ids(int(text))
    try:
        image = items.image(item_id)
    except (HashkitError, OSError) as exc:
        raise UploadError(f"the image of item {text} ({item_id}) cannot be read: {exc}") from exc
    if image is None:
        raise UploadError(f"the image of item {text} ({item_id}) cannot be found; pass --images FOLDER", 404)
    return item_id, image
