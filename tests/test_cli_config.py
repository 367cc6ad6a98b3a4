"""``daskflow config view|set|unset`` against a Dask config folder of the test's own.

``dask.config.PATH`` (where ``set`` writes) and ``dask.config.paths`` (what is
searched) point into ``tmp_path``: the real ~/.config/dask is never read or written.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import dask
import pytest
import yaml
from click.testing import CliRunner, Result

from daskflow.cli import cli

from .conftest import assert_error


@pytest.fixture(autouse=True)
def config_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "dask-config"
    monkeypatch.setattr(dask.config, "PATH", str(folder))
    monkeypatch.setattr(dask.config, "paths", [str(folder)])
    for name in list(os.environ):
        if name.upper().startswith("DASK_DASKFLOW__"):
            monkeypatch.delenv(name)
    return folder


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["config", *args])


def written(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def as_dask_reads_it(folder: Path, key: str):
    """``key`` as Dask itself loads it from the files in ``folder`` (no environment)."""
    return dask.config.get(key, config=dask.config.collect(paths=[str(folder)], env={}))


# ----------------------------------------------------------------------- set
def test_set_writes_daskflow_yaml_that_dask_reads(config_dir):
    result = invoke("set", "storage.url", "s3://bucket/results")
    assert result.exit_code == 0, result.output
    path = config_dir / "daskflow.yaml"
    assert result.stdout.strip() == f'Set daskflow.storage.url to "s3://bucket/results" in {path}'
    assert result.stderr == ""  # the file is in Dask's folder and nothing overrides it
    assert written(path) == {"daskflow": {"storage": {"url": "s3://bucket/results"}}}
    assert as_dask_reads_it(config_dir, "daskflow.storage.url") == "s3://bucket/results"


def test_keys_with_or_without_prefix_and_either_dash(config_dir):
    assert invoke("set", "daskflow.history.flush_interval", "5").exit_code == 0
    assert invoke("set", "history.heartbeat", "20").exit_code == 0
    assert invoke("set", "daskflow.history.flush-interval", "7").exit_code == 0  # the same key again
    assert written(config_dir / "daskflow.yaml") == {"daskflow": {"history": {"flush-interval": 7, "heartbeat": 20}}}


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("logging.console", "false", False),
        ("storage.probe", "True", True),
        ("history.crashed-after", "120.5", 120.5),
        ("logging.level", "debug", "DEBUG"),
        ("logging.level", "15", 15),
        ("storage.options", "{'anon': True}", {"anon": True}),
        ("storage.url", "null", None),
        ("storage.url", "2024", "2024"),  # a folder name stays text
        ("storage.signing-key", "12345678", "12345678"),  # a key that looks like a number stays text
        ("storage.options.client_kwargs", "{'endpoint_url': 'http://127.0.0.1:9000'}", {"endpoint_url": "http://127.0.0.1:9000"}),
    ],
)
def test_values_are_read_like_dask_reads_them(config_dir, key, text, value):
    assert invoke("set", key, text).exit_code == 0
    assert as_dask_reads_it(config_dir, f"daskflow.{key}") == value


@pytest.mark.parametrize(
    ("key", "text", "fragment"),
    [
        ("logging.console", "yes", "true or false"),
        ("logging.level", "loud", "not a logging level"),
        ("history.heartbeat", "0", "greater than 0"),
        ("history.heartbeat", "soon", "greater than 0"),
        ("storage.options", "5", "mapping of fsspec options"),
        ("storage.url", "", "cannot be empty"),
    ],
)
def test_invalid_values_exit_2_and_change_nothing(config_dir, key, text, fragment):
    assert invoke("set", "logging.level", "ERROR").exit_code == 0
    before = (config_dir / "daskflow.yaml").read_text()
    assert_error(invoke("set", key, text), 2, f"daskflow.{key}", fragment)
    assert (config_dir / "daskflow.yaml").read_text() == before


def test_unknown_keys_name_the_closest_ones(config_dir):
    assert_error(invoke("set", "storage.ulr", "x"), 2, "'storage.ulr'", "daskflow.storage.url")
    assert_error(invoke("set", "daskflow.history.heartbeet", "3"), 2, "daskflow.history.heartbeat")
    assert_error(invoke("set", "zzz", "1"), 2, "'zzz'", "daskflow.logging.level")  # nothing close: every key
    assert_error(invoke("set", "storage", "x"), 2, "is a section", "daskflow.storage.url")
    assert_error(invoke("unset", "storage.ulr"), 2, "daskflow.storage.url")
    assert not config_dir.exists()


def test_storage_options_are_free_form_and_keep_their_spelling(config_dir):
    result = invoke("set", "storage.options.s3_additional_kwargs.SSEKMSKeyId", "my-kms-key")
    assert result.exit_code == 0, result.output
    assert '"my-kms-key"' in result.stdout  # an id, not a credential: shown
    assert as_dask_reads_it(config_dir, "daskflow.storage.options") == {"s3_additional_kwargs": {"SSEKMSKeyId": "my-kms-key"}}


def test_secrets_are_masked_and_their_file_is_owner_only(config_dir):
    for key, value in [("storage.signing-key", "sup3r-s3cret-signing"), ("storage.options.secret", "aws-s3cret-value")]:
        result = invoke("set", key, value)
        assert result.exit_code == 0
        assert value not in result.output and f"daskflow.{key} to ***" in result.stdout
    path = config_dir / "daskflow.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert as_dask_reads_it(config_dir, "daskflow.storage.signing-key") == "sup3r-s3cret-signing"


def test_file_option_and_notes_about_what_wins(config_dir, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere.yaml"
    result = invoke("set", "cache.refresh", "true", "--file", str(elsewhere))
    assert result.exit_code == 0 and str(elsewhere) in result.stdout
    assert written(elsewhere) == {"daskflow": {"cache": {"refresh": True}}}
    assert not config_dir.exists()
    assert "is not in Dask's config folders" in result.stderr

    config_dir.mkdir()
    (config_dir / "zz-team.yaml").write_text("daskflow:\n  cache:\n    refresh: false\n")  # read after daskflow.yaml
    monkeypatch.setenv("DASK_DASKFLOW__CACHE__REFRESH", "False")
    result = invoke("set", "cache.refresh", "true")
    assert result.exit_code == 0
    assert f"{config_dir / 'zz-team.yaml'} also sets daskflow.cache.refresh and is read later" in result.stderr
    assert "DASK_DASKFLOW__CACHE__REFRESH is set and wins" in result.stderr


def test_a_malformed_file_is_one_line_and_exit_code_1(config_dir):
    config_dir.mkdir()
    (config_dir / "daskflow.yaml").write_text("daskflow: [unclosed\n")
    assert_error(invoke("set", "storage.url", "/x"), 1, "daskflow.yaml", "not valid YAML")
    (config_dir / "daskflow.yaml").write_text("- a list\n")
    assert_error(invoke("unset", "storage.url"), 1, "not a mapping")


# --------------------------------------------------------------------- unset
def test_unset_removes_the_key_and_empty_sections(config_dir):
    path = config_dir / "daskflow.yaml"
    config_dir.mkdir()
    path.write_text("distributed:\n  worker:\n    daemon: false\n")  # not ours: kept
    invoke("set", "storage.url", "/data/results")
    invoke("set", "storage.probe", "false")
    invoke("set", "logging.level", "WARNING")

    result = invoke("unset", "daskflow.storage.url")
    assert result.exit_code == 0 and result.stdout.strip() == f"Removed daskflow.storage.url from {path}"
    assert written(path)["daskflow"] == {"storage": {"probe": False}, "logging": {"level": "WARNING"}}
    invoke("unset", "storage.probe")
    invoke("unset", "logging.level")
    assert written(path) == {"distributed": {"worker": {"daemon": False}}}

    assert_error(invoke("unset", "logging.level"), 2, "daskflow.logging.level is not set in", str(path))
    (config_dir / "team.yaml").write_text("daskflow:\n  logging:\n    level: ERROR\n")
    assert_error(invoke("unset", "logging.level"), 2, f"it is set in {config_dir / 'team.yaml'}")


# ---------------------------------------------------------------------- view
def test_view_shows_effective_values_masks_secrets_and_names_sources(config_dir, _result_storage, monkeypatch):
    config_dir.mkdir()
    (config_dir / "daskflow.yaml").write_text("daskflow:\n  history:\n    heartbeat: 30\n")
    monkeypatch.setenv("DASK_DASKFLOW__CACHE__REFRESH", "false")
    secrets = {
        "signing-key": "sup3r-s3cret-signing",
        "options": {
            "key": "AKIAEXAMPLEKEY",
            "secret": "aws-s3cret-value",
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "aws_session_token": "t0ken-value"},
            "SSEKMSKeyId": "kms-key-id",
        },
    }
    with dask.config.set({"daskflow.storage": {**dask.config.get("daskflow.storage"), **secrets}}):
        result = invoke("view")
        as_json = invoke("view", "--json")
    assert result.exit_code == 0 and as_json.exit_code == 0
    for secret in ("sup3r-s3cret-signing", "AKIAEXAMPLEKEY", "aws-s3cret-value", "t0ken-value"):
        assert secret not in result.output and secret not in as_json.output

    shown = yaml.safe_load(result.stdout)["daskflow"]  # the sources are YAML comments
    document = json.loads(as_json.stdout)
    assert document["daskflow"] == shown
    storage = shown["storage"]
    assert storage["url"] == str(_result_storage)  # the effective value (this test's store)
    assert storage["signing-key"] == "***"
    assert storage["options"] == {
        "key": "***",
        "secret": "***",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "aws_session_token": "***"},
        "SSEKMSKeyId": "kms-key-id",
    }
    assert shown["history"]["enabled"] is True  # defaults merged in
    assert f"#   {config_dir / 'daskflow.yaml'}: history.heartbeat" in result.stdout
    assert "#   DASK_DASKFLOW__CACHE__REFRESH" in result.stdout
    assert document["files"] == [{"path": str(config_dir / "daskflow.yaml"), "keys": ["history.heartbeat"]}]
    assert document["environment"] == ["DASK_DASKFLOW__CACHE__REFRESH"]


def test_view_masks_a_password_in_the_storage_url():
    with dask.config.set({"daskflow.storage.url": "s3://user:pa55word@bucket/results"}):
        result = invoke("view")
    assert "pa55word" not in result.output
    assert yaml.safe_load(result.stdout)["daskflow"]["storage"]["url"] == "s3://***@bucket/results"
    assert "no config file in" in result.stdout  # this test's folder is empty
