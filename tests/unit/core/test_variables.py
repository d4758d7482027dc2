"""One reader of the environment for every component: spellings, defaults and refusals."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import pytest

from a11i.core import variables as var
from a11i.core.errors import ConfigurationError, SettingsError


class Colour(StrEnum):
    RED = "Red"
    GREEN = "Green"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("on", True), ("ON", True), ("true", True), ("True", True), ("yes", True), ("1", True),
     (" on ", True), ("off", False), ("false", False), ("FALSE", False), ("no", False),
     ("0", False)],
)  # fmt: skip
def test_a_switch_is_spelled_the_same_everywhere(value: str, expected: bool) -> None:
    assert var.flag({"X": value}, "X", default=not expected) is expected
    assert var.parse_flag(value, "X") is expected


@pytest.mark.parametrize("default", [True, False])
def test_an_unset_or_blank_switch_is_its_default(default: bool) -> None:
    assert var.flag({}, "X", default=default) is default
    assert var.flag({"X": "  "}, "X", default=default) is default


def test_yaml_booleans_are_switches() -> None:
    assert var.parse_flag(True, "enabled") is True
    assert var.parse_flag(False, "enabled") is False


@pytest.mark.parametrize("value", ["maybe", "2", "enable", "onn"])
def test_anything_else_is_refused_by_name(value: str) -> None:
    with pytest.raises(SettingsError, match=f"X must be on or off .*not '{value}'"):
        var.flag({"X": value}, "X", default=False)


def test_settings_errors_are_configuration_errors_with_exit_code_2() -> None:
    with pytest.raises(ConfigurationError) as raised:
        var.whole({"N": "many"}, "N", 1)
    assert raised.value.exit_code == 2
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "expected"), [("", 7), ("1", 1), ("  42 ", 42)], ids=["default", "one", "blanks"]
)
def test_whole(raw: str, expected: int) -> None:
    assert var.whole({"N": raw}, "N", 7) == expected


@pytest.mark.parametrize(
    ("raw", "kwargs", "message"),
    [
        ("4.5", {}, "N must be a whole number, not '4.5'"),
        ("0", {}, "N must be positive, not 0"),
        ("2", {"minimum": 3}, "N must be at least 3, not 2"),
        ("9", {"maximum": 8}, "N must be at most 8, not 9"),
    ],
    ids=["fraction", "zero", "minimum", "maximum"],
)
def test_whole_refuses(raw: str, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        var.whole({"N": raw}, "N", 7, **kwargs)


@pytest.mark.parametrize("raw", ["0", "65536", "eighty", "-1", "80.0"])
def test_port_refuses(raw: str) -> None:
    with pytest.raises(SettingsError, match=rf"P must be a TCP port \(1-65535\), not '{raw}'"):
        var.port({"P": raw}, "P", 80)


def test_port() -> None:
    assert var.port({}, "P", 80) == 80
    assert var.port({"P": "65535"}, "P", 80) == 65535


@pytest.mark.parametrize("raw", ["0", "-2", "soon", "nan", "inf", "3601"])
def test_seconds_refuses(raw: str) -> None:
    with pytest.raises(SettingsError, match="S must be a positive number of seconds up to 3600"):
        var.seconds({"S": raw}, "S", 1.0, maximum=3600)


def test_seconds_and_milliseconds() -> None:
    assert var.seconds({}, "S", 2.5) == 2.5
    assert var.seconds({"S": "0.25"}, "S", 2.5) == 0.25
    assert var.milliseconds({}, "M", 5000) == 5.0
    assert var.milliseconds({"M": "250"}, "M", 5000) == 0.25
    with pytest.raises(SettingsError, match="M must be a positive number of milliseconds"):
        var.milliseconds({"M": "soon"}, "M", 5000)


def test_money_is_exact_and_non_negative() -> None:
    assert var.money("0.10", "USD") == Decimal("0.10")
    assert var.money(" 25 ", "USD") == Decimal(25)
    for raw in ("-1", "NaN", "Infinity"):
        with pytest.raises(SettingsError, match="non-negative amount of USD"):
            var.money(raw, "USD")
    with pytest.raises(SettingsError, match=r"decimal amount of USD such as 25\.00"):
        var.money("ten", "USD")


def test_percent() -> None:
    assert var.percent({}, "P", Decimal(75)) == Decimal(75)
    assert var.percent({"P": "90.5"}, "P", Decimal(75)) == Decimal("90.5")
    with pytest.raises(SettingsError, match=r"percentage of the limit \(0-100\)"):
        var.percent({"P": "101"}, "P", Decimal(75))


def test_choice_and_one_of_ignore_case_and_say_what_is_allowed() -> None:
    assert var.choice({"C": "green"}, "C", Colour, Colour.RED) is Colour.GREEN
    assert var.choice({}, "C", Colour, Colour.RED) is Colour.RED
    with pytest.raises(SettingsError, match=r"C must be one of Red \| Green, not 'blue'"):
        var.choice({"C": "blue"}, "C", Colour, Colour.RED)
    assert var.one_of({"L": "debug"}, "L", ("DEBUG", "INFO"), "INFO") == "DEBUG"
    with pytest.raises(SettingsError, match="L must be one of DEBUG, INFO, not 'loud'"):
        var.one_of({"L": "loud"}, "L", ("DEBUG", "INFO"), "INFO")


def test_url() -> None:
    assert var.url({}, "U", "https://api.openai.com") == "https://api.openai.com"
    assert var.url({"U": "unix:///run/redis.sock"}, "U", "", schemes=("redis", "unix"))
    with pytest.raises(
        SettingsError, match="U must be an http:// or https:// URL such as https://x"
    ):
        var.url({"U": "x.example"}, "U", "https://x")
    with pytest.raises(SettingsError, match="U must be a redis:// URL, not 'http://r'"):
        var.url({"U": "http://r"}, "U", "", schemes=("redis",))
    with pytest.raises(SettingsError, match="U must be a redis://, rediss:// or unix:// URL"):
        var.url({"U": "r:6379"}, "U", "", schemes=("redis", "rediss", "unix"))


def test_names_drop_blanks() -> None:
    assert var.names({"N": " a, ,b ,"}, "N") == ("a", "b")
    assert var.names({}, "N") == ()
