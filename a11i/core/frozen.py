"""``slot_init``: a cheaper ``__init__`` for the frozen, slotted dataclasses built on every call.

A frozen dataclass's generated ``__init__`` stores each field with ``object.__setattr__(self,
"name", value)``: an attribute lookup and a search of the type for the name, per field, per
object. A metered call builds a dozen such objects (its parsed request, plan, charge,
settlement, record), 60-odd fields, and that lookup was a good part of their cost. The
``__init__`` written here calls each slot's own descriptor instead (what the name would have
found), with the same signature, defaults and ``__post_init__``; everything else the dataclass
generated stays: assigning a field still raises ``FrozenInstanceError``, equality, hashing,
``repr``, ``replace`` and pickling are unchanged.

Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import MemberDescriptorType
from typing import Any, Final, TypeVar

T = TypeVar("T", bound=type[Any])


class _Factory:
    """The default of a parameter whose field has a ``default_factory`` (as ``dataclasses``
    shows it: ``<factory>``): the factory is called when the caller passed nothing."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY: Final = _Factory()


def slot_init(cls: T) -> T:
    """Replaces the ``__init__`` of a frozen dataclass with slots (``frozen=True,
    slots=True``, fields all in ``__init__``, no ``InitVar``) by one that stores each field
    through its slot's descriptor. Raises ``TypeError`` for any other class."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__} is not a frozen dataclass with slots")
    generated = list(inspect.signature(cls.__init__).parameters)[1:]
    if sorted(generated) != sorted(field.name for field in dataclasses.fields(cls)):
        # An InitVar, or a field left out of __init__: not a constructor this one reproduces.
        raise TypeError(f"{cls.__qualname__}.__init__ takes other arguments than its fields")
    namespace: dict[str, object] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    lines: list[str] = []
    for field in dataclasses.fields(cls):
        name = field.name
        slot = next(klass.__dict__[name] for klass in cls.__mro__ if name in klass.__dict__)
        if not isinstance(slot, MemberDescriptorType):
            raise TypeError(f"{cls.__qualname__}.{name} is not a slot")
        namespace[f"_set_{name}"] = slot.__set__
        value = name
        parameter = name
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            parameter = f"{name}=_default_{name}"
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            parameter = f"{name}=_FACTORY"
            value = f"_factory_{name}() if {name} is _FACTORY else {name}"
        (keyword if field.kw_only else positional).append(parameter)
        lines.append(f"    _set_{name}(self, {value})")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    # As dataclasses does it: the source is built from the fields' names only, never values.
    exec(f"def __init__({signature}) -> None:\n" + "\n".join(lines or ["    pass"]), namespace)
    init: Any = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init
    return cls
