import pytest

from raykd.registry import Registry


def test_register_get_and_meta():
    reg = Registry("widget")

    @reg.register("a", fast=True)
    def a():
        return 1

    reg.add("b", lambda: 2)
    assert reg.get("a") is a and reg.get("b")() == 2
    assert reg.meta("a") == {"fast": True} and reg.meta("b") == {}
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2 and "a" in reg


def test_miss_lists_registered_names():
    reg = Registry("widget")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    with pytest.raises(ValueError, match=r"unknown widget 'gamma'; registered: alpha, beta"):
        reg.get("gamma")
    with pytest.raises(ValueError, match="unknown widget"):
        reg.meta("gamma")


def test_duplicate_registration_refused():
    reg = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)


def test_unhashable_names_get_the_same_clear_error():
    from raykd.families import FAMILIES

    with pytest.raises(ValueError, match=r"unknown model family \[\]; registered: bart"):
        FAMILIES.get([])
    assert [] not in FAMILIES
