"""A real S3 endpoint for the tests: moto's server on 127.0.0.1, spoken to over HTTP
by s3fs in the test process and in worker processes alike.

The fixtures skip (with the install command) when moto or s3fs is missing; the
``test`` extra installs both, so CI runs them.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

# Dummy credentials for the whole test session, set when conftest imports this
# module: before any Dask worker process starts, so every worker inherits them
# (workers take credentials from their environment, never from the driver), and
# no test can ever reach a real AWS account.
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
os.environ.pop("AWS_PROFILE", None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a moto S3 server running for the whole session."""
    pytest.importorskip("s3fs", reason="pip install '.[test]' (s3fs) to run the S3 tests")
    server_module = pytest.importorskip("moto.server", reason="pip install '.[test]' (moto[server]) to run the S3 tests")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store_url(s3_server):
    """``(url, storage_options)`` of a fresh bucket: ``s3://<bucket>/results``.

    After the test, no multipart upload may be left open in the bucket (an
    interrupted upload is invisible but billed).
    """
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    bucket = f"daskflow-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/results", {"client_kwargs": {"endpoint_url": s3_server}}
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert not uploads, f"multipart uploads left open: {uploads}"
