"""Lazy package attributes (PEP 562), shared by the packages that keep their import light."""
from __future__ import annotations

import importlib


def attributes(package, names, public):
    """(``__getattr__``, ``__dir__``) for ``package`` (its module globals).

    ``names`` maps a public name to the submodule defining it; any other name is looked up as a
    submodule. A loaded value is stored in the package, so each is imported once.
    """
    name_of = package["__name__"]

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", name_of), name)
        elif name.startswith("__"):
            raise AttributeError(f"module {name_of!r} has no attribute {name!r}")
        else:
            try:
                value = importlib.import_module(f".{name}", name_of)
            except ModuleNotFoundError as exc:
                if exc.name != f"{name_of}.{name}":
                    raise
                raise AttributeError(f"module {name_of!r} has no attribute {name!r}") from None
        package[name] = value
        return value

    def __dir__():
        return sorted(set(package) | set(public))

    return __getattr__, __dir__
