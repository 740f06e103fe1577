"""Networks of the WGAN-GP (generator, critic, composition classifier), their differentiable
geometry helpers (lattice matrix, pair distances, distance features, contact penalty) and the
model file (:func:`save_model` / :func:`load_model`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from matdisco.generate.pointcloud import PointCloudSpec
from matdisco.settings import GANModelSettings, GANSettings

__all__ = [
    "MODEL_FORMAT",
    "pick_device",
    "DistanceFeatures",
    "ContactPenalty",
    "Generator",
    "Critic",
    "CompositionClassifier",
    "GANModel",
    "save_model",
    "load_model",
]

#: format tag of the model file (v2: settings are the nested ``gan`` config section)
MODEL_FORMAT = "matdisco.wgan_gp.v2"


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


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

    ``init="he"`` draws the hidden layers' weights with He (Kaiming) normal initialisation
    (std sqrt(2 / fan_in), zero bias) and the output layer's with std sqrt(1 / fan_in) (the
    six lattice outputs 0.1 sqrt(1 / fan_in)), so the noise reaches the atom rows: for the
    default sizes the untrained generator's images of one composition lie a median L1 of
    0.078 (image units) apart, against 0.167 between training structures. ``init="torch"``
    keeps torch's default (Kaiming uniform with a = sqrt(5)), which shrinks the signal at
    every ReLU layer: the untrained generator maps every noise vector to nearly the same image
    (median L1 0.003; pre-sigmoid std over the noise 0.02), a collapsed start.
    """

    def __init__(
        self,
        spec: PointCloudSpec,
        latent_dim: int,
        hidden: int,
        mask_composition: bool = True,
        init: str = "torch",
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
        if init not in ("torch", "he"):
            raise ValueError(f"generator init {init!r}: expected 'torch' or 'he'")
        with torch.no_grad():
            if init == "he":
                linears = [m for m in self.net if isinstance(m, nn.Linear)]
                for layer in linears[:-1]:
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
                nn.init.normal_(linears[-1].weight, std=linears[-1].in_features ** -0.5)
                # the 6 lattice outputs start 10x quieter: untrained cells stay near the
                # training mean (angles and volume valid); the atoms carry the noise
                linears[-1].weight[:6] *= 0.1
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

    With ``pack`` > 1 (PacGAN, Lin et al., NeurIPS 2018) the critic scores packs of ``pack``
    consecutive images jointly (their features concatenated): the batch must be ordered so that
    each pack holds images of one composition (:func:`matdisco.generate.gan.train._epoch_order`
    does that), so a generator that maps different noise of one composition to the same
    structure gives packs of identical images, which real packs never are. Output: one score
    per pack, (B / pack,).
    """

    def __init__(
        self,
        spec: PointCloudSpec,
        hidden: int,
        distance_features: int = 0,
        minibatch_std: bool = False,
        pack: int = 1,
    ):
        super().__init__()
        self.spec = spec
        self.minibatch_std = minibatch_std
        self.pack = max(1, int(pack))
        self.dist = DistanceFeatures(spec, distance_features) if distance_features > 0 else None
        n_in = (
            spec.n_rows * 3
            + 1
            + (spec.n_slots * self.dist.k if self.dist is not None else 0)
            + int(minibatch_std)
        ) * self.pack
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
        """Scores (B / pack,) of images (B, n_rows, 3); B must be a multiple of ``pack``."""
        if x.shape[0] % self.pack:
            raise ValueError(f"batch of {x.shape[0]} images is not a multiple of pack {self.pack}")
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
        return self.net(h.reshape(h.shape[0] // self.pack, -1)).squeeze(1)


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
    spec: PointCloudSpec, model: GANModelSettings
) -> tuple[Generator, Critic, CompositionClassifier]:
    """The three networks of a layout and ``gan.model`` settings (in this order: seeded)."""
    return (
        Generator(
            spec, model.latent_dim, model.hidden, model.mask_composition, model.generator_init
        ),
        Critic(spec, model.hidden, model.distance_features, model.minibatch_std, model.pack),
        CompositionClassifier(spec, model.hidden),
    )


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


def save_model(model: GANModel, path: str | Path) -> None:
    """Write the trained networks, layout and settings to one file (atomically)."""
    obj = {
        "format": MODEL_FORMAT,
        "spec": model.spec.to_dict(),
        "settings": model.settings.to_dict(),
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
    if obj.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path}: not a matdisco WGAN-GP model of format {MODEL_FORMAT} "
            f"(found {obj.get('format')!r}); retrain it (rule train_gan)"
        )
    spec = PointCloudSpec.from_dict(obj["spec"])
    st = GANSettings.from_config(obj["settings"])
    gen, _, cls = _build(spec, st.model)
    gen.load_state_dict(obj["generator"])
    if obj.get("classifier") is not None:
        cls.load_state_dict(obj["classifier"])
    else:
        cls = None
    dev = pick_device(device)
    return GANModel(
        spec, st, gen.to(dev).eval(), cls.to(dev).eval() if cls else None, obj.get("info", {})
    )
