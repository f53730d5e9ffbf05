"""The one registry of hashing methods: name -> settings -> method class.

Why: training, evaluation, export, the reproduction harness and face search all need "the
method called X"; each used to keep its own table. A method package registers its
settings class (common.methods.settings) once, as an entry point of the group
``face_hashing.methods`` in setup.cfg::

    [options.entry_points]
    face_hashing.methods =
        dcbh = dcbh_tf.settings:DCBHSettings

and everything else finds it here. Entry points are the packaging standard for plug-ins:
a method may live in another installed package without any change to this one. Looking a
method up imports only its settings module (TensorFlow-free, so the command line checks
its flags first); :func:`method_class` imports the TensorFlow side on demand.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata
from typing import Any

from common.errors import ProjectError
from common.methods.settings import MethodSettings

GROUP = "face_hashing.methods"


class UnknownMethodError(ProjectError, ValueError):
    """No registered method has that name."""


@functools.lru_cache(maxsize=1)
def _registered() -> dict[str, type[MethodSettings]]:
    found = {}
    for entry in metadata.entry_points(group=GROUP):
        settings = entry.load()
        if not (isinstance(settings, type) and issubclass(settings, MethodSettings)):
            raise TypeError(f"entry point {entry.name} = {entry.value} of {GROUP} is not a "
                            "MethodSettings class")
        if settings.name != entry.name:
            raise TypeError(f"entry point {entry.name} names settings of method "
                            f"{settings.name!r}")
        found[entry.name] = settings
    if not found:
        raise UnknownMethodError(f"no hashing method is registered (entry point group {GROUP}); "
                                 "is the package installed? Run ./run.sh setup")
    return dict(sorted(found.items(), key=lambda item: (item[1].table_order, item[0])))


def method_names() -> tuple[str, ...]:
    """Every registered method, in table order (the paper's method first)."""
    return tuple(_registered())


def settings_class(name: str) -> type[MethodSettings]:
    """The settings class of method ``name`` (no TensorFlow import).

    Raises:
        UnknownMethodError: no method of that name is registered.
    """
    registered = _registered()
    if name not in registered:
        raise UnknownMethodError(f"unknown method {name!r}; registered: "
                                 f"{', '.join(registered)}")
    return registered[name]


def method_class(name: str) -> type:
    """The :class:`common.methods.base.HashingMethod` subclass of method ``name``."""
    module, _, cls = settings_class(name).method_class.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_method(name: str, **settings: Any):
    """Method ``name`` with ``settings`` (the others at their defaults)."""
    return method_class(name)(**settings)
