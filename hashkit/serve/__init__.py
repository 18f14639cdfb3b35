"""``hashkit serve``: a local web page to search an index with an image and to look at runs.

From Python (e.g. a notebook), without blocking::

    from hashkit.serve import serve
    server = serve("photos.index", "runs/demo/checkpoint.pt", runs="runs", block=False)
    print(server.url)        # http://127.0.0.1:8000/
    server.stop()

``block=True`` (the command line's behaviour) runs until interrupted. The app itself is
:func:`hashkit.serve.app.create_app` (FastAPI; served here by uvicorn).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from loguru import logger

from hashkit.errors import HashkitError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServerHandle:
    """A uvicorn server running in a background thread: ``url``, ``app``, ``stop()``."""

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int, app: Any) -> None:
        self.server = server
        self.thread = thread
        self.host = host
        self.port = port
        self.app = app

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        close_workers(self.app)


def serve(
    index: str | Path,
    checkpoint: str | Path,
    runs: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    block: bool = True,
    log_level: str = "warning",
    **options: Any,
) -> ServerHandle | None:
    """Serve the search page (and the runs page with ``runs``) on http://host:port/.

    ``options`` go to :func:`hashkit.serve.app.create_app` (``images_root``, ``max_upload_mb``,
    ``max_pixels``, ``ties``, ``cache_dir``, ``gpu``, ``labels``). ``port=0`` picks a free port.
    With ``block=False`` returns a :class:`ServerHandle` once the server accepts connections.
    """
    import uvicorn

    from hashkit.serve.app import create_app

    if host not in LOCAL_HOSTS:
        logger.warning(
            f"serving on {host}: every machine that can reach this address can search the index and see its "
            "images; use --host 127.0.0.1 (the default) to keep it on this machine"
        )
    app = create_app(index, checkpoint, runs=runs, **options)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if block:
        logger.info(f"hashkit serve: http://{host}:{port}/ (Ctrl-C stops)")
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind: say it in one line below
            pass
        finally:
            close_workers(app)
        if not server.started:
            raise HashkitError(f"cannot listen on {host}:{port} (in use, or not an address of this machine); try another --port")
        return None
    thread = threading.Thread(target=server.run, name="hashkit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            close_workers(app)
            raise HashkitError(f"cannot listen on {host}:{port} (in use, or not an address of this machine); try another --port")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    handle = ServerHandle(server, thread, host, int(bound[1]), app)
    logger.info(f"hashkit serve: {handle.url}")
    return handle


def close_workers(app: Any) -> None:
    """Stop the app's encode and search worker threads."""
    for name in ("batcher", "searcher"):
        worker = getattr(app.state, name, None)
        if worker is not None:
            worker.close()
