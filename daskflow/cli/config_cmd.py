"""``daskflow config view|set|unset``: the ``daskflow`` namespace of Dask's config.

Values live where Dask looks for them: YAML files in Dask's config folders
(``dask.config.paths``; ``set`` writes ``<dask.config.PATH>/daskflow.yaml`` by
default) and ``DASK_DASKFLOW__*`` environment variables, which win over files.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import dask.config
import yaml

from ..config import DEFAULTS_FILE
from ..storage.store import shareable_options
from ._common import EXIT_FAILED, CLIError, echo_json, json_option

__all__ = ["COMMANDS", "mask_config"]

MASK = "***"
#: Everything under this section is fsspec's, so free-form.
_OPTIONS = ("storage", "options")
_SIGNING_KEY = ("storage", "signing-key")
#: Keys whose values are text as typed: a signing key "12345678" must not become an int.
_TEXT_KEYS = {("storage", "url"), _SIGNING_KEY}


# ------------------------------------------------------------------ masking
def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a ``daskflow`` config section with secrets replaced by ``***``:
    the signing key, credential-like storage options and a URL's password.

    Parameters
    ----------
    config : Mapping
        The ``daskflow`` namespace (without the ``daskflow`` level).
    """
    out = copy.deepcopy(dict(config))
    storage = out.get("storage")
    if isinstance(storage, dict):
        for name, value in list(storage.items()):
            if _same(name, "signing-key") and value not in (None, ""):
                storage[name] = MASK
            elif _same(name, "url") and isinstance(value, str):
                storage[name] = re.sub(r"(://)[^/@]*@", rf"\1{MASK}@", value)
            elif _same(name, "options") and isinstance(value, Mapping):
                storage[name] = _mask_options(value)
    return out


def _mask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    # What the store itself keeps from workers is what counts as a credential.
    safe = shareable_options(options)
    return {
        name: (_mask_options(value) if isinstance(value, Mapping) else value) if name in safe else MASK
        for name, value in options.items()
    }


def _is_secret(parts: tuple[str, ...]) -> bool:
    if parts == _SIGNING_KEY:
        return True
    return parts[:2] == _OPTIONS and any(not shareable_options({name: None}) for name in parts[2:])


def _shown(parts: tuple[str, ...], value: Any) -> str:
    """``value`` of key ``parts`` as JSON, masked like ``config view`` masks it."""
    if value is not None and _is_secret(parts):
        return MASK
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    masked: Any = mask_config(nested)
    for part in parts:
        masked = masked[part]
    return json.dumps(masked)


# --------------------------------------------------------------------- keys
def _same(a: str, b: str, fold_case: bool = True) -> bool:
    """Dask treats ``signing-key`` and ``signing_key`` as one key."""
    a, b = a.replace("_", "-"), b.replace("_", "-")
    return a.lower() == b.lower() if fold_case else a == b


def _defaults() -> dict[str, Any]:
    with open(DEFAULTS_FILE) as file:
        return yaml.safe_load(file)["daskflow"]


