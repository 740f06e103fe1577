"""Composition-conditioned WGAN-GP crystal generator on the point-cloud representation.

After Kim, Noh, Gu, Aspuru-Guzik, Jung, ACS Cent. Sci. 6, 1412 (2020): a generator maps noise
plus a composition (the occupied element slots) to a point-cloud image
(:mod:`matdisco.generate.pointcloud`); a critic is trained with the Wasserstein loss and a
gradient penalty (lambda = 10, n_critic = 5, Adam beta1 = 0.5, beta2 = 0.999); an auxiliary
classifier predicts the number of atoms of each element from an image, is trained on real
images, and its cross-entropy on generated images is added to the generator loss.

Differences from the paper (all configurable where it matters):

* the three networks are multilayer perceptrons on the flattened image (the paper used
  convolutional networks), which keeps CPU training to minutes;
* with ``mask_composition`` (default) the generator's unoccupied slots are zeroed, so a sample
  has exactly the requested composition; with it off, atoms are read with the paper's
  threshold rule and composition validity is a real test;
* the critic also receives the cell volume per atom, the k smallest interatomic distances of
  every atom (``distance_features``, computed differentiably from lattice and coordinates) and
  the batch's mean feature standard deviation (``minibatch_std``, against mode collapse);
* the generator loss has a hinge penalty on interatomic distances below ``contact_margin`` x
  the sum of covalent radii (``contact_penalty``; it moves atoms, not the cell). Without it
  (and the distance features) a few minutes of CPU training on the ~30 structures of a
  ternary system give almost no structure that passes the distance check;
* the generator's output bias starts with atoms at random positions and the training set's
  mean cell; images are augmented (translation, cyclic axis permutation) and atoms sorted
  within each element block.

Training is resumable: a checkpoint (all weights, optimiser states, the noise generator state
and the history) is written atomically every ``checkpoint_every`` epochs; a later call with
the same data and settings (the number of epochs may differ) continues from it. On CPU with a
fixed seed and thread count the result is bitwise identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from matdisco.core.matching import MatchSettings, dedupe
from matdisco.generate.pointcloud import (
    PointCloudSpec,
    ValiditySettings,
    augment,
    check_validity,
    counts_of,
    sort_slots,
    supercells,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "GANSettings",
    "TrainingSet",
    "Generator",
    "Critic",
    "CompositionClassifier",
    "GANModel",
    "pick_device",
    "build_training_set",
    "training_set_from_store",
    "train_gan",
    "save_model",
    "load_model",
    "sample_images",
    "formula_multiples",
    "generate_structures",
    "dedupe_structures",
    "plot_history",
    "train_from_store",
    "generate_from_model",
]

log = logging.getLogger(__name__)

CKPT_NAME = "last.pt"


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class GANSettings:
    """Hyper-parameters of the networks and of training (``gan.model`` / ``gan.train`` config).

    Attributes:
        latent_dim: length of the noise vector.
        hidden: width of the hidden layers (the middle layer is twice as wide).
        mask_composition: zero the generator's unoccupied slots (composition by construction).
        distance_features: number of smallest periodic distances per atom given to the critic
            (0 = off).
        minibatch_std: give the critic the batch's mean feature standard deviation (against
            mode collapse).
        contact_penalty: weight of the generator's hinge penalty on interatomic distances
            below ``contact_margin`` x the sum of covalent radii (0 = off, as in the paper).
        contact_margin: the penalty's distance threshold, in units of the covalent radii sum.
        contact_random: also apply the contact penalty to a batch generated for random
            compositions (counts within the slots, 2 to the largest training cell size), so that
            compositions absent from the training set learn to avoid overlaps too.
        instance_noise: standard deviation of Gaussian noise added to the occupied rows of the
            real and generated images the critic sees (0 = off).
        epochs: training epochs (one epoch = every training image ``copies`` times, freshly
            augmented).
        batch_size: images per critic / generator step.
        n_critic: critic steps per generator step.
        gp_lambda: weight of the gradient penalty.
        cls_weight: weight of the auxiliary classifier's cross-entropy in the generator loss.
        lr: Adam learning rate of all three networks.
        beta1: Adam beta1.
        beta2: Adam beta2.
        copies: augmented copies of every training image per epoch.
        translate: augment by random translations.
        permute_axes: augment by cyclic permutations of the cell axes.
        checkpoint_every: write a checkpoint every this many epochs (and at the end).
    """

    latent_dim: int = 64
    hidden: int = 256
    mask_composition: bool = True
    distance_features: int = 4
    minibatch_std: bool = True
    contact_penalty: float = 10.0
    contact_margin: float = 0.75
    contact_random: bool = True
    instance_noise: float = 0.01
    epochs: int = 30
    batch_size: int = 64
    n_critic: int = 5
    gp_lambda: float = 10.0
    cls_weight: float = 1.0
    lr: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    copies: int = 16
    translate: bool = True
    permute_axes: bool = True
    checkpoint_every: int = 10

    @classmethod
    def from_config(cls, *sections: Mapping[str, Any] | None) -> GANSettings:
        """Merge config sections (e.g. ``gan.model``, ``gan.train``, ``gan.augment``)."""
        merged: dict[str, Any] = {}
        for s in sections:
            merged.update(dict(s or {}))
        names = {f.name for f in fields(cls)}
        unknown = set(merged) - names
        if unknown:
            raise ValueError(f"unknown GAN settings: {sorted(unknown)}")
        return cls(**merged)

    def resume_key(self) -> dict[str, Any]:
        """Settings a checkpoint must agree on to be resumed (all but epochs / checkpointing)."""
        d = asdict(self)
        d.pop("epochs")
        d.pop("checkpoint_every")
        return d


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


# -- training data --------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """Encoded training images.

    Attributes:
        spec: the image layout.
        images: (N, n_rows, 3) float64, atoms sorted within each element block.
        counts: (N, n_elements) atoms per element.
        ids: entry id of each image (supercells get a ``@n1xn2xn3`` suffix).
        n_base: images that are store structures themselves (the first n_base rows).
    """

    spec: PointCloudSpec
    images: np.ndarray
    counts: np.ndarray
    ids: list[str]
    n_base: int

    def masks(self) -> np.ndarray:
        """(N, n_rows) row masks."""
        return (
            np.stack([self.spec.mask(c) for c in self.counts])
            if len(self.counts)
            else np.zeros((0, self.spec.n_rows))
        )

    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of the layout and the images."""
        h = hashlib.sha256()
        h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.images.round(8)).tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()[:16]


