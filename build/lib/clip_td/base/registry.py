"""Name -> constructor registries for the pluggable parts (timm's `_registry.py` idea).

    STUDENTS = Registry("student")

    @STUDENTS.register("vilt")
    def create_vilt(**kwargs): ...

    model = STUDENTS.create("vilt", **kwargs)
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, TypeVar

from clip_td.base.io import InputError

T = TypeVar("T", bound=Callable[..., Any])


class UnknownName(InputError, KeyError):
    """An unknown registry name: a user error (one line, exit 2) that is also a KeyError."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry:
    """A named table of callables; `get` on an unknown name lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: Dict[str, Callable[..., Any]] = {}

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            key = name or fn.__name__
            if key in self._table:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._table[key] = fn
            return fn

        return deco

    def get(self, name: str, key: Optional[str] = None) -> Callable[..., Any]:
        """The callable registered as `name`; `key` is the config key that named it (for the message)."""
        if name not in self._table:
            known = ", ".join(sorted(self._table)) or "(none registered)"
            where = f"{key}={name!r}: " if key else ""
            raise UnknownName(f"{where}unknown {self.kind} {name!r}; expected one of: {known}")
        return self._table[name]

    def create(self, name: str, *args: Any, key: Optional[str] = None, **kwargs: Any) -> Any:
        return self.get(name, key)(*args, **kwargs)

    def unregister(self, name: str) -> None:
        """Remove `name` (a plug-in or test registration that must not outlive its scope)."""
        self._table.pop(name, None)

    def names(self) -> List[str]:
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
