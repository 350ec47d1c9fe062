"""Hostile configs: property-based fuzzing of the config loader finds no failure but a clean ConfigError."""

import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raykd.config import ConfigError, StudyConfig
from raykd.validate import load_study_config, parse_study_config

ROOT = Path(__file__).resolve().parents[2]
BASES = {
    name: yaml.safe_load((ROOT / "studies" / "configs" / f"{name}.yaml").read_text())
    for name in ("smoke", "default", "bible_t5_to_3l_en_es")
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["forward", "random", "teacher", "-1", "1e309", "", "none"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)


def paths(node, prefix=()):
    """Every key path of a nested mapping (lists included by index)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


def set_path(node, path, value):
    if not path:
        return value
    target = node
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return node


def check(data) -> None:
    """The loader either returns a StudyConfig or raises ConfigError with a message; nothing else escapes."""
    try:
        config = parse_study_config(data)  # the schema, then registries and files (what the entry script runs)
    except ConfigError as error:
        assert str(error).strip(), "an empty error message"
        return
    assert isinstance(config, StudyConfig)
    for seed in config.sweep.seeds:
        assert seed >= 0
    assert all(w >= 0 and math.isfinite(w) for w in config.sweep.weights)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), data=st.data(), value=values)
def test_any_single_field_replaced_by_anything(base, data, value):
    config = copy.deepcopy(BASES[base])
    path = data.draw(st.sampled_from(list(paths(config))))
    check(set_path(config, path, value))


@settings(max_examples=150, deadline=None)
@given(base=st.sampled_from(sorted(BASES)), key=st.text(max_size=10), value=values)
def test_unknown_keys_anywhere_are_refused(base, key, value):
    config = copy.deepcopy(BASES[base])
    mappings = [p for p in paths(config) if isinstance(_get(config, p), dict)]
    for path in mappings[:6]:
        candidate = copy.deepcopy(config)
        target = _get(candidate, path)
        if key in target:
            continue
        target[key] = value
        check(candidate)


@settings(max_examples=100, deadline=None)
@given(data=values)
def test_arbitrary_documents(data):
    check(data)


KNOWN_KEYS = sorted({".".join(str(p) for p in path) for path in paths(BASES["smoke"]) if path})


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(
        st.text(max_size=20),
        st.sampled_from(KNOWN_KEYS),
        st.tuples(st.sampled_from(KNOWN_KEYS), st.text(max_size=5)).map(".".join),
    ),
    raw=st.one_of(
        st.text(max_size=20),
        st.sampled_from(["[", "{a: 1}", "[0, -1]", "1e400", "null", "!!python/object:os.system ls"]),
    ),
)
def test_arbitrary_command_line_overrides(key, raw):
    try:
        config = load_study_config(ROOT / "studies" / "configs" / "smoke.yaml", [f"{key}={raw}"])
    except ConfigError as error:
        assert str(error).strip()
        return
    assert isinstance(config, StudyConfig)


def _get(node, path):
    for part in path:
        node = node[part]
    return node
