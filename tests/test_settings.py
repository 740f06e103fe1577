"""Typed settings: schema and dataclasses agree; built from validated configs; strict keys;
strings from ``snakemake --config`` read as the declared type."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import typing

import pytest
import yaml

from matdisco.config import ConfigError, deep_update, validate_config
from matdisco.settings import (
    ClassifierLightGBMSettings,
    ClassifierSettings,
    GANSettings,
    RelaxSettings,
    Settings,
    SettingsBase,
    SettingsError,
    TemplateSettings,
    schema_mismatches,
)
from matdisco.settings._base import _resolve


@pytest.fixture(scope="module")
def schema(root):
    with open(root / "workflow/schemas/config.schema.yaml") as fh:
        return yaml.safe_load(fh)


def _read(path):
    with open(path) as fh:
        return yaml.safe_load(fh)


def _sections(cls, node, root, path=""):
    """(dotted path, dataclass, schema node) of every (nested) section, walking the schema."""
    yield path, cls, node
    hints = cls.field_types()
    for name, sub in node.get("properties", {}).items():
        sub = _resolve(sub, root)
        if "properties" in sub:
            child = hints[name]
            assert isinstance(child, type) and issubclass(child, SettingsBase), (path, name)
            yield from _sections(child, sub, root, f"{path}.{name}".lstrip("."))


def _schema_defaults(node, root):
    """The section as validate_config fills it from nothing but schema defaults."""
    out = {}
    for name, sub in node.get("properties", {}).items():
        sub = _resolve(sub, root)
        if "properties" in sub:
            out[name] = _schema_defaults(sub, root)
        else:
            out[name] = copy.deepcopy(sub["default"])
    return out


# -- (a) schema defaults == dataclass defaults ------------------------------------------------


def test_schema_and_dataclasses_agree(schema):
    assert schema_mismatches(Settings, schema) == []


def test_every_section_default_instance_equals_schema_defaults(schema):
    sections = list(_sections(Settings, schema, schema))

    def count(node):  # objects with named keys anywhere in the schema, counted independently
        if isinstance(node, dict):
            return ("properties" in node) + sum(count(v) for v in node.values())
        return sum(count(v) for v in node) if isinstance(node, list) else 0

    assert len(sections) == count(schema) == 43  # every one has its dataclass (top level too)
    assert {p for p, _, _ in sections} >= {
        "classifier.lightgbm",
        "gan.train",
        "screen.bandgap.vasp",
    }
    for path, cls, node in sections:
        assert cls.section == path
        expect = _schema_defaults(node, schema)
        got = cls().to_dict()
        assert got == expect, path
        # types too: a float field holds a float, an int field an int, a bool a bool
        for name, value in got.items():
            want = expect[name]
            if isinstance(want, bool) or isinstance(value, bool):
                assert type(value) is type(want), f"{path}.{name}"


def test_top_level_defaults_equal_validate_config_of_minimal_config(schema):
    minimal = {"run_name": "default", "target": {"elements": ["Mg", "Mn", "O"]}}
    minimal["data"] = {"source": "bundled"}
    assert Settings().to_dict() == validate_config(minimal, schema)


def test_mismatch_when_only_the_schema_changes(schema):
    """Changing one side only is caught (default, type, enum, added and removed key)."""
    mutated = copy.deepcopy(schema)
    lgb = mutated["properties"]["classifier"]["properties"]["lightgbm"]["properties"]
    lgb["n_estimators"]["default"] = 501
    mutated["properties"]["gan"]["properties"]["train"]["properties"]["lr"]["type"] = "integer"
    mutated["properties"]["relax"]["properties"]["backend"]["enum"].append("mace")
    mutated["properties"]["pool"]["properties"]["new_key"] = {"type": "integer", "default": 1}
    del mutated["properties"]["templates"]["properties"]["symprec"]
    mutated["properties"]["ehull"]["properties"]["thresholds"]["default"] = [0.2, 0.1]
    problems = "\n".join(schema_mismatches(Settings, mutated))
    assert (
        "classifier.lightgbm.n_estimators: default 150 in ClassifierLightGBMSettings, 501"
        in problems
    )
    assert (
        "gan.train.lr: type ['number'] in GANTrainSettings, ['integer'] in the schema" in problems
    )
    assert "relax.backend: allowed values" in problems and "mace" in problems
    assert "pool.new_key: in the schema, not in PoolSettings" in problems
    assert "templates.symprec: in TemplateSettings, not in the schema" in problems
    assert "ehull.thresholds: default [0.2, 0.08]" in problems
    assert len(problems.splitlines()) == 6


def test_mismatch_when_only_the_dataclass_changes(schema, monkeypatch):
    f = ClassifierLightGBMSettings.__dataclass_fields__["n_estimators"]
    monkeypatch.setattr(f, "default", 499)
    problems = schema_mismatches(Settings, schema)
    assert problems == [
        "classifier.lightgbm.n_estimators: default 499 in ClassifierLightGBMSettings, "
        "150 in the schema"
    ]
    # a bool must not pass for an int, nor an int for a bool
    monkeypatch.setattr(f, "default", 150)
    monkeypatch.setattr(ClassifierSettings.__dataclass_fields__["neighbour_features"], "default", 0)
    assert schema_mismatches(Settings, schema) == [
        "classifier.neighbour_features: default 0 in ClassifierSettings, False in the schema"
    ]


# -- (b) built from the validated default and test configs ------------------------------------


@pytest.mark.parametrize("overlay", [None, "config/test.yaml"])
def test_from_validated_config(root, schema, overlay):
    config = _read(root / "config/config.yaml")
    if overlay:
        deep_update(config, _read(root / overlay))
    validate_config(config, schema)
    settings = Settings.from_config(config)
    assert settings.to_dict() == config
    assert isinstance(settings.classifier.lightgbm, ClassifierLightGBMSettings)
    assert settings.target.elements == tuple(config["target"]["elements"])
    assert isinstance(settings.gan.train.lr, float)
    assert isinstance(settings.relax.timeout_s, float)  # 300 in YAML, a float field
    if overlay:
        assert settings.run_name == "test"
        assert settings.templates.top_k == 3
        assert settings.classifier.lightgbm.n_estimators == 60
        # keys the overlay leaves alone keep the default config's values
        assert settings.classifier.lightgbm.max_bin == 63
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.classifier.seed = 1  # type: ignore[misc]


def test_section_from_config_and_round_trip():
    t = TemplateSettings.from_config({"top_k": 3, "fallback": False})
    assert (t.top_k, t.fallback, t.max_templates) == (3, False, 100)
    assert TemplateSettings.from_config(t.to_dict()) == t
    assert TemplateSettings.from_config(None) == TemplateSettings()


def test_type_hints_resolve_for_every_section(schema):
    for _, cls, _ in _sections(Settings, schema, schema):
        hints = typing.get_type_hints(cls)
        assert set(cls.field_types()) <= set(hints)


# -- (c) unknown keys -------------------------------------------------------------------------


def test_unknown_key_is_named():
    with pytest.raises(SettingsError) as err:
        ClassifierSettings.from_config({"lightgbm": {"n_estimator": 5}, "sed": 1})
    msg = str(err.value)
    assert "classifier.lightgbm.n_estimator: unknown key" in msg
    assert "classifier.sed: unknown key (allowed keys here: label_threshold" in msg
    assert isinstance(err.value, ConfigError)


def test_unknown_top_level_section_is_named(root):
    config = _read(root / "config/config.yaml")
    config["classifer"] = {}
    with pytest.raises(SettingsError, match="classifer: unknown key"):
        Settings.from_config(config)


def test_wrong_types_are_named():
    with pytest.raises(SettingsError) as err:
        RelaxSettings.from_config(
            {"backend": "mace", "steps": True, "prescreen": {"enabled": "maybe"}}
        )
    msg = str(err.value)
    assert "relax.backend: 'mace' is not one of [chgnet, sevennet, gpaw, vasp, emt]" in msg
    assert "relax.steps: True is not an integer" in msg
    assert "relax.prescreen.enabled: 'maybe' is not a boolean" in msg


# -- (d) strings as Snakemake --config delivers them ------------------------------------------


def test_strings_are_read_as_declared_type_by_from_config():
    c = ClassifierSettings.from_config({"decision_threshold": "0.5", "neighbour_features": "true"})
    assert c.decision_threshold == 0.5 and c.neighbour_features is True
    g = GANSettings.from_config(
        {"train": {"epochs": "3", "lr": "1e-3"}, "data": {"max_sites": "null"}}
    )
    assert g.train.epochs == 3 and isinstance(g.train.epochs, int)
    assert g.train.lr == 1e-3 and g.data.max_sites is None
    r = RelaxSettings.from_config(
        {"vasp": {"command": "srun vasp_std"}, "chgnet": {"model": "0.2.0"}}
    )
    assert r.vasp.command == "srun vasp_std" and r.chgnet.model == "0.2.0"  # strings stay strings
    with pytest.raises(
        SettingsError, match=r"classifier.decision_threshold: 'abc' is not a number"
    ):
        ClassifierSettings.from_config({"decision_threshold": "abc"})
    with pytest.raises(SettingsError, match=r"gan.train.epochs: '3.5' is not an integer"):
        GANSettings.from_config({"train": {"epochs": "3.5"}})


def test_validate_config_reads_strings_as_declared_type(root, schema):
    config = _read(root / "config/config.yaml")
    # what `snakemake --config 'classifier={decision_threshold: 0.5}' 'gan={train: {epochs: 3}}'`
    # layers over the config file: YAML BaseLoader strings
    deep_update(
        config,
        {
            "classifier": {"decision_threshold": "0.5", "lightgbm": {"learning_rate": "0.1"}},
            "gan": {"train": {"epochs": "3"}, "data": {"slots": {"Mg": "4"}}},
            "ehull": {"thresholds": ["0.2", "0.1"]},
            "templates": {"fallback": "false", "max_e_above_hull": "null"},
            "screen": {"candidates": "null"},
            "relax": {"chgnet": {"model": "0.2.0"}, "gpaw": {"spinpol": "auto"}},
        },
    )
    validate_config(config, schema)
    assert config["classifier"]["decision_threshold"] == 0.5
    assert config["classifier"]["lightgbm"]["learning_rate"] == 0.1
    assert config["gan"]["train"]["epochs"] == 3 and isinstance(
        config["gan"]["train"]["epochs"], int
    )
    assert config["gan"]["data"]["slots"] == {"Mg": 4}
    assert config["ehull"]["thresholds"] == [0.2, 0.1]
    assert config["templates"]["fallback"] is False
    assert config["templates"]["max_e_above_hull"] is None
    assert config["screen"]["candidates"] is None
    assert config["relax"]["chgnet"]["model"] == "0.2.0"
    assert config["relax"]["gpaw"]["spinpol"] == "auto"
    settings = Settings.from_config(config)
    assert settings.gan.train.epochs == 3 and settings.templates.fallback is False


@pytest.mark.parametrize(
    ("overlay", "expect"),
    [
        (
            {"classifier": {"decision_threshold": "abc"}},
            "classifier.decision_threshold: cannot read",
        ),
        ({"gan": {"train": {"epochs": "3.5"}}}, "gan.train.epochs: cannot read the string '3.5'"),
        ({"relax": {"relax_cell": "maybe"}}, "relax.relax_cell: cannot read the string 'maybe'"),
        ({"ehull": {"thresholds": ["0.2", "x"]}}, "ehull.thresholds.1: cannot read"),
        ({"templates": {"fallback": "sometimes"}}, "templates.fallback: 'sometimes' is not valid"),
        # converted, then still checked against the range
        (
            {"classifier": {"decision_threshold": "1.5"}},
            "classifier.decision_threshold: 1.5 is not",
        ),
    ],
)
def test_unconvertible_string_is_named(root, schema, overlay, expect):
    config = deep_update(_read(root / "config/config.yaml"), overlay)
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    msg = str(err.value)
    assert expect in msg
    key = expect.split(":")[0]
    assert msg.count(key + ":") == 1, msg  # one message per key, not a second validator one


def test_snakemake_config_overrides_of_nested_values(root, snakemake_bin):
    """`--config section={key: value}` reaches the rules typed; a bad value stops the run."""
    base = [snakemake_bin, "-n", "--cores", "1", "--nolock"]
    ok = subprocess.run(
        [*base, "--config", "classifier={decision_threshold: 0.5}", "gan={train: {epochs: 3}}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-2000:]
    bad = subprocess.run(
        [*base, "--config", "classifier={decision_threshold: abc}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "classifier.decision_threshold: cannot read the string 'abc'" in out, out[-2000:]
    assert "Job stats" not in out
