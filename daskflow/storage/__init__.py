"""Where results go: an fsspec-backed :class:`Store` and named serializers."""

from .serializers import (
    Serializer,
    get_serializer,
    register_serializer,
    serializer_names,
)
from .store import DEFAULT_URL, Manifest, Store, resolve_store

__all__ = [
    "DEFAULT_URL",
    "Manifest",
    "Serializer",
    "Store",
    "get_serializer",
    "register_serializer",
    "resolve_store",
    "serializer_names",
]
