"""Image-search backends behind one interface (:class:`base.SearchBackend`); see ``data_tools.search``.

``BACKENDS`` lists them in ``--source`` order: the default source is the first that needs no key. A new backend
(Brave, SerpApi ...) is one module with a ``SearchBackend`` subclass and one line here.
"""

from __future__ import annotations

from data_tools.search_backends.base import SearchBackend
from data_tools.search_backends.commons import CommonsBackend
from data_tools.search_backends.google import SearchClient
from data_tools.search_backends.openverse import OpenverseBackend

BACKENDS: dict[str, type[SearchBackend]] = {"openverse": OpenverseBackend, "commons": CommonsBackend,
                                            "google": SearchClient}
DEFAULT_SOURCE = next(name for name, cls in BACKENDS.items() if not cls.needs_key)


def make_backend(name: str, **kwargs) -> SearchBackend:
    """The backend ``name`` with its credentials from the environment (never from arguments)."""
    cls = BACKENDS.get(name)
    if cls is None:
        from ws_dan.common.io import InputError

        raise InputError(f"--source {name!r}: expected one of {', '.join(BACKENDS)}")
    if hasattr(cls, "from_env"):
        return cls.from_env(**kwargs)
    return cls(**kwargs)