def _leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Keys that take a value (``storage.options`` is one: a mapping of fsspec options)."""
    for name, value in tree.items():
        parts = (*prefix, str(name))
        if isinstance(value, Mapping) and parts != _OPTIONS:
            yield from _leaves(value, parts)
        else:
            yield parts


def _dotted(parts: tuple[str, ...]) -> str:
    return ".".join(("daskflow", *parts))


def _resolve(text: str) -> tuple[tuple[str, ...], Any]:
    """The canonical key for ``text`` (``storage.url`` or ``daskflow.storage.url``)
    and its default; anything under ``storage.options.`` is accepted as typed.

    Raises
    ------
    CLIError
        Naming the closest valid keys (exit code 2).
    """
    parts = text.strip().split(".")
    if parts and parts[0].lower() == "daskflow":
        parts = parts[1:]
    defaults = _defaults()
    node: Any = defaults
    out: list[str] = []
    for i, part in enumerate(parts):
        if tuple(out) == _OPTIONS and part:
            return (*out, *parts[i:]), None  # fsspec's names, kept as typed
        name = next((n for n in node if _same(n, part)), None) if isinstance(node, Mapping) and part else None
        if name is None:
            raise CLIError(_unknown(text, defaults))
        out.append(name)
        node = node[name]
    if not out:
        raise CLIError(_unknown(text, defaults))
    if isinstance(node, Mapping) and tuple(out) != _OPTIONS:
        inside = [_dotted(k) for k in _leaves(defaults) if k[: len(out)] == tuple(out)]
        raise CLIError(f"{_dotted(tuple(out))} is a section, not a key; give one of its keys: {', '.join(inside)}")
    return tuple(out), node


def _unknown(text: str, defaults: Mapping[str, Any]) -> str:
    valid = [_dotted(k) for k in _leaves(defaults)]
    wanted = text.strip().lower()
    wanted = wanted if wanted.startswith("daskflow.") else f"daskflow.{wanted}"
    close = difflib.get_close_matches(wanted.replace("_", "-"), valid, n=3, cutoff=0.6)
    if close:
        return f"unknown config key {text!r}; did you mean {', '.join(close)}? (all keys: `daskflow config view`)"
    return f"unknown config key {text!r}; the keys are {', '.join(valid)} and daskflow.storage.options.<fsspec option>"


def _parse(parts: tuple[str, ...], default: Any, text: str) -> Any:
    """``text`` as the value of key ``parts`` (Dask's rules: ``true``, ``10``,
    ``null``, ``{'a': 1}``), checked against what the key takes.

    Raises
    ------
    CLIError
        Naming the key and what it takes (exit code 2).
    """
    key = _dotted(parts)
    if parts in _TEXT_KEYS:
        if text.strip().lower() in ("null", "none"):
            return None
        if not text.strip():
            raise CLIError(f"{key} cannot be empty; `daskflow config unset {key}` removes it, or give null")
        return text
    value = dask.config.interpret_value(text)
    if parts == ("logging", "level"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and isinstance(logging.getLevelName(value.upper()), int):
            return value.upper()
        raise CLIError(f"{key} {text!r} is not a logging level; use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number")
    if parts == _OPTIONS and not isinstance(value, Mapping):
        raise CLIError(f"{key} takes a mapping of fsspec options, like \"{{'anon': True}}\"; or set one option: {key}.NAME VALUE")
    if isinstance(default, bool) and not isinstance(value, bool):
        raise CLIError(f"{key} is true or false, not {text!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise CLIError(f"{key} is a number greater than 0 (default {default}), not {text!r}")
    return value


# -------------------------------------------------------------------- files
def _search_paths() -> list[str]:
    """Where Dask reads config files, read now (tests and DASK_CONFIG move them)."""
    return list(dict.fromkeys([*dask.config.paths, str(dask.config.PATH)]))


def _config_files() -> list[tuple[Path, dict[str, Any]]]:
    """Every config file Dask reads, in the order it merges them (later ones win)."""
    try:
        return list(dask.config.collect_yaml(_search_paths(), return_paths=True))
    except ValueError as exc:  # a malformed file: Dask says which
        raise CLIError(" ".join(str(exc).split()), EXIT_FAILED) from None


def _child(node: Any, part: str, depth: int) -> str | None:
    """The spelling ``node`` (a file's section) uses for ``part``, if it has it.

    ``depth`` counts from the ``daskflow`` level (0): daskflow's own names are
    matched like Dask matches them, fsspec option names (deeper than
    ``daskflow.storage.options``) exactly but for ``-``/``_``.
    """
    if not isinstance(node, Mapping):
        return None
    return next((n for n in node if _same(str(n), part, fold_case=depth <= len(_OPTIONS))), None)


def _get(config: Any, parts: tuple[str, ...]) -> tuple[bool, Any]:
    """Whether ``config`` (a whole file) sets ``daskflow.<parts>``, and the value."""
    node = config
    for depth, part in enumerate(("daskflow", *parts)):
        name = _child(node, part, depth)
        if name is None:
            return False, None
        node = node[name]
    return True, node


def _setting_files(parts: tuple[str, ...], skip: Path) -> list[Path]:
    return [path for path, config in _config_files() if _get(config, parts)[0] and not _is(path, skip)]


def _is(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _env_vars(parts: tuple[str, ...] | None = None) -> list[str]:
    """``DASK_DASKFLOW__*`` variables (setting ``parts`` or a section holding it)."""
    found = []
    for name in os.environ:
        if not name.upper().startswith("DASK_DASKFLOW__"):
            continue
        path = name[5:].lower().split("__")[1:]
        if parts is None or (len(path) <= len(parts) and all(_same(a, b) for a, b in zip(path, parts))):
            found.append(name)
    return sorted(found)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise CLIError(f"{path} is not valid YAML ({problem}); fix or remove it", EXIT_FAILED) from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}", EXIT_FAILED) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"{path} holds a YAML {type(data).__name__}, not a mapping of keys; fix or remove it", EXIT_FAILED)
    return data


def _write(path: Path, data: dict[str, Any], secret: bool) -> None:
    """Replace ``path`` atomically: a reader (a starting worker) never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if secret:
            mode = 0o600  # it holds a credential: owner only
        elif path.exists():
            mode = path.stat().st_mode & 0o777
        else:
            umask = os.umask(0o022)  # read it (a short-lived, single-threaded CLI process)
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                yaml.safe_dump(data, file, default_flow_style=False, sort_keys=False)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise CLIError(
            f"cannot write {path}: {exc.strerror or exc}; choose another file with --file or "
            "another Dask config folder with DASK_CONFIG", EXIT_FAILED,
        ) from None


def _default_file(file: Path | None) -> Path:
    # dask.config.PATH is read now, not at import: DASK_CONFIG (and tests) move it.
    return file if file is not None else Path(dask.config.PATH) / "daskflow.yaml"


def _notes(parts: tuple[str, ...], path: Path, removed: bool = False) -> None:
    """Say when the file just changed is not what decides the value."""
    files = _config_files()
    key = _dotted(parts)
    position = next((i for i, (p, _) in enumerate(files) if _is(p, path)), None)
    if position is None and not removed:
        click.echo(f"Note: {path} is not in Dask's config folders ({', '.join(_search_paths())}); "
                   "point DASK_CONFIG to its folder for daskflow to read it", err=True)
    for i, (other, data) in enumerate(files):
        if i == position or not _get(data, parts)[0]:
            continue
        if removed:
            click.echo(f"Note: {other} still sets {key}", err=True)
        elif position is not None and i > position:
            click.echo(f"Note: {other} also sets {key} and is read later, so its value wins", err=True)
    for name in _env_vars(parts):
        click.echo(f"Note: environment variable {name} is set and wins over config files", err=True)


# ----------------------------------------------------------------- commands
@click.group()
def config() -> None:
    """daskflow's settings (Dask config, namespace daskflow): view, set, unset."""


@config.command("view")
@json_option
def config_view(as_json: bool) -> None:
    """Print the effective daskflow settings and where they come from.

    Defaults merged with Dask's config files and DASK_DASKFLOW__* environment
    variables; the signing key and credential-like storage options show as ***.
    """
    effective = mask_config(dask.config.get("daskflow", default={}) or {})
    # Values set in code can be any Python object: print them as JSON would.
    effective = json.loads(json.dumps(effective, default=str))
    files = []
    for path, data in _config_files():
        found, section = _get(data, ())
        if found and isinstance(section, Mapping) and section:
            files.append({"path": str(path), "keys": [".".join(k) for k in _leaves(section)]})
    env = _env_vars()
    if as_json:
        echo_json({"daskflow": effective, "files": files, "environment": env})
        return
    text = yaml.safe_dump({"daskflow": effective}, default_flow_style=False, sort_keys=False).rstrip("\n")
    # Sources as YAML comments, so the output stays a valid YAML file.
    lines = [text]
    if files:
        lines.append("# set in config files (read in this order, later files win):")
        lines.extend(f"#   {f['path']}: {', '.join(f['keys'])}" for f in files)
    if env:
        lines.append("# set by environment variables (they win over files):")
        lines.extend(f"#   {name}" for name in env)
    if not files and not env:
        lines.append(f"# no config file in {', '.join(_search_paths())} and no DASK_DASKFLOW__* variable sets daskflow keys")
    click.echo("\n".join(lines))


@config.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="YAML file to write (default: daskflow.yaml in Dask's config folder, DASK_CONFIG or ~/.config/dask).")
def config_set(key: str, value: str, file: Path | None) -> None:
    """Set KEY to VALUE in a Dask config file.

    KEY with or without the daskflow. prefix: storage.url, logging.level,
    storage.options.endpoint_url... VALUE is read like Dask reads it: true,
    false, null, numbers, or a Python literal like "{'anon': True}".
    """
    parts, default = _resolve(key)
    parsed = _parse(parts, default, value)
    path = _default_file(file)
    data = _load(path)
    node = data
    for depth, part in enumerate(("daskflow", *parts[:-1])):
        name = _child(node, part, depth) or part
        if node.get(name) is None:
            node[name] = {}
        elif not isinstance(node[name], dict):
            raise CLIError(f"{path}: {name!r} holds a {type(node[name]).__name__}, not a section; fix the file or choose another --file", EXIT_FAILED)
        node = node[name]
    node[_child(node, parts[-1], len(parts)) or parts[-1]] = parsed
    _write(path, data, secret=_is_secret(parts) or _secret_file(data))
    click.echo(f"Set {_dotted(parts)} to {_shown(parts, parsed)} in {path}")
    _notes(parts, path)


