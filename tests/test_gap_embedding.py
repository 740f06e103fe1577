"""CHGNet structure embedding of the band-gap surrogate: computation, the bundled file, reuse."""

from __future__ import annotations

import numpy as np
import pytest

from matdisco.screen import gap_embedding as G
from matdisco.store import StructureArrays, read_entries, read_structure_arrays


@pytest.fixture(scope="module")
def chgnet():
    from chgnet.model import CHGNet

    return CHGNet.load(model_name=G.MODEL_NAME, use_device="cpu", verbose=False)


def test_structure_keys_see_every_change(mgo):
    a = StructureArrays.from_structures([mgo, mgo.copy()])
    k = G.structure_keys(a)
    assert k[0] == k[1] and len(k[0]) == 20
    moved = mgo.copy()
    moved.translate_sites([0], [0.001, 0, 0])
    strained = mgo.copy()
    strained.scale_lattice(mgo.volume * 1.01)
    swapped = mgo.copy()
    swapped.replace(0, "Ca")
    others = G.structure_keys(StructureArrays.from_structures([moved, strained, swapped]))
    assert len({k[0], *others}) == 4


def test_embedding_of_a_structure(mgo, chgnet):
    bad = mgo.copy()
    bad.scale_lattice(mgo.volume * 30)  # atoms ~13 Å apart: isolated for CHGNet's 5 Å graph
    emb = G.compute_embeddings(StructureArrays.from_structures([mgo, bad, mgo]), model=chgnet)
    assert emb.X.shape == (3, 128) and emb.X.dtype == np.float32
    assert emb.ok.tolist() == [True, False, True]
    assert "isolated" in emb.reasons[1].lower() and np.isnan(emb.X[1]).all()
    assert np.isfinite(emb.X[0]).all() and np.array_equal(emb.X[0], emb.X[2])
    mean, mx = emb.X[0, :64], emb.X[0, 64:]
    assert (mx >= mean - 1e-3).all() and (mx > mean + 1e-3).any()  # MgO: two kinds of site
    assert np.array_equal(emb.X[0], emb.X[0].astype(np.float16).astype(np.float32))
    # a supercell has the same mean and max atom features
    supercell = StructureArrays.from_structures([mgo * (2, 1, 1)])
    sup = G.compute_embeddings(supercell, model=chgnet).X[0]
    np.testing.assert_allclose(sup, emb.X[0], atol=2e-2, rtol=1e-2)
    assert G.embedding_columns()[0] == "chgnet_mean_0" and len(G.embedding_columns()) == 128


def test_bundled_file_is_chgnet_of_the_bundled_structures(root, chgnet):
    """Recompute a sample of the shipped rows: the file holds what the code computes."""
    path = root / "resources/bundled/chgnet_embeddings_mp2018.h5"
    structures = root / "resources/bundled/mp2018_structures.h5"
    ids, keys, emb = G.read_embedding_file(path)
    sid = read_entries(structures, ["id"])["id"].tolist()
    assert ids == sid and emb.ok.mean() > 0.999
    rows = np.random.default_rng(7).choice(len(ids), 6, replace=False)
    arrays = read_structure_arrays(structures, rows)
    assert G.structure_keys(arrays) == [keys[r] for r in rows]
    again = G.compute_embeddings(arrays, model=chgnet)
    np.testing.assert_allclose(again.X, emb.X[rows], rtol=2e-3, atol=2e-3)


def test_embed_store_reuses_only_matching_rows(root, tmp_path, cu_au_store, chgnet, monkeypatch):
    store = cu_au_store(tmp_path / "s.h5")
    first = G.embed_store(store, tmp_path / "e1.h5")
    assert first["n_computed"] == 3 and first["n_reused"] == 0 and first["n_failed"] == 0
    ids, keys, e1 = G.read_embedding_file(tmp_path / "e1.h5")
    # reuse: every id and structure matches -> nothing computed (CHGNet is never called)
    monkeypatch.setattr(G, "compute_embeddings", lambda *a, **k: pytest.fail("recomputed"))
    second = G.embed_store(store, tmp_path / "e2.h5", reuse=tmp_path / "e1.h5")
    assert second["n_reused"] == 3 and second["n_computed"] == 0
    assert np.array_equal(G.read_embedding_file(tmp_path / "e2.h5")[2].X, e1.X)
    monkeypatch.undo()
    # a reuse file whose row for the same id holds another structure: that row is recomputed
    import h5py

    with h5py.File(tmp_path / "e1.h5", "r+") as h5:
        k = h5["keys"].asstr()[()]
        k[1] = "0" * 20
        del h5["keys"]
        h5.create_dataset("keys", data=k.astype(object), dtype=h5py.string_dtype())
        x = h5["X"][()]
        x[1] = 0
        del h5["X"]
        h5.create_dataset("X", data=x)
    third = G.embed_store(store, tmp_path / "e3.h5", reuse=tmp_path / "e1.h5")
    assert third["n_reused"] == 2 and third["n_computed"] == 1
    assert np.array_equal(G.read_embedding_file(tmp_path / "e3.h5")[2].X, e1.X)
    with pytest.raises(FileNotFoundError):
        G.embed_store(store, tmp_path / "e4.h5", reuse=tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="not a matdisco CHGNet embedding"):
        G.read_embedding_file(store)
