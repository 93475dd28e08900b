"""Safe, unique tmux session names for projects.

tmux rewrites ``.`` and ``:`` in names, expands ``#{...}`` and even runs ``#(...)`` given to
``new-session -s`` (see ``tmux-facts.md`` section 5). A session name is therefore built only from
``[A-Za-z0-9_-]``: a readable slug of the project name plus the project id, which makes it unique.
The project name itself is stored untouched in the database.
"""

from __future__ import annotations

import re
import unicodedata

#: Longest slug kept from a project name; the id and attempt suffix come on top.
SLUG_MAX = 40
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


def slugify(name: str, max_length: int = SLUG_MAX) -> str:
    """Reduce ``name`` to ``[A-Za-z0-9_-]``: accents dropped, other runs become one ``-``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("-", ascii_name).strip("-_")
    slug = slug[:max_length].rstrip("-_")
    return slug or "project"


def session_name_for(project_id: int, name: str, attempt: int = 1) -> str:
    """The session name of ``attempt`` of project ``project_id``: ``<slug>-<id>[-r<attempt>]``.

    The id makes the name unique; the attempt suffix keeps a retry from colliding with a session
    of an earlier attempt that is still being cleaned up.
    """
    base = f"{slugify(name)}-{project_id}"
    return base if attempt <= 1 else f"{base}-r{attempt}"


def is_safe_session_name(name: str) -> bool:
    """True if tmux stores ``name`` exactly as given and ``=name`` finds it."""
    return bool(_SAFE_NAME.fullmatch(name))
