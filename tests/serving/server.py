"""A real uvicorn server on a free loopback port, in a thread, for tests that need concurrency."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[tuple[str, Any]]:
    """Serve ``app`` until the block ends (a graceful shutdown); yields its base URL and the
    ``uvicorn.Server`` (``server.should_exit = True`` starts the shutdown early)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)


def wait_until_ready(base: str, process: Any, seconds: float = 60) -> None:
    """Poll ``base/health`` until it says ready; fail with the server's output if it dies or is late."""
    import json
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if json.load(answer)["ready"]:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the server is not ready: {process.stdout.read().decode()}")
        time.sleep(0.2)
