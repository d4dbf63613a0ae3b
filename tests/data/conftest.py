"""Fixtures for the data tests: an isolated environment, and local HTTP mirrors."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from archlab.datasets import DATASETS


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the user's environment, cache or system directories."""
    monkeypatch.delenv("ARCHLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("ARCHLAB_CACHE_DIR", str(tmp_path / "default-cache"))
    for name, info in list(DATASETS.items()):
        monkeypatch.setitem(DATASETS, name, dataclasses.replace(info, system_dirs=()))


def with_record(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> None:
    """Replace fields of dataset ``name``'s record for one test (e.g. its system_dirs)."""
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], **changes))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class Server:
    """A local HTTP mirror serving ``directory`` on 127.0.0.1 (tests have no internet)."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(QuietHandler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], Server]]:
    """``serve(directory)`` starts a mirror; every one is stopped after the test."""
    servers: list[Server] = []

    def start(directory: Path) -> Server:
        servers.append(Server(directory))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def closed_port_url() -> str:
    """The URL of a port nothing listens on (a mirror that refuses connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
