"""A real S3 endpoint for the tests: moto's server on 127.0.0.1, spoken to over HTTP
by s3fs in the test process and in worker processes alike.

The fixtures skip (with the install command) when moto or s3fs is missing; the
``test`` extra installs both, so CI runs them (and on CI a missing package fails
instead of skipping, so the S3 tests cannot silently stop running there).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from daskflow import Store

INSTALL_HINT = "pip install '.[test]'"
REGION = "us-east-1"
#: ``(url, storage_options)`` as yielded by :func:`s3_store_url`.
S3Location = tuple[str, dict[str, Any]]


def use_dummy_credentials() -> None:
    """Dummy credentials in this process's environment, inherited by every Dask
    worker process started later (workers take credentials from their own
    environment, never from the driver); no test can ever reach a real AWS account."""
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)


# Also at import (conftest imports this module), not only when s3_server starts:
# session clusters may start their worker processes before the first S3 test.
use_dummy_credentials()


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"the S3 tests need {module.split('.')[0]}: {INSTALL_HINT} ({exc})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL (``http://127.0.0.1:<port>``) of a moto S3 server that runs
    for the whole session, with dummy credentials in ``os.environ``."""
    _require("s3fs")
    server_module = _require("moto.server")
    use_dummy_credentials()
    # werkzeug logs one line per request at INFO; the tests make thousands.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server (to set up and inspect buckets)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def s3_store_url(s3_server: str) -> Iterator[S3Location]:
    """``(url, storage_options)`` of a fresh, uniquely named bucket:
    ``("s3://<bucket>/prefix", {"client_kwargs": {"endpoint_url": ...}})``.

    After the test, no multipart upload may be left open in the bucket (an
    interrupted upload is invisible to listings but billed on real S3).
    """
    client = s3_client(s3_server)
    bucket = f"daskflow-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/prefix", {"client_kwargs": {"endpoint_url": s3_server}}
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert not uploads, f"multipart uploads left open in {bucket}: {uploads}"


def make_s3_store(location: S3Location, **extra_options: Any) -> Store:
    """A :class:`Store` on the bucket of ``s3_store_url``, with extra storage options."""
    url, options = location
    return Store(url, storage_options={**options, **extra_options})


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    """Every object key in ``bucket``, asked of the server (no s3fs cache)."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@contextlib.contextmanager
def moto_authentication(endpoint: str) -> Iterator[None]:
    """Make the moto server check credentials (it accepts any by default) until
    the block ends, then restore its previous setting.

    Server-wide: fine while tests in one process run one at a time.
    """
    previous = _reset_auth(endpoint, "0")  # authenticate from the next request on
    try:
        yield
    finally:
        _reset_auth(endpoint, previous)


def _reset_auth(endpoint: str, count: str) -> str:
    """Set moto's INITIAL_NO_AUTH_ACTION_COUNT; returns the previous value."""
    # A plain body: with urllib's default form content type, Flask would parse the
    # body as a form and moto would read an empty request.data.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]


def denied_user_keys(endpoint: str) -> tuple[str, str]:
    """Access key and secret of a new IAM user whose policy denies every S3 action
    (call while authentication is off: creating the user is itself an IAM call)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION)
    user = f"denied-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    deny_all = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="deny-s3", PolicyDocument=json.dumps(deny_all))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
