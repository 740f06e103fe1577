"""Band-gap surrogate, HSE-level mapping and the DFT input paths."""

from __future__ import annotations

import numpy as np
import pytest

from matdisco.screen import bandgap as B
from matdisco.settings import ScreenBandgapSettings


@pytest.fixture(scope="module")
def table(root):
    from matdisco.features import ElementTable

    return ElementTable.from_files(
        root / "resources/bundled/magpie_elements.csv",
        root / "resources/bundled/elmd_element_properties.json.gz",
    )


@pytest.fixture(scope="module")
def embeddings(root):
    """The default gap embedding tables (megnet16 + oliynyk) of the bundled ElMD file."""
    from matdisco.features import ElementEmbeddings

    return ElementEmbeddings.from_file(
        root / "resources/bundled/elmd_element_properties.json.gz",
        ScreenBandgapSettings().embeddings,
    )


@pytest.fixture(scope="module")
def oxides(root):
    """~1500 bundled entries of a few oxide families (fast to train on, gaps 0-8 eV)."""
    from matdisco.store import read_entries, read_structure_arrays

    path = root / "resources/bundled/mp2018_structures.h5"
    df = read_entries(path, ["formula", "chemsys", "band_gap"])
    fams = ("Mg", "Mn", "Ti", "Zn", "Fe", "Ca", "Li", "Al", "Si", "Na")
    keep = df["chemsys"].map(
        lambda c: (
            "O" in c.split("-") and len(set(c.split("-")) & set(fams)) >= 1 and c.count("-") <= 2
        )
    )
    idx = np.flatnonzero(keep.to_numpy() & np.isfinite(df["band_gap"].to_numpy()))[:1500]
    return df.iloc[idx].reset_index(drop=True), read_structure_arrays(path, idx)


@pytest.fixture(scope="module")
def oxide_embedding(root, oxides):
    """The bundled CHGNet embedding rows of the ``oxides`` structures (found by hash)."""
    from matdisco.screen.gap_embedding import read_embedding_file, structure_keys

    _, keys, emb = read_embedding_file(root / "resources/bundled/chgnet_embeddings_mp2018.h5")
    where = {k: i for i, k in enumerate(keys)}
    return emb.X[[where[k] for k in structure_keys(oxides[1])]]


def test_structure_features_mgo(mgo, table):
    from matdisco.store import StructureArrays

    f = B.structure_features(StructureArrays.from_structures([mgo]), table)[0]
    names = dict(zip(B.STRUCTURE_FEATURES, f, strict=True))
    assert names["struct_volume_per_atom"] == pytest.approx(4.21**3 / 8, rel=1e-6)
    assert names["struct_density"] == pytest.approx(3.585, abs=0.02)  # rock-salt MgO, g/cm^3
    assert 0.1 < names["struct_packing_fraction"] < 1.0
    assert names["struct_lattice_ratio_min"] == pytest.approx(1.0)


def test_hse_mapping():
    m = {"slope": 1.348, "intercept": 0.913}
    out = B.hse_estimate(np.array([0.0, 1.0, np.nan, 2.0]), m)
    assert out[0] == 0.0 and np.isnan(out[2])
    assert out[1] == pytest.approx(2.261)
    assert out[3] == pytest.approx(3.609)
    assert B.SETYAWAN_2011["source"].startswith("Setyawan")
    typed = ScreenBandgapSettings().hse_mapping
    assert typed.source.startswith("Setyawan")
    assert B.hse_estimate(np.array([1.0]), typed)[0] == pytest.approx(2.261)


