"""``slot_init``: the same constructor as the dataclass's own, frozen still, on every type it
is given to."""

from __future__ import annotations

import inspect
import pickle
from dataclasses import FrozenInstanceError, InitVar, dataclass, field, fields, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a11i.core.analysis import ResponseFacts, ToolCall, ToolResult
from a11i.core.dialects import ParsedRequest
from a11i.core.frozen import slot_init
from a11i.core.meter import CallPlan, Settlement
from a11i.core.pricing import Charge, ChargeLine
from a11i.sidecar.call import CallOrigin, CallRecord

SLOT_INIT_TYPES = [
    ResponseFacts,
    ToolCall,
    ParsedRequest,
    CallPlan,
    Settlement,
    Charge,
    ChargeLine,
    ToolResult,
    CallOrigin,
    CallRecord,
]


def _made(decorate: bool, *, kw_only: bool) -> type[Any]:
    """The same dataclass, with its generated ``__init__`` or with ``slot_init``'s."""

    @dataclass(frozen=True, slots=True, kw_only=kw_only)
    class Sample:
        first: int
        second: str = "two"
        third: list[int] = field(default_factory=list)
        fourth: int | None = None
        checked: bool = field(default=False, kw_only=True)

        def __post_init__(self) -> None:
            if self.first < 0:
                raise ValueError("first must not be negative")

    return slot_init(Sample) if decorate else Sample


@pytest.mark.parametrize("kw_only", [False, True], ids=["positional", "kw-only"])
def test_signature_is_the_dataclasses_own(kw_only: bool) -> None:
    generated, fast = _made(False, kw_only=kw_only), _made(True, kw_only=kw_only)
    assert str(inspect.signature(fast.__init__)) == str(inspect.signature(generated.__init__))


@given(
    first=st.integers(-3, 3),
    second=st.none() | st.text(max_size=3),
    third=st.none() | st.lists(st.integers(), max_size=2),
    fourth=st.none() | st.integers(),
    checked=st.none() | st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_builds_what_the_generated_init_builds(
    first: int,
    second: str | None,
    third: list[int] | None,
    fourth: int | None,
    checked: bool | None,
) -> None:
    """Any mix of given and defaulted arguments: the same fields, the same refusal."""
    given_kwargs = {"second": second, "third": third, "fourth": fourth, "checked": checked}
    kwargs = {key: value for key, value in given_kwargs.items() if value is not None}
    built: list[object] = []
    for decorate in (False, True):
        cls = _made(decorate, kw_only=False)
        try:
            built.append(tuple(getattr(cls(first, **kwargs), f.name) for f in fields(cls)))
        except ValueError as error:
            built.append(str(error))
    assert built[0] == built[1]


def test_a_default_factory_gives_each_object_its_own_value() -> None:
    cls = _made(True, kw_only=False)
    one, two = cls(1), cls(1)
    assert one.third == []
    assert one.third is not two.third
    assert cls(1, third=[5]).third == [5]


@pytest.mark.parametrize("cls", SLOT_INIT_TYPES, ids=lambda cls: cls.__name__)
def test_types_built_per_call_stay_frozen(cls: type[Any]) -> None:
    """Every type given ``slot_init``: its parameters are its fields, and it stays frozen,
    equal by value, replaceable and picklable."""
    # slot_init's constructor, not the one dataclasses generated.
    assert "_set_" + fields(cls)[0].name in cls.__init__.__code__.co_names
    parameters = inspect.signature(cls.__init__).parameters
    assert list(parameters)[1:] == [f.name for f in fields(cls)]
    values = {f.name: object() for f in fields(cls)}
    made = cls(**values)
    assert all(getattr(made, name) is value for name, value in values.items())
    with pytest.raises(FrozenInstanceError):
        made.__setattr__(fields(cls)[0].name, None)
    assert made == cls(**values)
    assert replace(made) == made


def test_pickles() -> None:
    origin = CallOrigin(started_ns=5, session="run-7")
    assert pickle.loads(pickle.dumps(origin)) == origin


def test_refuses_what_it_cannot_build() -> None:
    @dataclass(slots=True)
    class Mutable:
        value: int

    @dataclass(frozen=True)
    class Unslotted:
        value: int

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        value: int
        extra: InitVar[int] = 0

    @dataclass(frozen=True, slots=True)
    class NotInInit:
        value: int
        derived: int = field(default=0, init=False)

    for cls in (Mutable, Unslotted, WithInitVar, NotInInit):
        with pytest.raises(TypeError):
            slot_init(cls)
