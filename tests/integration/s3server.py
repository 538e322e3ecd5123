"""moto in server mode over real HTTP on a free port (S3 stand-in that runs here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from engines.embedded.redis import free_port


@contextmanager
def moto_s3() -> Iterator[str]:
    """Yields the endpoint URL of a moto S3 server; credentials are moto's dummy ones."""
    import os

    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