def test_surrogate_learns_and_reports(oxides, oxide_embedding, table, embeddings, mgo, tmp_path):
    df, arrays = oxides
    settings = ScreenBandgapSettings.from_config(
        {
            "n_members": 2,
            "evaluate_random_split": True,
            "lightgbm": {"n_estimators": 60, "num_leaves": 15, "learning_rate": 0.1},
            "test_fraction": 0.2,
        }
    )
    model, metrics, held = B.train_gap_surrogate(
        df["formula"].tolist(),
        df["band_gap"].to_numpy(),
        arrays,
        table,
        settings=settings,
        embeddings=embeddings,
        structure_embedding=oxide_embedding,
    )
    assert model.settings == settings.to_dict() and len(model.members) == 2
    # the default model: site statistics, the CHGNet structure embedding and the element
    # embedding statistics, named in gap_model
    n_emb = sum(n.startswith(("megnet16_", "oliynyk_")) for n in model.feature_names)
    assert n_emb == 2 * (16 + 44), n_emb  # minimum and maximum of every dimension
    assert sum(n.startswith("chgnet_") for n in model.feature_names) == 128
    assert metrics["gap_model"] == model.label == "structure+chgnet+megnet16+oliynyk"
    assert metrics["structure_embedding"] == "chgnet" and "CHGNet" in metrics["features"]
    assert metrics["embeddings"]["tables"] == ["megnet16", "oliynyk"]
    assert metrics["n_test"] == len(held) > 50
    assert "grouped" in metrics["test_split"]
    assert (
        set(held["formula"]) & set(np.asarray(df["formula"])[~df["formula"].isin(held["formula"])])
        == set()
    )
    # much better than predicting the mean gap for everything (able to fail)
    baseline = float(np.mean(np.abs(held["gap_pbe"] - df["band_gap"].mean())))
    assert metrics["test_grouped"]["mae"] < 0.8 * baseline
    assert metrics["test_random_rows"]["mae"] > 0
    unc = metrics["uncertainty"]
    assert 0 <= unc["coverage_1sigma_raw"] <= unc["coverage_2sigma_raw"] <= 1
    assert unc["spread_scale"] > 0
    # one protocol: the same ensemble scores both splits, beside the baselines, with intervals
    for split in ("test_grouped", "test_random_rows"):
        iv = metrics[split]["intervals"]
        for what in ("mae", "mae_window"):
            for name in ("model", "composition_prior", "training_median"):
                v = iv[what][name]
                assert v["lo"] <= v["value"] <= v["hi"], (split, what, name, v)
        assert iv["mae"]["model"]["value"] == pytest.approx(metrics[split]["mae"], abs=1e-4)
        assert iv["mae"]["model"]["value"] < iv["mae"]["training_median"]["value"]
        assert metrics[split]["n_window"] == iv["mae_window"]["model"]["n"] > 0
    # no training row in either test split; the random rows may share formulas with training
    assert metrics["n_train"] + metrics["n_test"] + metrics["test_random_rows"]["n"] == len(df)
    assert B.coverage(
        (held["gap_pbe_ml"] - held["gap_pbe"]).to_numpy(), held["gap_pbe_ml_std"].to_numpy()
    ) == pytest.approx(B.ONE_SIGMA, abs=0.02)  # rescaled spread covers ~68% where it was fit

    from matdisco.store import StructureArrays

    pred = B.predict_gaps(model, ["MgO", "Xx2O"], StructureArrays.from_structures([mgo, mgo]))
    assert list(pred.columns) == [
        "gap_pbe_ml",
        "gap_pbe_ml_std",
        "p_metal_ml",
        "gap_hse_est",
        "gap_hse_est_std",
        "gap_model",
    ]
    # the default model; no number, no name
    assert pred["gap_model"].tolist() == ["structure+chgnet+megnet16+oliynyk", ""]
    assert pred["gap_pbe_ml"].iloc[0] > 2.0  # MgO is a wide-gap insulator (MP PBE ~4.4 eV)
    assert pred["gap_hse_est"].iloc[0] > pred["gap_pbe_ml"].iloc[0]
    assert np.isnan(pred["gap_pbe_ml"].iloc[1])  # unknown element: not featurisable, no number
    assert model.spread_scale == pytest.approx(unc["spread_scale"], abs=1e-4)

    from matdisco.screen.plots import plot_bandgap_parity

    plot_bandgap_parity(tmp_path / "parity.png", held, metrics)  # title with interval + baseline
    assert (tmp_path / "parity.png").read_bytes()[:4] == b"\x89PNG"


def test_vasp_hse_inputs(tmp_path, mgo):
    d = B.write_vasp_hse_inputs(mgo, tmp_path / "c1")
    names = {p.name for p in d.iterdir()}
    assert {"INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"} <= names and "POTCAR" not in names
    incar = (d / "INCAR").read_text()
    assert "LHFCALC = True" in incar and "HFSCREEN = 0.2" in incar
    assert np.isnan(B.read_vasp_gap(d))


@pytest.mark.slow
def test_gpaw_pbe_gap_si():
    pytest.importorskip("gpaw")
    from pymatgen.core import Lattice, Structure

    si = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]
    ).get_primitive_structure()
    gap = B.gpaw_pbe_gap(si, {"ecut": 200, "kpts": [2, 2, 2]})
    assert 0.2 < gap < 1.2  # PBE Si (indirect) ~0.6 eV; coarse settings


