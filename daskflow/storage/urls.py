"""Catch storage URLs that are almost right before they become local folders.

``s3:/bucket/x`` has no ``://``, so it is a relative path to the OS: results
would silently go to ``./s3:/bucket/x`` on each machine, never to the bucket.
:func:`check_url` refuses such a URL with the correction instead.

A local folder really named like that can still be given as ``./s3:/bucket``.
"""

from __future__ import annotations

import re

from ..exceptions import StorageURLError

__all__ = ["check_url", "sanitize_url"]

# Protocols whose URL name a bucket/container (or host) first: a missing one is an error.
_BUCKETED = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "oci", "tos", "r2", "hdfs", "webhdfs",
             "http", "https", "sftp", "ssh", "ftp", "smb", "webdav", "dbfs", "lakefs", "hf"}
# Protocols also recognised without any colon (``s3//bucket``): names nobody gives a folder.
_TYPED_WITHOUT_COLON = _BUCKETED | {"file", "memory"}
#: Shorter than two letters it is a Windows drive (``C:/data``), never a protocol.
_SCHEME = r"(?P<proto>[A-Za-z][A-Za-z0-9+.\-]+)"
_COLON_FORM = re.compile(_SCHEME + r":(?P<rest>.*)$", re.DOTALL)
_SLASHES_FORM = re.compile(_SCHEME + r"(?:/{2,}|\\{2,})(?P<rest>.*)$", re.DOTALL)
#: A ``user:password@`` part after any ``://`` (chained URLs included).
_CREDENTIALS = re.compile(r"(://)[^/@]*@")


def sanitize_url(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages and records."""
    return _CREDENTIALS.sub(r"\1", url)


def _known_protocols() -> set[str]:
    import fsspec

    return set(fsspec.available_protocols()) | _TYPED_WITHOUT_COLON


def _suggest(proto: str, rest: str) -> str:
    path = rest.replace("\\", "/")
    if proto in ("file", "local"):
        return "file:///" + path.lstrip("/") if path.startswith("/") or rest.startswith("\\") else path or "."
    return f"{proto}://{path.lstrip('/')}"


def check_url(url: str, source: str = "") -> None:
    """Refuse a storage URL that looks like a mistyped protocol, or names no bucket.

    Parameters
    ----------
    url : str
        The URL or folder as given.
    source : str, optional
        Where it came from, for the message (e.g. ``"config daskflow.storage.url"``).

    Raises
    ------
    StorageURLError
        Naming the URL and the correction ("did you mean 's3://bucket/x'?").
    """
    origin = f" (from {source})" if source else ""
    if "://" in url:
        proto, rest = url.split("://", 1)
        if proto.lower() in _BUCKETED and not rest.strip("/"):
            raise StorageURLError(
                f"result storage {sanitize_url(url)!r}{origin} names no bucket: use {proto}://BUCKET/PREFIX", sanitize_url(url), "open"
            )
        if proto.lower() in _BUCKETED and rest.startswith("/"):
            meant = f"{proto}://{rest.lstrip('/')}"
            raise StorageURLError(
                f"result storage {sanitize_url(url)!r}{origin} has a slash too many: did you mean {sanitize_url(meant)!r}?",
                sanitize_url(url), "open",
            )
        return
    if url.startswith(("./", "../", "/", "~", ".\\")):
        return  # a path given as a path is taken literally
    meant = None
    colon = _COLON_FORM.match(url)
    if colon and colon["proto"].lower() in _known_protocols():
        meant = _suggest(colon["proto"], colon["rest"])
    else:
        slashes = _SLASHES_FORM.match(url)
        if slashes and slashes["proto"].lower() in _TYPED_WITHOUT_COLON:
            rest = slashes["rest"]
            # "file//srv/x": the second slash was meant as the path's root.
            meant = _suggest(slashes["proto"], "/" + rest if slashes["proto"].lower() in ("file", "local") else rest)
    if meant is None:
        return
    shown = re.sub(r"^([^/@]*?[:/\\]+)[^/@]*@", r"\1", url)  # no user:password@ in the message either
    raise StorageURLError(
        f"result storage {shown!r}{origin} looks like a mistyped URL and would be written to a local folder "
        f"named {url.replace(chr(92), '/').split('/', 1)[0]!r}: did you mean {sanitize_url(meant)!r}? "
        f"(a folder really named so can be given as './{url}')",
        shown, "open",
    )
