"""Config validation: every mistake is reported with its key before any job runs."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from matdisco.config import ConfigError, config_hash, validate_config


@pytest.fixture(scope="module")
def schema(root):
    with open(root / "workflow/schemas/config.schema.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def config(root):
    with open(root / "config/config.yaml") as fh:
        return yaml.safe_load(fh)


def test_default_and_test_configs_are_valid(config, schema, root):
    validate_config(config, schema)
    with open(root / "config/test.yaml") as fh:
        overlay = yaml.safe_load(fh)
    merged = copy.deepcopy(config)
    merged.update({k: v for k, v in overlay.items() if not isinstance(v, dict)})
    for k, v in overlay.items():
        if isinstance(v, dict):
            merged.setdefault(k, {})
            for k2, v2 in v.items():
                if isinstance(v2, dict):
                    merged[k].setdefault(k2, {}).update(v2)
                else:
                    merged[k][k2] = v2
    validate_config(merged, schema)


def test_defaults_are_filled(schema):
    cfg = validate_config(
        {"run_name": "x", "target": {"elements": ["Mg", "O"]}, "data": {"source": "bundled"}},
        schema,
    )
    assert cfg["data"]["dedupe"]["ltol"] == 0.2
    assert cfg["data"]["bundled"]["structures"].endswith(".h5")
    assert cfg["target"]["max_atoms"] == 20


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        (("data", "source"), "icsd", ["data.source", "bundled", "mp", "cif_dir"]),
        (("data", "dedupe", "ltol"), -1, ["data.dedupe.ltol", "> 0"]),
        (("target", "elements"), ["Mg", "Xx"], ["target.elements.1", "Xx"]),
        (("target", "max_atoms"), 1, ["target.max_atoms", ">= 2"]),
        (("run_name",), "bad name/..", ["run_name"]),
        (
            ("screen", "bandgap", "structure_embedding"),
            "megnet",
            ["screen.bandgap.structure_embedding", "chgnet"],
        ),
    ],
)
def test_bad_values_name_the_key(config, schema, path, value, expect):
    node = config
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    for word in expect:
        assert word in str(err.value)


def test_misspelt_key_is_named_with_allowed_keys(config, schema):
    config["data"]["dedupe"]["ltoll"] = 0.3
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    msg = str(err.value)
    assert "data.dedupe.ltoll: unknown key" in msg
    assert "ltol" in msg.split("allowed keys here:")[1]


def test_cross_checks(config, schema):
    config["data"]["source"] = "cif_dir"
    config["target"]["oxidation_states"] = {"Fe": [2, 3]}
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    assert "data.cif_dir.path" in str(err.value)
    assert "target.oxidation_states.Fe" in str(err.value)


def test_embeddings_need_the_elmd_table(config, schema):
    config["features"]["elmd_table"] = None
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    assert "screen.bandgap.embeddings" in str(err.value)  # the default gap model uses them
    assert "features.embeddings" in str(err.value)
    config["features"]["embeddings"] = []
    config["screen"]["bandgap"]["embeddings"] = []
    validate_config(config, schema)  # nothing asks for the tables: fine


def test_all_problems_reported_at_once(config, schema):
    config["data"]["source"] = "nope"
    config["typo_section"] = {}
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    assert "data.source" in str(err.value) and "typo_section: unknown key" in str(err.value)


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


@pytest.mark.parametrize(
    ("overlay", "key"),
    [
        ("data:\n  source: icsd\n", "data.source"),
        ("data:\n  dedupe:\n    ltol: -1\n", "data.dedupe.ltol"),
        ("run_nmae: oops\n", "run_nmae: unknown key"),
    ],
)
def test_snakemake_stops_before_any_job(root, tmp_path, snakemake_bin, overlay, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay)
    proc = subprocess.run(
        [snakemake_bin, "-n", "--cores", "1", "--nolock", "--configfile", str(bad)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert key in out, out[-2000:]
    assert "Job stats" not in out and "rule build_store" not in out


@pytest.mark.parametrize(
    ("path", "text", "value"),
    [
        (("classifier", "decision_threshold"), "0.5", 0.5),
        (("classifier", "decision_threshold"), "null", None),
        (("gan", "train", "epochs"), "3", 3),
        (("recommender", "n_quantile_samples"), "1e5", 100000),
        (("relax", "timeout_s"), "60", 60),
        (("relax", "relax_cell"), "False", False),
        (("pool", "write_cifs"), "yes", True),
        (("templates", "fallback"), "true", True),
        (("templates", "fallback"), "always", "always"),
        (("relax", "chgnet", "model"), "0.2.0", "0.2.0"),
        (("screen", "candidates"), "~", None),
        (("run_name",), "x1", "x1"),
    ],
)
def test_strings_read_as_the_schema_type(config, schema, path, text, value):
    """`snakemake --config 'sec={key: v}'` gives strings (YAML BaseLoader); they are typed."""
    node = config
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = text
    validate_config(config, schema)
    got = config
    for p in path:
        got = got[p]
    assert got == value and type(got) is type(value)


def test_unreadable_string_names_the_key(config, schema):
    config["classifier"]["decision_threshold"] = "abc"
    config["gan"]["train"] = {"epochs": "three"}
    with pytest.raises(ConfigError) as err:
        validate_config(config, schema)
    msg = str(err.value)
    assert "classifier.decision_threshold: cannot read the string 'abc' as number or null" in msg
    assert "gan.train.epochs: cannot read the string 'three' as integer" in msg