def test_parity_plot_written(tmp_path):
    import pandas as pd

    from matdisco.screen.plots import plot_bandgap_parity

    held = pd.DataFrame(
        {
            "gap_pbe": [0.0, 1.0, 3.0],
            "gap_pbe_ml": [0.1, 1.2, 2.7],
            "gap_pbe_ml_std": [0.1, 0.2, 0.3],
        }
    )
    out = tmp_path / "parity.png"
    plot_bandgap_parity(out, held, {"test_grouped": {"mae": 0.2, "n": 3}})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spread_scale_gives_68_percent_coverage_on_gaussian_errors():
    rng = np.random.default_rng(3)
    n = 8000
    std = rng.uniform(0.05, 1.0, n)  # the ensemble's spread
    err = rng.normal(0.0, 2.5 * std)  # true errors 2.5x wider than the spread says
    raw = B.coverage(err, std)
    assert raw == pytest.approx(0.32, abs=0.03)  # P(|z| < 0.4) for z ~ N(0, 1)
    a = B.fit_spread_scale(err[: n // 2], std[: n // 2])
    assert a == pytest.approx(2.5, rel=0.05)
    assert B.coverage(err[n // 2 :], std[n // 2 :], a) == pytest.approx(B.ONE_SIGMA, abs=0.02)
    groups = np.arange(n) // 4
    assert B.crossfit_coverage(err, std, groups, seed=0) == pytest.approx(B.ONE_SIGMA, abs=0.02)
    # zero spread with non-zero errors cannot be scaled to the target
    with pytest.raises(ValueError, match="zero spread"):
        B.fit_spread_scale(np.ones(10), np.zeros(10))


def test_composition_prior_baseline():
    tf = np.array(["MgO", "MgO", "Mg2O2x", "ZnO", "Fe"])
    ts = np.array(["Mg-O", "Mg-O", "Mg-O", "O-Zn", "Fe"])
    tg = np.array([4.0, 5.0, 3.0, 1.0, 0.0])
    out = B.composition_prior(
        tf, ts, tg, np.array(["MgO", "MgO2", "NaCl"]), np.array(["Mg-O", "Mg-O", "Cl-Na"])
    )
    assert out.tolist() == [4.5, 4.0, 3.0]  # same formula; same system; training median


# --------------------------------------------------------------------------------------
# structure-aware model: site-environment features, model switch
# --------------------------------------------------------------------------------------


def _cell(sg: str, a: float, species: list[str], coords: list[list[float]]):
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(sg, Lattice.cubic(a), species, coords)


def test_site_features_known_cells(table, mgo):
    from matdisco.screen import gap_structure as G
    from matdisco.store import StructureArrays

    nacl = _cell("Fm-3m", 5.64, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cu = _cell("Fm-3m", 3.61, ["Cu"], [[0, 0, 0]])
    zns = _cell("F-43m", 5.41, ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    X = G.site_environment_features(StructureArrays.from_structures([nacl, cu, zns, mgo]), table)
    assert X.shape == (4, len(G.site_feature_names()))
    f = [dict(zip(G.site_feature_names(), row, strict=True)) for row in X]
    # rock salt: every site 6-coordinated by the other element at a/2
    for rs, a in ((f[0], 5.64), (f[3], 4.21)):
        assert rs["site_cn_shell_min"] == rs["site_cn_shell_max"] == 6
        assert rs["site_anion_cn_bond_mean"] == 6
        assert rs["site_d1_mean_A"] == pytest.approx(a / 2, rel=1e-6)
        assert rs["site_econ_mean"] == pytest.approx(6.0, abs=0.05)
        assert rs["site_hetero_mean"] == 1.0 and rs["site_like_mean"] == 0.0
        assert rs["site_bond_disp_max"] == pytest.approx(0.0, abs=1e-6)
    assert f[0]["site_cation_cn_bond_mean"] == 6  # Na-Na at 1.20 x the radii sum: no bond
    # Mg-Mg in MgO sits at 1.06 x the covalent radii sum: counted as a contact (documented)
    assert f[3]["site_cation_cn_bond_mean"] == 18
    assert f[0]["site_dchi_mean"] == pytest.approx(3.16 - 0.93, abs=1e-6)  # Pauling Cl - Na
    # fcc metal: 12 like neighbours, no anion
    assert f[1]["site_cn_shell_mean"] == f[1]["site_cn_bond_mean"] == 12
    assert f[1]["site_like_mean"] == 1.0 and f[1]["site_dchi_mean"] == 0.0
    assert np.isnan(f[1]["site_anion_cn_bond_mean"])
    # zinc blende: tetrahedral
    assert f[2]["site_cn_shell_mean"] == 4 and f[2]["site_cation_cn_bond_mean"] == 4
    assert f[2]["site_d1_mean_A"] == pytest.approx(5.41 * np.sqrt(3) / 4, rel=1e-6)
    # everything but the anion statistics of the unary cell is finite
    anion_cols = [i for i, n in enumerate(G.site_feature_names()) if n.startswith("site_anion")]
    assert np.isfinite(np.delete(X, anion_cols, axis=1)).all()
    assert np.isfinite(X[[0, 2, 3]]).all()


def test_site_features_finite_on_store_entries(oxides, table):
    from matdisco.screen import gap_structure as G

    df, arrays = oxides
    X = G.site_environment_features(arrays.take(np.arange(300)), table)
    multi = df["chemsys"].iloc[:300].str.contains("-").to_numpy()
    assert np.isfinite(X[multi]).all()
    names = G.site_feature_names()
    cn = X[:, names.index("site_cn_shell_mean")]
    assert (cn >= 1).all() and (cn <= 16).all()  # sensible first-shell coordination
    d1 = X[:, names.index("site_d1_mean_A")]
    assert (d1 > 0.9).all() and (d1 < 3.5).all()  # nearest-neighbour distances, Å


@pytest.mark.parametrize("kind", ["structure", "composition"])
def test_model_switch_trains_predicts_and_names_the_model(oxides, table, mgo, kind):
    from matdisco.store import StructureArrays

    df, arrays = oxides
    settings = ScreenBandgapSettings.from_config(
        {
            "model": kind,
            "n_members": 2,
            "evaluate_random_split": False,
            "n_bootstrap": 20,
            "max_train": 600,
            "lightgbm": {"n_estimators": 30, "num_leaves": 15, "learning_rate": 0.1},
            "embeddings": [],
            "structure_embedding": None,
        }
    )
    model, metrics, _ = B.train_gap_surrogate(
        df["formula"].tolist(), df["band_gap"].to_numpy(), arrays, table, settings=settings
    )
    has_sites = any(n.startswith("site_") for n in model.feature_names)
    assert has_sites == (kind == "structure") and model.kind == kind
    assert metrics["gap_model"] == kind
    assert ("site-environment" in metrics["features"]) == (kind == "structure")
    pred = B.predict_gaps(model, ["MgO"], StructureArrays.from_structures([mgo]))
    assert pred["gap_model"].tolist() == [kind]
    assert np.isfinite(pred["gap_pbe_ml"]).all() and pred["gap_pbe_ml"].iloc[0] > 1.0


def test_model_switch_rejects_unknown_and_old_pickles_read_as_composition():
    with pytest.raises(ValueError, match="unknown screen.bandgap.model"):
        B._model_kind({"model": "gnn"})
    assert B._model_kind({"structure_features": True}) == "composition"  # pre-switch pickles
    assert ScreenBandgapSettings().model == "structure"


def test_embedding_settings_and_tables_must_agree(oxides, table, embeddings):
    """Settings that name embedding tables refuse a call without them (and vice versa)."""
    df, arrays = oxides
    args = (
        df["formula"].tolist()[:200],
        df["band_gap"].to_numpy()[:200],
        arrays.take(np.arange(200)),
    )
    no_chgnet = ScreenBandgapSettings.from_config({"structure_embedding": None})
    with pytest.raises(ValueError, match="screen.bandgap.embeddings"):
        B.train_gap_surrogate(*args, table, settings=no_chgnet)
    with pytest.raises(ValueError, match="screen.bandgap.embeddings"):
        B.train_gap_surrogate(
            *args,
            table,
            settings=ScreenBandgapSettings.from_config(
                {"embeddings": [], "structure_embedding": None}
            ),
            embeddings=embeddings,
        )
    # the CHGNet structure embedding: asked for but not passed, and passed but not asked for
    with pytest.raises(ValueError, match="structure_embedding is 'chgnet'"):
        B.train_gap_surrogate(*args, table, settings=ScreenBandgapSettings(), embeddings=embeddings)
    with pytest.raises(ValueError, match="structure_embedding is None"):
        B.train_gap_surrogate(
            *args,
            table,
            settings=no_chgnet,
            embeddings=embeddings,
            structure_embedding=np.zeros((200, 128), np.float32),
        )
