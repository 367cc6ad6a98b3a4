"""The rule for names and tags of flows, tasks and deployments.

Names are metadata: storage paths come from run ids and hashes, never from a
name, so ``../../x``, ``a/b``, ``%2e%2e%2f`` or ``<img ...>`` are fine (the
status page escapes what it shows). A name must instead be text that every
place showing or storing it can hold as given:

* no control characters (U+0000 to U+001F, U+007F to U+009F): a NUL or an
  escape sequence would be cut or interpreted by terminals, logs and C libraries;
* no lone surrogates (U+D800 to U+DFFF): they cannot be written as UTF-8;
* no line or paragraph separators (U+2028, U+2029): they split log lines;
* no bidirectional controls (U+202A to U+202E, U+2066 to U+2069): they make a
  name read differently from what it is ("Trojan source");
* at most :data:`MAX_NAME_LENGTH` characters.

Names are kept exactly as given, with no Unicode normalisation: the NFC and NFD
spellings of ``é`` are two different names (and ``--flow`` matches one). Lookups
by name read ``_`` and ``-`` as one character (:func:`daskflow._names.same_name`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from ..exceptions import InvalidOptionError

__all__ = ["MAX_NAME_LENGTH", "check_name_text", "check_tag_texts", "name_problem"]

#: Longest name or tag, in characters.
MAX_NAME_LENGTH = 200

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_RULE = (
    f"names and tags are printable text of at most {MAX_NAME_LENGTH} characters, without control characters, "
    "lone surrogates, line separators or bidirectional controls"
)


def name_problem(text: str) -> str | None:
    """What breaks the rule in ``text`` (``None`` if nothing does)."""
    if len(text) > MAX_NAME_LENGTH:
        return f"it is {len(text)} characters long (at most {MAX_NAME_LENGTH})"
    for position, char in enumerate(text):
        point = ord(char)
        category = unicodedata.category(char)
        if category == "Cc":
            what = "a control character"
        elif category == "Cs":
            what = "a lone surrogate"
        elif category in ("Zl", "Zp"):
            what = "a line separator" if category == "Zl" else "a paragraph separator"
        elif char in _BIDI_CONTROLS:
            what = "a bidirectional control"
        else:
            continue
        return f"it holds {what} U+{point:04X} at position {position}"
    return None


def _shown(text: str) -> str:
    # Escaped (repr), and cut: the message must itself be printable and short.
    return repr(text[:40])[:-1] + ("…'" if len(text) > 40 else "'")


def check_name_text(kind: str, name: str, error: type[Exception] = InvalidOptionError) -> str:
    """``name`` if it follows the rule (see the module docstring).

    Parameters
    ----------
    kind : str
        What the name names, for the message (``"flow"``, ``"task"``).
    name : str
        The name (already known to be a non-empty string).
    error : type of Exception
        Raised when the name breaks the rule.

    Raises
    ------
    InvalidOptionError
        (or ``error``) naming the escaped value, what is wrong and the rule.
    """
    problem = name_problem(name)
    if problem is not None:
        raise error(f"{kind} name {_shown(name)} cannot be used: {problem}; {_RULE}")
    return name


def check_tag_texts(owner: str, tags: Iterable[str], error: type[Exception] = InvalidOptionError) -> tuple[str, ...]:
    """``tags`` if each follows the rule; ``owner`` (``"flow 'train'"``) starts the message."""
    tags = tuple(tags)
    for tag in tags:
        problem = name_problem(tag) if isinstance(tag, str) else None
        if problem is not None:
            raise error(f"{owner}: tag {_shown(tag)} cannot be used: {problem}; {_RULE}")
    return tags
