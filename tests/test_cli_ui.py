"""``daskflow ui``'s mistakes and failures, before it serves anything (the page itself: test_status_page)."""

from __future__ import annotations

import socket

import dask
from click.testing import CliRunner

from daskflow.cli import cli

from .conftest import assert_error


def test_a_port_in_use_is_a_usage_error_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "runs").mkdir()  # a store (without runs yet)
        result = CliRunner().invoke(cli, ["ui", "--storage", str(tmp_path), "--port", str(port)])
    assert_error(result, 2, f"cannot listen on 127.0.0.1:{port}", "--port", "0 for any free one")


def test_bad_option_values_are_refused_before_starting(tmp_path):
    assert_error(CliRunner().invoke(cli, ["ui", "--port", "70000"]), 2, "70000")
    assert_error(CliRunner().invoke(cli, ["ui", "--poll", "0.01"]), 2, "0.01")


def test_a_missing_bucket_fails_before_serving(s3_server):
    options = {"client_kwargs": {"endpoint_url": s3_server}}
    with dask.config.set({"daskflow.storage.options": options}):
        result = CliRunner().invoke(cli, ["ui", "--storage", "s3://no-such-bucket-daskflow-ui/runs"])
    assert_error(result, 1, "no-such-bucket-daskflow-ui", "does not exist")