def build_training_set(
    structures: Sequence[Structure],
    ids: Sequence[str],
    elements: Sequence[str],
    *,
    max_sites: int,
    slots: Mapping[str, int] | None = None,
    length_scale: float = 30.0,
    use_supercells: bool = True,
    reduce: bool = True,
) -> TrainingSet:
    """Encode structures (and their supercells) of a chemical system as training images.

    Args:
        structures: candidate training structures (others than ``elements`` are skipped).
        ids: their ids.
        elements: element symbols of the image blocks.
        max_sites: structures (and supercells) with more sites are left out.
        slots: atoms per element block; None = the largest count among the structures kept.
        length_scale: lattice length scale of the images, Angstrom.
        use_supercells: add the diagonal supercells that fit the slots and ``max_sites``.
        reduce: Niggli-reduce each cell first.
    """
    kept: list[tuple[str, Structure, tuple[int, ...]]] = []
    for sid, s in zip(ids, structures, strict=True):
        counts = counts_of(s, elements)
        if counts is None or len(s) > max_sites:
            continue
        if reduce:
            s = s.get_reduced_structure()
        kept.append((sid, s, counts))
    if slots is None:
        slot_t = tuple(max([1] + [c[i] for _, _, c in kept]) for i in range(len(elements)))
    else:
        missing = set(elements) - set(slots)
        if missing:
            raise ValueError(f"slots missing for {sorted(missing)}")
        slot_t = tuple(int(slots[e]) for e in elements)
    spec = PointCloudSpec(tuple(elements), slot_t, length_scale=length_scale)
    kept = [k for k in kept if spec.fits(k[2])]
    rows: list[tuple[str, Structure]] = [(sid, s) for sid, s, _ in kept]
    n_base = len(rows)
    if use_supercells:
        for sid, s, _ in kept:
            for n, sc in supercells(s, spec, max_sites):
                rows.append((f"{sid}@{n[0]}x{n[1]}x{n[2]}", sc))
    images = np.stack([spec.encode(s) for _, s in rows]) if rows else np.zeros((0, spec.n_rows, 3))
    counts = np.array([counts_of(s, elements) for _, s in rows], dtype=np.int64).reshape(
        -1, len(elements)
    )
    masks = np.stack([spec.mask(c) for c in counts]) if len(counts) else np.zeros((0, spec.n_rows))
    images = sort_slots(images, masks, spec)
    return TrainingSet(spec, images, counts, [r[0] for r in rows], n_base)


def training_set_from_store(
    store: str | Path,
    elements: Sequence[str],
    *,
    max_sites: int,
    slots: Mapping[str, int] | None = None,
    length_scale: float = 30.0,
    use_supercells: bool = True,
) -> TrainingSet:
    """Training images from the store entries whose chemical system lies within ``elements``."""
    from matdisco.store import read_entries, read_structure_arrays

    entries = read_entries(store, ["id", "chemsys", "nsites"])
    allowed = set(elements)
    sel = np.flatnonzero(
        entries["chemsys"].map(lambda c: set(str(c).split("-")) <= allowed).to_numpy()
        & (entries["nsites"].to_numpy() <= max_sites)
    )
    structures = read_structure_arrays(store, sel).structures()
    return build_training_set(
        structures,
        entries["id"].iloc[sel].tolist(),
        elements,
        max_sites=max_sites,
        slots=slots,
        length_scale=length_scale,
        use_supercells=use_supercells,
    )


# -- networks -------------------------------------------------------------------------------
def _lattice_matrix(params: torch.Tensor) -> torch.Tensor:
    """(B, 6) lattice parameters (Angstrom, degrees) -> (B, 3, 3) row vectors (pymatgen's)."""
    a, b, c = params[:, 0], params[:, 1], params[:, 2]
    al, be, ga = (torch.deg2rad(params[:, i]) for i in (3, 4, 5))
    ca, cb, cg = torch.cos(al), torch.cos(be), torch.cos(ga)
    sb = torch.sin(be)
    sa = torch.sin(al)
    val = ((ca * cb - cg) / (sa * sb)).clamp(-1 + 1e-6, 1 - 1e-6)
    gstar = torch.acos(val)
    zero = torch.zeros_like(a)
    va = torch.stack([a * sb, zero, a * cb], dim=-1)
    vb = torch.stack([-b * sa * torch.cos(gstar), b * sa * torch.sin(gstar), b * ca], dim=-1)
    vc = torch.stack([zero, zero, c], dim=-1)
    return torch.stack([va, vb, vc], dim=1)


def _pair_distances(
    x: torch.Tensor, spec: PointCloudSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differentiable interatomic distances of images.

    Uses the minimum image of the rounded fractional difference: exact for near-orthogonal
    cells, an upper bound otherwise, and cheap enough for the gradient penalty's double
    backward.

    Args:
        x: (B, n_rows, 3) images.
        spec: their layout.

    Returns:
        (dist, pair_ok, occ): (B, S, S) distances in Angstrom, (B, S, S) bool mask of pairs of
        two different occupied slots, (B, S) bool occupancy.
    """
    b, s = x.shape[0], spec.n_slots
    params = torch.cat([x[:, 0] * spec.length_scale, x[:, 1] * spec.angle_scale], dim=1)
    params = torch.cat([params[:, :3].clamp(min=0.5), params[:, 3:].clamp(20.0, 160.0)], dim=1)
    lat = _lattice_matrix(params)  # (B, 3, 3)
    occ = x[:, 2:].sum(-1) > 1e-6  # (B, S)
    frac = (x[:, 2:] * 15.0 - 2.5) / 10.0
    d = frac[:, :, None, :] - frac[:, None, :, :]  # (B, S, S, 3)
    d = d - torch.round(d.detach())
    cart = torch.matmul(d.reshape(b, s * s, 3), lat).reshape(b, s, s, 3)
    dist = torch.sqrt((cart**2).sum(-1) + 1e-8)
    eye = torch.eye(s, device=x.device, dtype=torch.bool)[None]
    pair_ok = occ[:, :, None] & occ[:, None, :] & ~eye
    return dist, pair_ok, occ


def _radii_sums(spec: PointCloudSpec) -> torch.Tensor:
    """(S, S) sums of the covalent radii of the slots' elements, Angstrom."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    r = torch.tensor(
        [float(CovalentRadius.radius[e]) for e in spec.slot_species()], dtype=torch.float32
    )
    return r[:, None] + r[None, :]


