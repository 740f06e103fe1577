"""Training of the WGAN-GP: gradient penalty, random composition masks, resumable checkpoints
with a fingerprint of data, settings and code, and the ``train_gan`` stage.

Training is resumable: a checkpoint (all weights, optimiser states, the noise generator state
and the history) is written atomically every ``checkpoint_every`` epochs; a later call with
the same data and settings (the number of epochs may differ) continues from it. On CPU with a
fixed seed and thread count the result is bitwise identical to an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from matdisco.generate.gan.data import TrainingSet, training_set_from_store
from matdisco.generate.gan.nets import (
    ContactPenalty,
    Critic,
    GANModel,
    _atomic_torch_save,
    _build,
    pick_device,
    save_model,
)
from matdisco.generate.gan.plots import plot_history
from matdisco.generate.pointcloud import PointCloudSpec, augment
from matdisco.settings import GANSettings

__all__ = ["CKPT_NAME", "resume_key", "train_gan", "train_from_store", "write_json"]

log = logging.getLogger(__name__)

CKPT_NAME = "last.pt"


def _code_version() -> str:
    """Hash of every matdisco source file the GAN package imports (its own modules included).

    Taken over :func:`matdisco.provenance.import_closure` of the package's ``__init__.py``, so
    editing any module of the package, or one it imports (point cloud, settings, matching ...),
    invalidates checkpoints.
    """
    from matdisco.provenance import script_code_hash

    return script_code_hash(Path(__file__).with_name("__init__.py"))


def resume_key(settings: GANSettings) -> dict[str, Any]:
    """Settings a checkpoint must agree on to be resumed: ``gan.model``, ``gan.augment`` and
    ``gan.train`` except ``epochs`` and ``checkpoint_every``."""
    train = settings.train.to_dict()
    train.pop("epochs")
    train.pop("checkpoint_every")
    return {
        "model": settings.model.to_dict(),
        "augment": settings.augment.to_dict(),
        "train": train,
    }


def _fingerprint(data: TrainingSet, st: GANSettings, seed: int) -> str:
    blob = json.dumps(
        {
            "data": data.fingerprint(),
            "settings": resume_key(st),
            "seed": seed,
            "code": _code_version(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017) on interpolates; with a packing critic the
    gradient norm is taken per pack (the critic's input is the pack), so ``eps`` must be
    constant within a pack."""
    inter = (eps * real + (1 - eps) * fake).requires_grad_(True)
    score = critic(inter)
    (grad,) = torch.autograd.grad(score.sum(), inter, create_graph=True)
    grad = grad.reshape(grad.shape[0] // critic.pack, -1)
    return ((grad.norm(2, dim=1) - 1.0) ** 2).mean()


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
    n: int, copies: int, seed: int, epoch: int, counts: np.ndarray | None = None, pack: int = 1
) -> tuple[np.ndarray, np.random.Generator]:
    """The epoch's image order (indices into the training set) and its random generator.

    ``pack`` = 1: a permutation of every image ``copies`` times. ``pack`` > 1: the order is made
    of packs of ``pack`` consecutive images of one composition (rows of ``counts``), packs in
    random order; a composition whose image count (times ``copies``) is not a multiple of
    ``pack`` has its last pack filled with images of that composition drawn at random (a
    composition with one structure gives packs of differently augmented copies of it).
    """
    rng = np.random.default_rng([seed, epoch])
    if pack <= 1 or counts is None:
        return rng.permutation(np.tile(np.arange(n), copies)), rng
    _, inverse = np.unique(np.asarray(counts)[:n], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    packs = []
    for g in range(int(inverse.max()) + 1):
        idx = rng.permutation(np.tile(np.flatnonzero(inverse == g), copies))
        short = -len(idx) % pack
        if short:
            idx = np.concatenate([idx, rng.choice(idx, size=short)])
        packs.append(idx.reshape(-1, pack))
    all_packs = np.concatenate(packs)
    return all_packs[rng.permutation(len(all_packs))].reshape(-1), rng


def train_gan(
    data: TrainingSet,
    settings: GANSettings,
    *,
    seed: int | None = None,
    device: str | None = None,
    ckpt_dir: str | Path | None = None,
    threads: int | None = None,
    time_limit_s: float | None = None,
    monitor: Callable[[GANModel], dict[str, float]] | None = None,
    monitor_every: int = 1,
) -> tuple[GANModel, pd.DataFrame, dict[str, Any]]:
    """Train the WGAN-GP (resuming from ``ckpt_dir/last.pt`` when it matches).

    Args:
        data: encoded training images.
        settings: the ``gan`` config section (``model``, ``train`` and ``augment`` are used).
        seed: seed of weights, data order, augmentation and noise (None = ``settings.seed``).
        device: ``auto`` | ``cpu`` | ``cuda[:N]`` (None = ``settings.device``).
        ckpt_dir: folder of the checkpoint (None = no checkpoints).
        threads: torch CPU threads (None = leave as is).
        time_limit_s: stop after the epoch during which this many seconds passed (checkpoint
            written); None = no limit. Meant for interactive use, not for reproducible runs.
        monitor: called with the current model every ``monitor_every`` epochs (and after the
            last); its numbers join the epoch's history row (e.g.
            :func:`matdisco.generate.gan.metrics.diversity_monitor`). It must not draw from
            torch's global random state (the training stays bitwise reproducible).
        monitor_every: epochs between monitor calls.

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
    st = settings
    mo, tr, au = st.model, st.train, st.augment
    seed = st.seed if seed is None else int(seed)
    dev = pick_device(st.device if device is None else device)
    fp = _fingerprint(data, st, seed)
    det_prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
    try:
        torch.manual_seed(seed)
        gen, critic, cls = _build(data.spec, mo)
        gen.init_lattice(data.images[:, :2].mean(0))
        gen, critic, cls = gen.to(dev), critic.to(dev), cls.to(dev)
        betas = (tr.beta1, tr.beta2)
        opt_g = torch.optim.Adam(gen.parameters(), lr=tr.lr, betas=betas)
        opt_d = torch.optim.Adam(critic.parameters(), lr=tr.lr, betas=betas)
        opt_c = torch.optim.Adam(cls.parameters(), lr=tr.lr, betas=betas)
        contact = (
            ContactPenalty(data.spec, mo.contact_margin).to(dev) if mo.contact_penalty > 0 else None
        )
        noise = torch.Generator().manual_seed(seed + 1)  # CPU stream, same draws on any device
        history: list[dict[str, float]] = []
        start = 0
        ckpt = Path(ckpt_dir) / CKPT_NAME if ckpt_dir is not None else None
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location=dev, weights_only=False)
            if state.get("fingerprint") != fp:
                log.warning("checkpoint %s is from other data/settings/code: starting afresh", ckpt)
            elif state["epoch"] > tr.epochs:
                log.warning(
                    "checkpoint %s is at epoch %d > %d epochs: starting afresh",
                    ckpt,
                    state["epoch"],
                    tr.epochs,
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
        for epoch in range(start, tr.epochs):
            t0 = time.perf_counter()
            order, rng = _epoch_order(
                len(data.images), au.copies, seed, epoch, counts_all, pack=mo.pack
            )
            imgs = augment(
                data.images[order],
                masks_all[order],
                spec,
                rng,
                translate_atoms=au.translate,
                permute=au.permute_axes,
            )
            real_all = torch.as_tensor(imgs, dtype=torch.float32)
            mask_all = torch.as_tensor(masks_all[order], dtype=torch.float32)
            cnt_all = torch.as_tensor(counts_all[order], dtype=torch.int64)
            # a batch is whole packs: batch_size rounded down to a multiple of pack (>= 1 pack)
            bsz = max(mo.pack, tr.batch_size - tr.batch_size % mo.pack)
            n_batches = max(1, len(order) // bsz)
            if n_batches < tr.n_critic and epoch == start:
                log.warning(
                    "an epoch has %d batches of %d images, fewer than n_critic = %d: the "
                    "generator gets no step and does not train; lower gan.train.batch_size or "
                    "n_critic, or raise gan.augment.copies",
                    n_batches,
                    bsz,
                    tr.n_critic,
                )
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
                sl = slice(k * bsz, (k + 1) * bsz)
                real = real_all[sl].to(dev)
                mask = mask_all[sl].to(dev)
                cnt = cnt_all[sl].to(dev)
                b = len(real)
                z = torch.randn(b, mo.latent_dim, generator=noise).to(dev)
                eps = (
                    torch.rand(b // mo.pack, 1, 1, generator=noise)
                    .repeat_interleave(mo.pack, dim=0)
                    .to(dev)
                )
                # critic
                with torch.no_grad():
                    fake = gen(z, mask)
                if mo.instance_noise > 0:
                    m3 = mask[:, :, None]
                    real = (
                        real
                        + mo.instance_noise * torch.randn(real.shape, generator=noise).to(dev) * m3
                    )
                    fake = (
                        fake
                        + mo.instance_noise * torch.randn(fake.shape, generator=noise).to(dev) * m3
                    )
                d_real = critic(real).mean()
                d_fake = critic(fake).mean()
                gp = _gradient_penalty(critic, real, fake, eps)
                loss_d = d_fake - d_real + tr.gp_lambda * gp
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
                if (k + 1) % tr.n_critic == 0:
                    z = torch.randn(b, mo.latent_dim, generator=noise).to(dev)
                    fake = gen(z, mask)
                    loss_cf, acc_f = cls.loss_and_accuracy(fake, cnt)
                    loss_g = -critic(fake).mean() + tr.cls_weight * loss_cf
                    if mo.diversity_weight > 0:
                        # mode seeking (Mao et al., CVPR 2019): penalise two noise vectors that
                        # give (nearly) the same image
                        z2 = torch.randn(b, mo.latent_dim, generator=noise).to(dev)
                        # atom rows only: the cell is left to the critic
                        ratio = (fake - gen(z2, mask))[:, 2:].abs().flatten(1).mean(1) / (
                            (z - z2).abs().mean(1)
                        )
                        loss_g = loss_g + mo.diversity_weight / (ratio.mean() + 1e-5)
                    if contact is not None:
                        pen = contact(fake)
                        if mo.contact_random:
                            rmask = torch.as_tensor(
                                _random_masks(spec, b, max_cell, rng), dtype=torch.float32
                            ).to(dev)
                            zr = torch.randn(b, mo.latent_dim, generator=noise).to(dev)
                            pen = 0.5 * (pen + contact(gen(zr, rmask)))
                        loss_g = loss_g + mo.contact_penalty * pen
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
            if monitor is not None and (
                (epoch + 1) % max(1, monitor_every) == 0 or epoch + 1 == tr.epochs
            ):
                row.update(monitor(GANModel(data.spec, st, gen, cls, {})))
            history.append(row)
            epochs_run += 1
            if (epoch + 1) % tr.checkpoint_every == 0 or epoch + 1 == tr.epochs:
                save_ckpt(epoch + 1)
            if (epoch + 1) % max(1, tr.epochs // 10) == 0 or epoch == start:
                log.info(
                    "epoch %d/%d: W %.3f, critic %.3f, cls acc real %.2f fake %.2f (%.2f s)",
                    epoch + 1,
                    tr.epochs,
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
        "images_per_epoch": len(data.images) * au.copies,
    }
    model = GANModel(data.spec, st, gen.eval(), cls.eval(), info)
    model._critic = critic.eval()  # type: ignore[attr-defined]  # kept for save_model
    return model, hist, info


# -- workflow entry point -------------------------------------------------------------------
def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    from matdisco.store import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def train_from_store(
    store: str | Path,
    *,
    elements: Sequence[str],
    settings: GANSettings,
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
        settings: the ``gan`` config section (data, augment, model, train, seed, device).
        ckpt_dir: checkpoint folder (kept between runs; not a workflow output).
        out_model: model file (.pt).
        out_history: training curves, CSV.
        out_plot: training curves, PNG.
        out_summary: JSON summary.
        max_atoms: ``target.max_atoms``, the default of ``settings.data.max_sites``.
        threads: torch CPU threads.
    """
    from matdisco.provenance import package_versions

    t0 = time.perf_counter()
    ts = training_set_from_store(
        store,
        elements,
        max_sites=settings.data.max_sites or max_atoms,
        slots=settings.data.slots,
        length_scale=settings.data.length_scale,
        use_supercells=settings.data.supercells,
    )
    log.info(
        "training set: %d images (%d store structures, %d supercells), slots %s",
        len(ts.images),
        ts.n_base,
        len(ts.images) - ts.n_base,
        dict(zip(ts.spec.elements, ts.spec.slots, strict=True)),
    )
    from matdisco.generate.gan.metrics import MONITOR_EVERY_FRACTION, diversity_monitor

    common = Counter(tuple(int(x) for x in c) for c in ts.counts).most_common(4)
    gan, hist, info = train_gan(
        ts,
        settings,
        ckpt_dir=ckpt_dir,
        threads=threads,
        monitor=diversity_monitor([c for c, _ in common], settings),
        monitor_every=max(1, int(settings.train.epochs * MONITOR_EVERY_FRACTION)),
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
        "settings": settings.to_dict(),
        "final": hist.iloc[-1].to_dict() if len(hist) else {},
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "packages": package_versions(["torch", "numpy", "pymatgen", "matdisco"]),
    }
    write_json(out_summary, summary)
    return summary
