"""Fixtures of the server tests: a tiny index with metadata, a gradient store of the same
pool (random vectors: the comparison's arithmetic is what is tested), and a service over
both, built once per session."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from ..conftest import write_store
from ..tiny_encoders import pool_rows

#: Pool samples missing from the gradient store (a query with such an id has no ground truth).
NOT_IN_STORE = ("p23",)


@pytest.fixture(scope="session")
def serve_pool(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve-pool") / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()))
    return path


@pytest.fixture(scope="session")
def serve_index(serve_pool, tiny_encoder):  # noqa: F811
    from influcoder.attribution.build import build_index

    out = serve_pool.parent / "index"
    build_index(serve_pool, out, str(tiny_encoder), backend="torch", shard_rows=10, progress=False)
    return out


@pytest.fixture(scope="session")
def gradient_store(serve_pool):
    from influcoder.io.samples import load_samples

    samples = [s for s in load_samples(serve_pool) if s.id not in NOT_IN_STORE]
    vectors = np.random.default_rng(0).standard_normal((len(samples), 16)).astype(np.float32)
    return write_store(
        serve_pool.parent / "grads", vectors, samples, setup={"synthetic": True}, shard_rows=8
    ).path


@pytest.fixture(scope="session")
def service(serve_index, gradient_store):
    from influcoder.serve.server import open_service

    svc = open_service(serve_index, ground_truth=str(gradient_store), backend="torch")
    yield svc
    svc.close()


#: The token of the live server.
TOKEN = "test-token-1"


@contextlib.contextmanager
def running(service, token: str = TOKEN):
    """A real uvicorn server over ``service``, on a free loopback port, with ``token``;
    yields its base URL and stops it on exit."""
    import asyncio
    import socket
    import threading
    import time

    import uvicorn

    from influcoder.serve.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(service, token=token), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def live_server(service):
    """A real uvicorn server over the service, on a free loopback port, with a token; yields
    its base URL."""
    with running(service) as url:
        yield url