class DistanceFeatures(nn.Module):
    """The k smallest interatomic distances of every atom row (differentiable), divided by 5 Å.

    Padding rows get the constant 2 (10 Å). Output: (B, n_slots * k).
    """

    def __init__(self, spec: PointCloudSpec, k: int):
        super().__init__()
        self.spec = spec
        self.k = min(k, spec.n_slots - 1) if spec.n_slots > 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, n_rows, 3) image
        if self.k == 0:
            return x.new_zeros(x.shape[0], 0)
        dist, pair_ok, occ = _pair_distances(x, self.spec)
        dist = torch.where(pair_ok, dist, torch.full_like(dist, 10.0))
        kmin = torch.topk(dist, self.k, dim=-1, largest=False).values  # (B, S, k)
        kmin = torch.where(occ[..., None], kmin, torch.full_like(kmin, 10.0))
        return (kmin / 5.0).reshape(x.shape[0], -1)


class ContactPenalty(nn.Module):
    """Hinge penalty on interatomic contacts shorter than ``margin`` x the covalent radii sum.

    Per image: sum over atom pairs of ``relu(margin - d / (r_i + r_j))**2``, averaged over the
    batch. The lattice rows are detached: the penalty moves atoms apart but cannot inflate the
    cell (the cell is left to the critic), which would be its easiest way out.
    """

    def __init__(self, spec: PointCloudSpec, margin: float):
        super().__init__()
        self.spec = spec
        self.margin = margin
        self.register_buffer("radii_sum", _radii_sums(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scalar penalty of a batch of images."""
        x = torch.cat([x[:, :2].detach(), x[:, 2:]], dim=1)
        dist, pair_ok, _ = _pair_distances(x, self.spec)
        ratio = dist / self.radii_sum
        pair = (
            torch.where(pair_ok, torch.relu(self.margin - ratio) ** 2, torch.zeros_like(ratio)).sum(
                (1, 2)
            )
            / 2
        )
        return pair.mean()


class Generator(nn.Module):
    """Noise + composition (slot occupancy) -> point-cloud image.

    The output layer's bias starts with the atoms spread at random positions (instead of all
    at the cell centre) and, after :meth:`init_lattice`, with the training set's mean cell.
    """

    def __init__(
        self, spec: PointCloudSpec, latent_dim: int, hidden: int, mask_composition: bool = True
    ):
        super().__init__()
        self.spec = spec
        self.latent_dim = latent_dim
        self.mask_composition = mask_composition
        n_out = spec.n_rows * 3
        self.net = nn.Sequential(
            nn.Linear(latent_dim + spec.n_slots, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * hidden),
            nn.ReLU(),
            nn.Linear(2 * hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_out),
        )
        with torch.no_grad():
            last = self.net[-1]
            last.bias[6:] = torch.logit(torch.rand(n_out - 6) * 0.8 + 0.1)

    def init_lattice(self, mean_rows: np.ndarray) -> None:
        """Start the lattice outputs at the mean lattice rows (2, 3) of the training images."""
        rows = np.asarray(mean_rows, dtype=np.float64).reshape(6).clip(0.02, 0.98)
        with torch.no_grad():
            self.net[-1].bias[:6] = torch.logit(torch.as_tensor(rows, dtype=torch.float32))

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Images (B, n_rows, 3) for noise (B, latent_dim) and row masks (B, n_rows)."""
        out = torch.sigmoid(self.net(torch.cat([z, mask[:, 2:]], dim=1))).view(
            -1, self.spec.n_rows, 3
        )
        if not self.mask_composition:
            return out
        lattice = out[:, :2]
        atoms = (1.0 / 6.0 + (2.0 / 3.0) * out[:, 2:]) * mask[:, 2:, None]
        return torch.cat([lattice, atoms], dim=1)


def _volume_per_atom(x: torch.Tensor, spec: PointCloudSpec) -> torch.Tensor:
    """(B,) cell volume per atom of images, Angstrom^3 (differentiable; 0 for impossible angles)."""
    abc = x[:, 0] * spec.length_scale
    cos = torch.cos(torch.deg2rad(x[:, 1] * spec.angle_scale))
    ca, cb, cg = cos[:, 0], cos[:, 1], cos[:, 2]
    shape = (1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg).clamp(min=1e-6)
    n = (x[:, 2:].sum(-1) > 1e-6).sum(-1).clamp(min=1)
    return abc.prod(-1) * torch.sqrt(shape) / n


class Critic(nn.Module):
    """Image (plus volume per atom and optional distance features) -> Wasserstein critic score.

    With ``minibatch_std`` the mean standard deviation of the input features over the batch is
    appended to every sample (Karras et al. 2018), so the critic can see a collapsed batch.
    """

    def __init__(
        self,
        spec: PointCloudSpec,
        hidden: int,
        distance_features: int = 0,
        minibatch_std: bool = False,
    ):
        super().__init__()
        self.spec = spec
        self.minibatch_std = minibatch_std
        self.dist = DistanceFeatures(spec, distance_features) if distance_features > 0 else None
        n_in = (
            spec.n_rows * 3
            + 1
            + (spec.n_slots * self.dist.k if self.dist is not None else 0)
            + int(minibatch_std)
        )
        self.net = nn.Sequential(
            nn.Linear(n_in, 2 * hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B,)."""
        feats = [x.flatten(1), _volume_per_atom(x, self.spec)[:, None] / 20.0]
        if self.dist is not None:
            feats.append(self.dist(x))
        h = torch.cat(feats, dim=1)
        if self.minibatch_std:
            # sqrt(var + eps): the plain std has an infinite gradient on constant columns
            std = (
                torch.sqrt(h.var(0, unbiased=False) + 1e-8).mean()
                if len(h) > 1
                else h.new_zeros(())
            )
            h = torch.cat([h, std.expand(len(h), 1)], dim=1)
        return self.net(h).squeeze(1)


class CompositionClassifier(nn.Module):
    """Image -> logits of the number of atoms of each element (0..slots[i])."""

    def __init__(self, spec: PointCloudSpec, hidden: int):
        super().__init__()
        self.spec = spec
        self.sizes = [s + 1 for s in spec.slots]
        self.net = nn.Sequential(
            nn.Linear(spec.n_rows * 3, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, sum(self.sizes)),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-element logits, a list of (B, slots[i] + 1)."""
        return list(torch.split(self.net(x.flatten(1)), self.sizes, dim=1))

    def loss_and_accuracy(
        self, x: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over elements, and the fraction with every count right."""
        logits = self(x)
        loss = sum(nn.functional.cross_entropy(lg, counts[:, i]) for i, lg in enumerate(logits))
        right = torch.stack(
            [lg.argmax(1) == counts[:, i] for i, lg in enumerate(logits)], dim=1
        ).all(1)
        return loss, right.float().mean()


@dataclass
class GANModel:
    """A trained generator with everything needed to sample from it."""

    spec: PointCloudSpec
    settings: GANSettings
    generator: Generator
    classifier: CompositionClassifier | None
    info: dict[str, Any]


def _build(
    spec: PointCloudSpec, st: GANSettings
) -> tuple[Generator, Critic, CompositionClassifier]:
    return (
        Generator(spec, st.latent_dim, st.hidden, st.mask_composition),
        Critic(spec, st.hidden, st.distance_features, st.minibatch_std),
        CompositionClassifier(spec, st.hidden),
    )


# -- checkpoints ----------------------------------------------------------------------------
def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _code_version() -> str:
    from matdisco.provenance import code_hash

    return code_hash("matdisco.generate.gan", "matdisco.generate.pointcloud")


def _fingerprint(data: TrainingSet, st: GANSettings, seed: int) -> str:
    blob = json.dumps(
        {
            "data": data.fingerprint(),
            "settings": st.resume_key(),
            "seed": seed,
            "code": _code_version(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- training -------------------------------------------------------------------------------
def _gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    inter = (eps * real + (1 - eps) * fake).requires_grad_(True)
    score = critic(inter)
    (grad,) = torch.autograd.grad(score.sum(), inter, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def _random_masks(
    spec: PointCloudSpec, n: int, max_sites: int, rng: np.random.Generator
) -> np.ndarray:
    """Row masks of ``n`` random compositions: counts within the slots, 2..max_sites atoms."""
    slots = np.array(spec.slots)
    counts = rng.integers(0, slots + 1, size=(n, len(slots)))
    bad = (counts.sum(1) < 2) | (counts.sum(1) > max_sites)
    while bad.any():
        counts[bad] = rng.integers(0, slots + 1, size=(int(bad.sum()), len(slots)))
        bad = (counts.sum(1) < 2) | (counts.sum(1) > max_sites)
    return np.stack([spec.mask(c) for c in counts])


def _epoch_order(
    n: int, copies: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(np.tile(np.arange(n), copies)), rng


def train_gan(
    data: TrainingSet,
    settings: GANSettings,
    *,
    seed: int = 0,
    device: str = "auto",
    ckpt_dir: str | Path | None = None,
    threads: int | None = None,
    time_limit_s: float | None = None,
) -> tuple[GANModel, pd.DataFrame, dict[str, Any]]:
    """Train the WGAN-GP (resuming from ``ckpt_dir/last.pt`` when it matches).

    Args:
        data: encoded training images.
        settings: hyper-parameters.
        seed: seed of weights, data order, augmentation and noise.
        device: ``auto`` | ``cpu`` | ``cuda[:N]``.
        ckpt_dir: folder of the checkpoint (None = no checkpoints).
        threads: torch CPU threads (None = leave as is).
        time_limit_s: stop after the epoch during which this many seconds passed (checkpoint
            written); None = no limit. Meant for interactive use, not for reproducible runs.

    Returns:
        (model, history, info): history has one row per epoch (epoch, critic_loss,
        wasserstein, gradient_penalty, generator_loss, classifier_loss, classifier_acc_real,
        classifier_acc_fake, seconds); info has the device, epochs run, the epoch resumed
        from, the fingerprint and the timing.
    """
    if len(data.images) == 0:
        raise ValueError("no training structures")
    if threads is not None:
        torch.set_num_threads(int(threads))
    dev = pick_device(device)
    st = settings
    fp = _fingerprint(data, st, seed)
    det_prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
    try:
        torch.manual_seed(seed)
        gen, critic, cls = _build(data.spec, st)
        gen.init_lattice(data.images[:, :2].mean(0))
        gen, critic, cls = gen.to(dev), critic.to(dev), cls.to(dev)
        betas = (st.beta1, st.beta2)
        opt_g = torch.optim.Adam(gen.parameters(), lr=st.lr, betas=betas)
        opt_d = torch.optim.Adam(critic.parameters(), lr=st.lr, betas=betas)
        opt_c = torch.optim.Adam(cls.parameters(), lr=st.lr, betas=betas)
        contact = (
            ContactPenalty(data.spec, st.contact_margin).to(dev) if st.contact_penalty > 0 else None
        )
        noise = torch.Generator().manual_seed(seed + 1)  # CPU stream, same draws on any device
        history: list[dict[str, float]] = []
        start = 0
        ckpt = Path(ckpt_dir) / CKPT_NAME if ckpt_dir is not None else None
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location=dev, weights_only=False)
            if state.get("fingerprint") != fp:
                log.warning("checkpoint %s is from other data/settings/code: starting afresh", ckpt)
            elif state["epoch"] > st.epochs:
                log.warning(
                    "checkpoint %s is at epoch %d > %d epochs: starting afresh",
                    ckpt,
                    state["epoch"],
                    st.epochs,
                )
            else:
                gen.load_state_dict(state["generator"])
                critic.load_state_dict(state["critic"])
                cls.load_state_dict(state["classifier"])
                opt_g.load_state_dict(state["opt_g"])
                opt_d.load_state_dict(state["opt_d"])
                opt_c.load_state_dict(state["opt_c"])
                noise.set_state(state["noise"])
                history = list(state["history"])
                start = int(state["epoch"])
                log.info("resumed from %s at epoch %d", ckpt, start)

        def save_ckpt(epoch: int) -> None:
            if ckpt is None:
                return
            _atomic_torch_save(
                {
                    "epoch": epoch,
                    "fingerprint": fp,
                    "generator": gen.state_dict(),
                    "critic": critic.state_dict(),
                    "classifier": cls.state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "opt_c": opt_c.state_dict(),
                    "noise": noise.get_state(),
                    "history": history,
                },
                ckpt,
            )

        masks_all = data.masks()
        counts_all = data.counts
        max_cell = int(counts_all.sum(1).max())
        spec = data.spec
        t_start = time.perf_counter()
        epochs_run = 0
        for epoch in range(start, st.epochs):
            t0 = time.perf_counter()
            order, rng = _epoch_order(len(data.images), st.copies, seed, epoch)
            imgs = augment(
                data.images[order],
                masks_all[order],
                spec,
                rng,
                translate_atoms=st.translate,
                permute=st.permute_axes,
            )
            real_all = torch.as_tensor(imgs, dtype=torch.float32)
            mask_all = torch.as_tensor(masks_all[order], dtype=torch.float32)
            cnt_all = torch.as_tensor(counts_all[order], dtype=torch.int64)
            n_batches = max(1, len(order) // st.batch_size)
            sums = dict.fromkeys(
                [
                    "critic_loss",
                    "wasserstein",
                    "gradient_penalty",
                    "classifier_loss",
                    "classifier_acc_real",
                ],
                0.0,
            )
            g_sums = {"generator_loss": 0.0, "classifier_acc_fake": 0.0, "contact_penalty": 0.0}
            n_g = 0
            for k in range(n_batches):
                sl = slice(k * st.batch_size, (k + 1) * st.batch_size)
                real = real_all[sl].to(dev)
                mask = mask_all[sl].to(dev)
                cnt = cnt_all[sl].to(dev)
                b = len(real)
                z = torch.randn(b, st.latent_dim, generator=noise).to(dev)
                eps = torch.rand(b, 1, 1, generator=noise).to(dev)
                # critic
                with torch.no_grad():
                    fake = gen(z, mask)
                if st.instance_noise > 0:
                    m3 = mask[:, :, None]
                    real = (
                        real
                        + st.instance_noise * torch.randn(real.shape, generator=noise).to(dev) * m3
                    )
                    fake = (
                        fake
                        + st.instance_noise * torch.randn(fake.shape, generator=noise).to(dev) * m3
                    )
                d_real = critic(real).mean()
                d_fake = critic(fake).mean()
                gp = _gradient_penalty(critic, real, fake, eps)
                loss_d = d_fake - d_real + st.gp_lambda * gp
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                # auxiliary classifier, on real images
                loss_c, acc_c = cls.loss_and_accuracy(real, cnt)
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                sums["critic_loss"] += float(loss_d.detach())
                sums["wasserstein"] += float((d_real - d_fake).detach())
                sums["gradient_penalty"] += float(gp.detach())
                sums["classifier_loss"] += float(loss_c.detach())
                sums["classifier_acc_real"] += float(acc_c)
                # generator every n_critic critic steps
                if (k + 1) % st.n_critic == 0:
                    z = torch.randn(b, st.latent_dim, generator=noise).to(dev)
                    fake = gen(z, mask)
                    loss_cf, acc_f = cls.loss_and_accuracy(fake, cnt)
                    loss_g = -critic(fake).mean() + st.cls_weight * loss_cf
                    if contact is not None:
                        pen = contact(fake)
                        if st.contact_random:
                            rmask = torch.as_tensor(
                                _random_masks(spec, b, max_cell, rng), dtype=torch.float32
                            ).to(dev)
                            zr = torch.randn(b, st.latent_dim, generator=noise).to(dev)
                            pen = 0.5 * (pen + contact(gen(zr, rmask)))
                        loss_g = loss_g + st.contact_penalty * pen
                        g_sums["contact_penalty"] += float(pen.detach())
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                    g_sums["generator_loss"] += float(loss_g.detach())
                    g_sums["classifier_acc_fake"] += float(acc_f)
                    n_g += 1
            row = {"epoch": epoch + 1}
            row.update({key: v / n_batches for key, v in sums.items()})
            row.update({key: (v / n_g if n_g else float("nan")) for key, v in g_sums.items()})
            row["generator_steps"] = n_g
            row["seconds"] = time.perf_counter() - t0
            if not (
                np.isfinite(row["critic_loss"])
                and np.isfinite(row["generator_loss"] if n_g else 0.0)
            ):
                raise FloatingPointError(
                    f"GAN training diverged (non-finite loss) in epoch {epoch + 1}"
                )
            history.append(row)
            epochs_run += 1
            if (epoch + 1) % st.checkpoint_every == 0 or epoch + 1 == st.epochs:
                save_ckpt(epoch + 1)
            if (epoch + 1) % max(1, st.epochs // 10) == 0 or epoch == start:
                log.info(
                    "epoch %d/%d: W %.3f, critic %.3f, cls acc real %.2f fake %.2f (%.2f s)",
                    epoch + 1,
                    st.epochs,
                    row["wasserstein"],
                    row["critic_loss"],
                    row["classifier_acc_real"],
                    row["classifier_acc_fake"],
                    row["seconds"],
                )
            if time_limit_s is not None and time.perf_counter() - t_start > time_limit_s:
                save_ckpt(epoch + 1)
                log.warning("time limit reached after epoch %d", epoch + 1)
                break
        seconds = time.perf_counter() - t_start
    finally:
        torch.use_deterministic_algorithms(det_prev)
    hist = pd.DataFrame(history)
    info = {
        "device": str(dev),
        "seed": seed,
        "fingerprint": fp,
        "resumed_from_epoch": start,
        "epochs_run": epochs_run,
        "epochs_total": int(hist["epoch"].max()) if len(hist) else 0,
        "seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds / epochs_run, 4) if epochs_run else float("nan"),
        "threads": torch.get_num_threads(),
        "training_images": len(data.images),
        "images_per_epoch": len(data.images) * st.copies,
    }
    model = GANModel(data.spec, st, gen.eval(), cls.eval(), info)
    model._critic = critic.eval()  # type: ignore[attr-defined]  # kept for save_model
    return model, hist, info


def save_model(model: GANModel, path: str | Path) -> None:
    """Write the trained networks, layout and settings to one file (atomically)."""
    obj = {
        "format": "matdisco.wgan_gp.v1",
        "spec": model.spec.to_dict(),
        "settings": asdict(model.settings),
        "generator": {k: v.cpu() for k, v in model.generator.state_dict().items()},
        "classifier": {k: v.cpu() for k, v in model.classifier.state_dict().items()}
        if model.classifier
        else None,
        "info": model.info,
    }
    critic = getattr(model, "_critic", None)
    if critic is not None:
        obj["critic"] = {k: v.cpu() for k, v in critic.state_dict().items()}
    _atomic_torch_save(obj, Path(path))


def load_model(path: str | Path, device: str = "cpu") -> GANModel:
    """Read a model written by :func:`save_model`."""
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if obj.get("format") != "matdisco.wgan_gp.v1":
        raise ValueError(f"{path}: not a matdisco WGAN-GP model")
    spec = PointCloudSpec.from_dict(obj["spec"])
    st = GANSettings(**obj["settings"])
    gen, _, cls = _build(spec, st)
    gen.load_state_dict(obj["generator"])
    if obj.get("classifier") is not None:
        cls.load_state_dict(obj["classifier"])
    else:
        cls = None
    dev = pick_device(device)
    return GANModel(
        spec, st, gen.to(dev).eval(), cls.to(dev).eval() if cls else None, obj.get("info", {})
    )


# -- sampling -------------------------------------------------------------------------------
@torch.no_grad()
def sample_images(
    model: GANModel, counts: Sequence[int], n: int, *, seed: int = 0, batch: int = 1024
) -> np.ndarray:
    """``n`` generated images (float64, (n, n_rows, 3)) for one composition (atoms per element)."""
    spec = model.spec
    if not spec.fits(counts):
        raise ValueError(f"composition {counts} does not fit slots {spec.slots}")
    dev = next(model.generator.parameters()).device
    noise = torch.Generator().manual_seed(seed)
    mask = torch.as_tensor(spec.mask(counts), dtype=torch.float32)
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn(b, model.settings.latent_dim, generator=noise).to(dev)
        out.append(model.generator(z, mask.expand(b, -1).to(dev)).cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros((0, spec.n_rows, 3))


def formula_multiples(formula: str, spec: PointCloudSpec, max_sites: int) -> list[tuple[int, ...]]:
    """Atoms-per-element vectors of 1, 2, 3 ... formula units of ``formula`` that fit the slots.

    Returns an empty list when the formula has elements outside the layout.
    """
    from pymatgen.core import Composition

    comp = Composition(formula).reduced_composition
    amounts = {el.symbol: amt for el, amt in comp.element_composition.items()}
    if set(amounts) - set(spec.elements):
        return []
    base = np.array([amounts.get(e, 0.0) for e in spec.elements])
    out = []
    for z in range(1, max_sites + 1):
        counts = base * z
        if not np.allclose(counts, np.round(counts)):
            continue
        counts_t = tuple(int(round(c)) for c in counts)
        if sum(counts_t) > max_sites:
            break
        if spec.fits(counts_t):
            out.append(counts_t)
    return out


#: the GAN's structure comparison: space-group pre-filter at spglib symprec 0.1, no fingerprints
GAN_SYMPREC = 0.1
#: primitive-cell tolerance of the GAN's comparison, Angstrom (tighter than pymatgen's 0.25:
#: noisy generated supercells stay supercells instead of some of them being reduced)
GAN_PRIMITIVE_TOL = 0.1


def dedupe_structures(
    structures: Sequence[Structure], *, ltol: float = 0.2, stol: float = 0.3, angle_tol: float = 5.0
) -> list[list[int]]:
    """Groups of matching structures (indices), by :func:`matdisco.core.matching.dedupe`.

    Structures are compared as primitive cells (volume scaled) with pymatgen's
    StructureMatcher, only within one reduced formula, primitive size and space group (spglib,
    symprec 0.1; a structure on which spglib fails is compared with every same-size one). The
    space-group pre-filter can split matches that the matcher's tolerances would merge across
    a symmetry boundary, so uniqueness is, if anything, overstated slightly.
    The first index of each group is its representative; groups are in order of first index.
    """
    if not structures:
        return []
    settings = MatchSettings(
        ltol=ltol,
        stol=stol,
        angle_tol=angle_tol,
        fingerprint_tol=None,
        symprec=GAN_SYMPREC,
        primitive_tol=GAN_PRIMITIVE_TOL,
    )
    return dedupe(list(structures), settings).groups()


def generate_structures(
    model: GANModel,
    formulas: Sequence[str],
    *,
    n_per_composition: int,
    max_sites: int,
    validity: ValiditySettings,
    dedupe: Mapping[str, float] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[Structure], dict[str, Any]]:
    """Sample, validate and deduplicate structures for each target formula.

    Each formula's ``n_per_composition`` samples are split evenly over its cell sizes (1, 2, ...
    formula units) that fit the slots and ``max_sites``.

    Returns:
        (entries, structures, summary): entries/structures are the valid, unique structures
        (store columns plus generator, target_formula, parent, formula_units, min_distance,
        duplicate_ids); summary holds per-formula and total counts of samples, validity by
        check (lattice, composition, distance) and unique structures.
    """
    spec = model.spec
    dd = dict(dedupe or {})
    use_counts = model.settings.mask_composition
    rows: list[dict[str, Any]] = []
    keep: list[Structure] = []
    per_formula: dict[str, Any] = {}
    totals = dict.fromkeys(
        ["samples", "lattice_ok", "composition_ok", "distance_ok", "valid", "unique"], 0
    )
    for fi, formula in enumerate(formulas):
        multiples = formula_multiples(formula, spec, max_sites)
        if not multiples:
            log.warning(
                "%s: no cell of <= %d sites fits the slots %s; skipped",
                formula,
                max_sites,
                spec.slots,
            )
            per_formula[formula] = {"skipped": "does not fit the slots", "samples": 0}
            continue
        split = np.full(len(multiples), n_per_composition // len(multiples))
        split[: n_per_composition % len(multiples)] += 1
        stats = dict.fromkeys(
            ["samples", "lattice_ok", "composition_ok", "distance_ok", "valid"], 0
        )
        reasons: dict[str, int] = {}
        valid_structs: list[tuple[Structure, tuple[int, ...], float]] = []
        for mi, (counts, n) in enumerate(zip(multiples, split, strict=True)):
            if n == 0:
                continue
            imgs = sample_images(model, counts, int(n), seed=seed * 100003 + fi * 101 + mi)
            for img in imgs:
                res = check_validity(img, spec, counts, validity, use_counts=use_counts)
                stats["samples"] += 1
                for key in ("lattice_ok", "composition_ok", "distance_ok", "valid"):
                    stats[key] += int(res[key])
                if res["valid"]:
                    valid_structs.append((res["structure"], counts, res["min_distance"]))
                else:
                    why = res["reason"].split(":")[0]
                    reasons[why] = reasons.get(why, 0) + 1
        t0 = time.perf_counter()
        groups = dedupe_structures([v[0] for v in valid_structs], **dd)
        t_dd = time.perf_counter() - t0
        for gi, group in enumerate(groups):
            s, counts, dmin = valid_structs[group[0]]
            rows.append(
                {
                    "id": f"gan-{formula}-{gi:04d}",
                    "formula": s.composition.reduced_formula,
                    "composition": s.composition.formula,
                    "chemsys": "-".join(sorted(el.symbol for el in s.composition.elements)),
                    "nelements": len(s.composition.elements),
                    "nsites": len(s),
                    "generator": "wgan_gp",
                    "target_formula": formula,
                    "parent": "",
                    "formula_units": int(round(sum(counts) / _atoms_per_formula_unit(formula))),
                    "min_distance": dmin,
                    "n_duplicates": len(group) - 1,
                }
            )
            keep.append(s)
        stats["unique"] = len(groups)
        stats["multiples"] = [list(m) for m in multiples]
        stats["invalid_reasons"] = reasons
        stats["dedupe_seconds"] = round(t_dd, 2)
        for key in ("lattice_ok", "composition_ok", "distance_ok", "valid"):
            stats[f"{key}_rate"] = (
                round(stats[key] / stats["samples"], 4) if stats["samples"] else None
            )
        stats["unique_rate_of_valid"] = (
            round(stats["unique"] / stats["valid"], 4) if stats["valid"] else None
        )
        per_formula[formula] = stats
        for key in totals:
            totals[key] += stats[key]
    columns = [
        "id",
        "formula",
        "composition",
        "chemsys",
        "nelements",
        "nsites",
        "generator",
        "target_formula",
        "parent",
        "formula_units",
        "min_distance",
        "n_duplicates",
    ]
    entries = pd.DataFrame(rows, columns=columns).astype(
        {
            "nelements": np.int64,
            "nsites": np.int64,
            "formula_units": np.int64,
            "min_distance": np.float64,
            "n_duplicates": np.int64,
        }
    )
    entries.insert(1, "source", "gan")
    rates = {
        f"{key}_rate": (round(totals[key] / totals["samples"], 4) if totals["samples"] else None)
        for key in ("lattice_ok", "composition_ok", "distance_ok", "valid")
    }
    summary = {
        "totals": {**totals, **rates},
        "unique_rate_of_valid": round(totals["unique"] / totals["valid"], 4)
        if totals["valid"]
        else None,
        "per_formula": per_formula,
        "composition_by_construction": use_counts,
        "validity": asdict(validity),
        "dedupe": {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0, "symprec": GAN_SYMPREC, "primitive_tol": GAN_PRIMITIVE_TOL, **dd},
    }
    return entries, keep, summary


def _atoms_per_formula_unit(formula: str) -> float:
    """Atoms in one formula unit of the reduced formula."""
    from pymatgen.core import Composition

    return float(Composition(formula).reduced_composition.num_atoms)


# -- plots ----------------------------------------------------------------------------------
def plot_history(history: pd.DataFrame, path: str | Path) -> None:
    """Training curves: critic loss and Wasserstein estimate; classifier accuracy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    if len(history):
        e = history["epoch"]
        axes[0].plot(e, history["critic_loss"], label="critic loss")
        axes[0].plot(e, history["generator_loss"], label="generator loss", alpha=0.7)
        axes[1].plot(e, history["wasserstein"], color="C2", label="W estimate")
        axes[1].plot(
            e, history["gradient_penalty"], color="C3", label="gradient penalty", alpha=0.7
        )
        axes[2].plot(e, history["classifier_acc_real"], label="real")
        axes[2].plot(e, history["classifier_acc_fake"], label="generated")
    axes[0].set_title("losses")
    axes[1].set_title("Wasserstein estimate")
    axes[2].set_title("composition classifier accuracy")
    axes[2].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- workflow entry points ------------------------------------------------------------------
def _write_json(path: str | Path, obj: Any) -> None:
    from matdisco.store import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def train_from_store(
    store: str | Path,
    *,
    elements: Sequence[str],
    data: Mapping[str, Any],
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    augment_settings: Mapping[str, Any],
    seed: int,
    device: str,
    ckpt_dir: str | Path,
    out_model: str | Path,
    out_history: str | Path,
    out_plot: str | Path,
    out_summary: str | Path,
    max_atoms: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
    """The ``train_gan`` stage: training set from the store, training (resumable), outputs.

    Args:
        store: the entry store.
        elements: target chemical system.
        data: ``gan.data`` config (max_sites (None = ``max_atoms``), slots, length_scale,
            supercells).
        model: ``gan.model`` config.
        train: ``gan.train`` config.
        augment_settings: ``gan.augment`` config (copies, translate, permute_axes).
        seed: random seed.
        device: ``auto`` | ``cpu`` | ``cuda``.
        ckpt_dir: checkpoint folder (kept between runs; not a workflow output).
        out_model: model file (.pt).
        out_history: training curves, CSV.
        out_plot: training curves, PNG.
        out_summary: JSON summary.
        max_atoms: ``target.max_atoms``, the default of ``data["max_sites"]``.
        threads: torch CPU threads.
    """
    from matdisco.provenance import package_versions

    t0 = time.perf_counter()
    ts = training_set_from_store(
        store,
        elements,
        max_sites=int(data.get("max_sites") or max_atoms),
        slots=data.get("slots"),
        length_scale=float(data.get("length_scale", 30.0)),
        use_supercells=bool(data.get("supercells", True)),
    )
    log.info(
        "training set: %d images (%d store structures, %d supercells), slots %s",
        len(ts.images),
        ts.n_base,
        len(ts.images) - ts.n_base,
        dict(zip(ts.spec.elements, ts.spec.slots, strict=True)),
    )
    st = GANSettings.from_config(model, train, augment_settings)
    gan, hist, info = train_gan(
        ts, st, seed=seed, device=device, ckpt_dir=ckpt_dir, threads=threads
    )
    info["training_set"] = {
        "structures": ts.n_base,
        "supercells": len(ts.images) - ts.n_base,
        "ids": ts.ids[: ts.n_base],
        "fingerprint": ts.fingerprint(),
        "compositions": sorted({tuple(int(x) for x in c) for c in ts.counts[: ts.n_base]}),
    }
    gan.info = info
    save_model(gan, out_model)
    from matdisco.store import atomic_write

    with atomic_write(out_history) as tmp:
        hist.to_csv(tmp, index=False)
    with atomic_write(out_plot, suffix=".png") as tmp:
        plot_history(hist, tmp)
    summary = {
        **info,
        "spec": ts.spec.to_dict(),
        "settings": asdict(st),
        "final": hist.iloc[-1].to_dict() if len(hist) else {},
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "packages": package_versions(["torch", "numpy", "pymatgen", "matdisco"]),
    }
    _write_json(out_summary, summary)
    return summary


def generate_from_model(
    model_path: str | Path,
    formulas: Sequence[str],
    *,
    sample: Mapping[str, Any],
    validity: Mapping[str, Any],
    dedupe: Mapping[str, Any],
    seed: int,
    device: str,
    out_store: str | Path,
    out_cifs: str | Path,
    out_summary: str | Path,
    max_atoms: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
    """The ``generate_gan`` stage: sample, validate, deduplicate, write store + CIFs + summary.

    Args:
        model_path: model written by ``train_gan``.
        formulas: target reduced formulas.
        sample: ``gan.sample`` config (per_composition, max_sites (None = ``max_atoms``)).
        validity: ``gan.validity`` config.
        dedupe: ``gan.dedupe`` config (ltol, stol, angle_tol).
        seed: random seed of the noise.
        device: ``auto`` | ``cpu`` | ``cuda``.
        out_store: candidates in the store format (source ``gan``).
        out_cifs: folder for one CIF per candidate.
        out_summary: JSON summary (validity, uniqueness).
        max_atoms: ``target.max_atoms``, the default of ``sample["max_sites"]``.
        threads: torch CPU threads.
    """
    from matdisco.provenance import package_versions
    from matdisco.store import StructureArrays, write_store

    if threads is not None:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    model = load_model(model_path, device=str(pick_device(device)))
    entries, structures, summary = generate_structures(
        model,
        list(formulas),
        n_per_composition=int(sample["per_composition"]),
        max_sites=int(sample.get("max_sites") or max_atoms),
        validity=ValiditySettings.from_dict(validity),
        dedupe=dedupe,
        seed=seed,
    )
    seconds = time.perf_counter() - t0
    summary["targets"] = list(formulas)
    summary["seconds"] = round(seconds, 2)
    n = summary["totals"]["samples"]
    summary["samples_per_second"] = round(n / seconds, 1) if seconds > 0 else None
    summary["model"] = {
        "path": str(model_path),
        "fingerprint": model.info.get("fingerprint"),
        "spec": model.spec.to_dict(),
    }
    provenance = {
        "generator": "wgan_gp",
        "model_fingerprint": model.info.get("fingerprint"),
        "targets": list(formulas),
        "seed": seed,
        "sample": dict(sample),
        "validity": dict(validity),
        "dedupe": dict(dedupe),
        "packages": package_versions(["torch", "numpy", "pymatgen", "matdisco"]),
    }
    write_store(
        out_store,
        entries,
        StructureArrays.from_structures(structures),
        data_source="gan",
        provenance=provenance,
    )
    cif_dir = Path(out_cifs)
    cif_dir.mkdir(parents=True, exist_ok=True)
    from pymatgen.io.cif import CifWriter

    for sid, s in zip(entries.get("id", []), structures, strict=True):
        CifWriter(s).write_file(cif_dir / f"{sid}.cif")
    _write_json(out_summary, summary)
    log.info(
        "%d samples: %.1f%% valid (distance %.1f%%, composition %.1f%%, lattice %.1f%%), %d unique",
        n,
        100 * (summary["totals"]["valid_rate"] or 0),
        100 * (summary["totals"]["distance_ok_rate"] or 0),
        100 * (summary["totals"]["composition_ok_rate"] or 0),
        100 * (summary["totals"]["lattice_ok_rate"] or 0),
        summary["totals"]["unique"],
    )
    return summary
