"""One generic registry: names to objects, for every kind of plug-in mribench has.

Encoders, SSL recipes, dataset importers, input spaces, metrics, target kinds and protocols are
each a :class:`Registry`. An entry is either the object itself or a lazy ``"module:object"``
reference, imported on first use (so listing names never imports torch models, and a module can
be named by a registry without the registry importing it: no import circles). A registry may
also read an entry-point group of the installed distributions (``mribench.encoders``: the
baselines are declared there, in ``pyproject.toml``, exactly as a third-party package declares
its encoders). After :meth:`Registry.freeze` nothing more can be registered.

After lm-evaluation-harness's ``lm_eval.api.registry`` (one dict per kind, a decorator and a
getter) and MTEB's lazy model registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from bench.errors import MribenchError

T = TypeVar("T")


def resolve_reference(ref: str) -> Any:
    """The object a ``"package.module:attribute.path"`` reference names."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise MribenchError(f"'{ref}' is not a 'module:object' reference")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Mapping[str, T], Generic[T]):
    """Names to objects of one kind (``what``), in registration order.

    ``group`` names an entry-point group read once, on the first lookup of a name, and after every
    name registered in code (a distribution cannot take a built-in name). ``on_load`` is called
    with (name, object) the first time an entry is resolved.
    """

    def __init__(self, what: str, group: str | None = None,
                 on_load: Callable[[str, Any], Any] | None = None):
        self.what = what
        self.group = group
        self._entries: dict[str, Any] = {}      # name -> object, or "module:object" until resolved
        self._lazy: set[str] = set()
        self._frozen = False
        self._entry_points_read = group is None
        self._on_load = on_load

    # -- registration --------------------------------------------------------------------------
    def register(self, name: str, obj: Any = None):
        """``register(name, obj)``, ``register(name, "module:object")``, or ``@register(name)``."""
        if obj is None:
            def decorate(target):
                self._add(name, target)
                return target
            return decorate
        self._add(name, obj)
        return obj

    def _add(self, name: str, obj: Any) -> None:
        if self._frozen:
            raise MribenchError(f"the {self.what} registry is frozen; cannot register '{name}'")
        if not isinstance(name, str) or not name:
            raise MribenchError(f"a {self.what} needs a non-empty name, got {name!r}")
        existing = self._entries.get(name)
        if name in self._entries and existing is not obj and not (isinstance(obj, str) and existing == obj):
            raise MribenchError(f"{self.what} name '{name}' is already registered by {self._entries[name]!r}; "
                                f"cannot register {obj!r}")
        self._entries[name] = obj
        if isinstance(obj, str):
            self._lazy.add(name)

    def unregister(self, name: str) -> None:
        """Take ``name`` out (a test's temporary entry); refused once frozen."""
        if self._frozen:
            raise MribenchError(f"the {self.what} registry is frozen; cannot remove '{name}'")
        self._entries.pop(name, None)
        self._lazy.discard(name)

    def freeze(self) -> "Registry[T]":
        """No more registrations (entry points are read first, so they are in)."""
        self._read_entry_points()
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            if ep.name not in self._entries:
                self._entries[ep.name] = ep.value
                self._lazy.add(ep.name)

    # -- lookup --------------------------------------------------------------------------------
    def get(self, name: str, default: Any = None) -> T | None:
        return self[name] if name in self else default

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            self._read_entry_points()
        if name not in self._entries:
            raise KeyError(name)
        if name in self._lazy:
            obj = resolve_reference(self._entries[name])
            self._entries[name] = obj
            self._lazy.discard(name)
            if self._on_load is not None:
                self._on_load(name, obj)
        return self._entries[name]

    def lookup(self, name: str) -> T:
        """``self[name]``, or a one-line error listing the known names."""
        try:
            return self[name]
        except KeyError:
            raise MribenchError(f"unknown {self.what} '{name}'; choose from {', '.join(self)}") from None

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._read_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._read_entry_points()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._read_entry_points()
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self)

    def reference(self, name: str) -> str | None:
        """The ``"module:object"`` an entry was declared with while it is unresolved, else None."""
        return self._entries[name] if name in self._lazy else None

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"