def _secret_file(data: Mapping[str, Any]) -> bool:
    """Whether the file holds a credential (it then stays owner-only)."""
    found, section = _get(data, ())
    if not found or not isinstance(section, Mapping):
        return False
    return mask_config(section) != section


@config.command("unset")
@click.argument("key")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="YAML file to change (default: daskflow.yaml in Dask's config folder).")
def config_unset(key: str, file: Path | None) -> None:
    """Remove KEY from a Dask config file (the default or another file then decides)."""
    parts, _ = _resolve(key)
    path = _default_file(file)
    data = _load(path)
    trail: list[tuple[dict[str, Any], str]] = []
    node: Any = data
    for depth, part in enumerate(("daskflow", *parts)):
        name = _child(node, part, depth)
        if name is None:
            elsewhere = _setting_files(parts, skip=path)
            where = f" (it is set in {', '.join(map(str, elsewhere))})" if elsewhere else ""
            raise CLIError(f"{_dotted(parts)} is not set in {path}{where}; nothing to unset")
        trail.append((node, name))
        node = node[name]
    parent, name = trail[-1]
    del parent[name]
    for parent, name in reversed(trail[:-1]):  # and every section it leaves empty
        if parent[name]:
            break
        del parent[name]
    _write(path, data, secret=_secret_file(data))
    click.echo(f"Removed {_dotted(parts)} from {path}")
    _notes(parts, path, removed=True)


COMMANDS = [config]
