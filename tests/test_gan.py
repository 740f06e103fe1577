"""WGAN-GP generator: networks, determinism, checkpoint resume, sampling and validity."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from matdisco.generate import gan as G
from matdisco.generate.gan import nets as N
from matdisco.generate.gan import train as T
from matdisco.generate.pointcloud import PointCloudSpec, ValiditySettings, min_distances
from matdisco.settings import GANSettings

ELEMENTS = ("Mg", "Mn", "O")
TINY = GANSettings.from_config(
    {
        "model": {"latent_dim": 8, "hidden": 16, "distance_features": 2},
        "train": {"epochs": 4, "batch_size": 8, "n_critic": 2, "checkpoint_every": 2},
        "augment": {"copies": 2},
    }
)


def tiny(**train) -> GANSettings:
    """TINY with other ``gan.train`` values."""
    return replace(TINY, train=replace(TINY.train, **train))


@pytest.fixture(scope="module")
def structures() -> list[Structure]:
    """Rock salt MgO and MnO, rutile-like MnO2, MgMn2O4 spinel (primitive)."""
    rs = [
        Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(a), [el, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ).get_primitive_structure()
        for el, a in (("Mg", 4.21), ("Mn", 4.45))
    ]
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.40, 2.87), ["Mn", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    spinel = Structure.from_spacegroup(
        "Fd-3m",
        Lattice.cubic(8.25),
        ["Mg", "Mn", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.3875, 0.3875, 0.3875]],
    ).get_primitive_structure()
    return [*rs, rutile, spinel]


@pytest.fixture(scope="module")
def data(structures) -> G.TrainingSet:
    return G.build_training_set(
        structures, ["mgo", "mno", "mno2", "spinel"], ELEMENTS, max_sites=14
    )


def _weights(model: G.GANModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.generator.state_dict().items()}


def test_training_set(data, structures):
    assert data.n_base == 4
    assert data.spec.slots == (2, 4, 8)  # from the spinel (Mg2 Mn4 O8)
    assert len(data.images) > data.n_base  # supercells of the small cells
    assert all("@" in i for i in data.ids[data.n_base :])
    again = G.build_training_set(
        structures, ["mgo", "mno", "mno2", "spinel"], ELEMENTS, max_sites=14
    )
    assert again.fingerprint() == data.fingerprint()
    fewer = G.build_training_set(
        structures[:3],
        ["mgo", "mno", "mno2"],
        ELEMENTS,
        max_sites=14,
        slots={"Mg": 2, "Mn": 4, "O": 8},
    )
    assert fewer.fingerprint() != data.fingerprint()


def test_networks_shapes_and_masking(data):
    torch.manual_seed(0)
    gen, critic, cls = N._build(data.spec, TINY.model)
    masks = torch.as_tensor(data.masks()[:5], dtype=torch.float32)
    x = gen(torch.randn(5, TINY.model.latent_dim), masks)
    assert x.shape == (5, data.spec.n_rows, 3)
    atoms = x[:, 2:]
    occ = masks[:, 2:] > 0.5
    assert (atoms[~occ] == 0).all()  # composition by construction
    assert ((atoms[occ] >= 1 / 6) & (atoms[occ] <= 5 / 6)).all()
    assert critic(x).shape == (5,)
    logits = cls(x)
    assert [lg.shape[1] for lg in logits] == [3, 5, 9]
    # paper mode: no mask, every row free
    free = G.Generator(data.spec, 8, 16, mask_composition=False)
    y = free(torch.randn(5, 8), masks)
    assert (y[:, 2:][~occ] > 0).all()


def test_distance_features_and_contact_penalty(structures):
    spinel = structures[3]
    spec = PointCloudSpec(ELEMENTS, (2, 4, 8))
    x = torch.as_tensor(spec.encode(spinel)[None], dtype=torch.float32)
    dist, pair_ok, occ = N._pair_distances(x, spec)
    D, R = min_distances(spinel)
    assert int(occ.sum()) == 14
    # shortest contact agrees with the exact periodic distances (oblique cell: upper bound)
    torch_min = float(dist[pair_ok].min())
    assert torch_min >= D[~np.eye(14, dtype=bool)].min() - 1e-4
    assert torch_min == pytest.approx(1.97, abs=0.05)
    pen = G.ContactPenalty(spec, margin=0.75)
    assert float(pen(x)) == 0.0  # a real crystal has no short contacts
    # squeeze two O atoms together: positive penalty whose gradient pushes them apart
    y = x.clone()
    o = spec.block(2).start
    y[0, o + 1] = y[0, o] + 0.005
    y.requires_grad_(True)
    p = pen(y)
    p.backward()
    assert float(p.detach()) > 0
    assert float((y.grad[0, o + 1] - y.grad[0, o]) @ (y[0, o + 1] - y[0, o]).detach()) < 0


def test_deterministic_and_resumes_after_kill(data, tmp_path, monkeypatch):
    """4 epochs straight vs a crash in epoch 3 (after the epoch-2 checkpoint) and a rerun."""
    full, hist_full, info_full = G.train_gan(
        data, TINY, seed=3, device="cpu", ckpt_dir=tmp_path / "a", threads=1
    )
    assert info_full["resumed_from_epoch"] == 0 and info_full["epochs_run"] == 4
    assert (tmp_path / "a" / T.CKPT_NAME).exists()

    real_order = T._epoch_order

    def crash_in_epoch_3(n, copies, seed, epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        return real_order(n, copies, seed, epoch, *args, **kwargs)

    monkeypatch.setattr(T, "_epoch_order", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        G.train_gan(data, TINY, seed=3, device="cpu", ckpt_dir=tmp_path / "b", threads=1)
    monkeypatch.setattr(T, "_epoch_order", real_order)
    state = torch.load(tmp_path / "b" / T.CKPT_NAME, weights_only=False)
    assert state["epoch"] == 2
    assert not list((tmp_path / "b").glob(".*tmp"))  # atomic writes leave no temporaries

    resumed, hist_res, info_res = G.train_gan(
        data, TINY, seed=3, device="cpu", ckpt_dir=tmp_path / "b", threads=1
    )
    assert info_res["resumed_from_epoch"] == 2 and info_res["epochs_run"] == 2
    wa, wb = _weights(full), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    cols = ["epoch", "critic_loss", "wasserstein", "classifier_acc_real"]
    assert np.array_equal(hist_full[cols].to_numpy(), hist_res[cols].to_numpy())

    # extending training resumes from the final checkpoint too (2 + 2 epochs == 4 epochs)
    short = tiny(epochs=2)
    G.train_gan(data, short, seed=3, device="cpu", ckpt_dir=tmp_path / "c", threads=1)
    ext, _, info_ext = G.train_gan(
        data, TINY, seed=3, device="cpu", ckpt_dir=tmp_path / "c", threads=1
    )
    assert info_ext["resumed_from_epoch"] == 2
    assert all(torch.equal(wa[k], v) for k, v in _weights(ext).items())

    # other settings or another seed never resume from a foreign checkpoint (it is at epoch 4)
    shutil.copytree(tmp_path / "a", tmp_path / "d")
    other = tiny(lr=2e-4, epochs=5)
    _, _, info_other = G.train_gan(
        data, other, seed=3, device="cpu", ckpt_dir=tmp_path / "d", threads=1, time_limit_s=0
    )
    assert info_other["resumed_from_epoch"] == 0 and info_other["epochs_run"] == 1
    one = tiny(epochs=5)
    _, _, info4 = G.train_gan(
        data, one, seed=4, device="cpu", ckpt_dir=tmp_path / "a", threads=1, time_limit_s=0
    )
    assert info4["resumed_from_epoch"] == 0


def test_save_load_sample_generate(data, tmp_path):
    model, hist, _ = G.train_gan(data, tiny(epochs=1), seed=0, device="cpu")
    path = tmp_path / "model.pt"
    G.save_model(model, path)
    back = G.load_model(path)
    assert back.spec == data.spec
    a = G.sample_images(model, (1, 2, 4), 7, seed=1)
    b = G.sample_images(back, (1, 2, 4), 7, seed=1)
    assert a.shape == (7, data.spec.n_rows, 3) and np.allclose(a, b)
    assert not np.allclose(a, G.sample_images(back, (1, 2, 4), 7, seed=2))
    with pytest.raises(ValueError):
        G.sample_images(back, (3, 0, 0), 2)

    assert G.formula_multiples("MgMn2O4", data.spec, 14) == [(1, 2, 4), (2, 4, 8)]
    assert G.formula_multiples("MgMn2O4", data.spec, 13) == [(1, 2, 4)]
    assert G.formula_multiples("Mg3MnO4", data.spec, 20) == []  # 3 Mg > 2 slots
    assert G.formula_multiples("LiMnO2", data.spec, 20) == []

    entries, structs, summary = G.generate_structures(
        back,
        ["MgMn2O4", "MnO2", "LiMnO2"],
        n_per_composition=10,
        max_sites=14,
        validity=ValiditySettings(),
        seed=0,
    )
    tot = summary["totals"]
    assert tot["samples"] == 20 and summary["per_formula"]["LiMnO2"]["samples"] == 0
    assert tot["composition_ok"] == 20  # mask mode: by construction
    assert len(entries) == len(structs) == tot["unique"] <= tot["valid"]
    if len(entries):
        assert set(entries["source"]) == {"gan"} and set(entries["generator"]) == {"wgan_gp"}
        assert set(entries["target_formula"]) <= {"MgMn2O4", "MnO2"}
        assert (entries["parent"] == "").all()
    json.dumps(summary)  # serialisable


def test_generate_from_model_writes_store(data, tmp_path):
    from matdisco.store import read_entries, read_structures

    model, _, _ = G.train_gan(data, tiny(epochs=1), seed=0, device="cpu")
    G.save_model(model, tmp_path / "m.pt")
    # loose validity so that an untrained model yields some structures to write
    loose = {
        "min_distance_factor": 0.0,
        "min_distance": 0.0,
        "min_angle": 0.0,
        "min_volume_per_atom": 0.0,
        "max_volume_per_atom": 1e9,
    }
    summary = G.generate_from_model(
        tmp_path / "m.pt",
        ["MgMn2O4"],
        settings=GANSettings.from_config(
            {
                "sample": {"per_composition": 6, "max_sites": None},
                "validity": loose,
                "dedupe": {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0},
                "seed": 0,
                "device": "cpu",
            }
        ),
        out_store=tmp_path / "c.h5",
        out_cifs=tmp_path / "cifs",
        out_summary=tmp_path / "s.json",
        max_atoms=14,
        threads=1,
    )
    e = read_entries(tmp_path / "c.h5")
    assert summary["totals"]["valid"] == 6 and len(e) == summary["totals"]["unique"] >= 1
    assert {"generator", "target_formula", "parent", "formula_units", "min_distance"} <= set(
        e.columns
    )
    assert (e["source"] == "gan").all()
    assert sorted(p.stem for p in (tmp_path / "cifs").glob("*.cif")) == sorted(e["id"])
    assert [s.composition.reduced_formula for s in read_structures(tmp_path / "c.h5")] == [
        "MgMn2O4"
    ] * len(e)
    assert json.loads((tmp_path / "s.json").read_text())["totals"]["samples"] == 6


def test_pick_device():
    assert G.pick_device("cpu").type == "cpu"
    assert G.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            G.pick_device("cuda")


def test_plot_history(tmp_path, data):
    _, hist, _ = G.train_gan(data, tiny(epochs=2), seed=0, device="cpu")
    assert list(hist["epoch"]) == [1, 2]
    G.plot_history(hist, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_random_masks_within_limits():
    spec = PointCloudSpec(ELEMENTS, (2, 4, 8))
    rng = np.random.default_rng(0)
    masks = T._random_masks(spec, 500, 9, rng)
    counts = np.array([spec.counts_from_mask(m) for m in masks])
    assert (counts <= np.array(spec.slots)).all() and (counts >= 0).all()
    assert (counts.sum(1) >= 2).all() and (counts.sum(1) <= 9).all()
    assert len({tuple(c) for c in counts}) > 50  # varied
    again = T._random_masks(spec, 500, 9, np.random.default_rng(0))
    assert np.array_equal(masks, again)


def test_epoch_order_packs_one_composition():
    """PacGAN order: packs of one composition, every image at least ``copies`` times."""
    counts = np.array([[1, 2, 4]] * 5 + [[1, 1, 3]] * 2 + [[2, 1, 4]])
    order, _ = T._epoch_order(len(counts), 2, 0, 3, counts, pack=4)
    assert len(order) % 4 == 0
    packs = counts[order].reshape(-1, 4, 3)
    assert (packs == packs[:, :1]).all()  # one composition per pack
    seen = np.bincount(order, minlength=len(counts))
    assert (seen >= 2).all()
    again, _ = T._epoch_order(len(counts), 2, 0, 3, counts, pack=4)
    assert np.array_equal(order, again)
    plain, _ = T._epoch_order(len(counts), 2, 0, 3, counts, pack=1)
    assert sorted(plain) == sorted(np.tile(np.arange(len(counts)), 2))


def test_packing_critic_scores_packs(data):
    """A packing critic gives one score per pack, and trains (finite losses, generator steps)."""
    st = replace(TINY, model=replace(TINY.model, pack=2))
    _, critic, _ = N._build(data.spec, st.model)
    x = torch.as_tensor(data.images[:6], dtype=torch.float32)
    assert critic(x).shape == (3,)
    with pytest.raises(ValueError, match="multiple of pack"):
        critic(x[:5])
    _, hist, _ = G.train_gan(data, st, seed=0, device="cpu", threads=1)
    assert np.isfinite(hist["critic_loss"]).all() and np.isfinite(hist["generator_loss"]).all()


def test_code_version_covers_every_gan_module():
    """The checkpoint fingerprint's code hash is over the package's import closure."""
    from pathlib import Path

    from matdisco.provenance import import_closure

    pkg = Path(T.__file__).parent
    closure = set(import_closure(pkg / "__init__.py"))
    assert set(pkg.glob("*.py")) - {pkg / "__init__.py"} <= closure
    assert pkg.with_name("pointcloud.py") in closure
