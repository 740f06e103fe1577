#!/usr/bin/env python
"""Benchmark: WGAN-GP structure generator speed, and a reproduction check on Kim et al.'s data.

Writes benchmarks/results/gan.json:

* ``cpu``: seconds per training epoch (wall and CPU time) of the default configuration on the
  Mg-Mn-O training set from the bundled store, raw sampling speed (images/s) and end-to-end
  speed (sample + decode + validity checks, structures/s) with validity rates;
* ``cuda``: the same on the GPU when one is available (else the reason it is absent);
* ``kim_reproduction``: the Mg-Mn-O training images of the Composition-Conditioned Crystal GAN
  (Kim, Noh, Gu, Aspuru-Guzik, Jung, ACS Cent. Sci. 6, 1412 (2020); github.com/kaist-amsg/
  Composition-Conditioned-Crystal-GAN, no licence: used here only as a reproduction benchmark,
  read from ../shared/data/raw/ccgan_mgmno/ and never copied) decoded with this
  representation (compatibility: decode, re-encode, distances), then a brief training on them
  and the validity of samples for their most common compositions. Skipped with a message when
  the data are absent.

* ``diversity`` (issue 13): the default configuration trained for its full epochs on the
  substitution training set (built from the bundled store like rule build_gan_training_set),
  then 300 samples for each of 4 target compositions (1,200): validity, uniqueness of valid
  (with 95 % Wilson intervals), novelty against the training set and the known Mg-Mn-O
  structures, COV-R/COV-P, s/epoch, samples/s and the CPU time of training + generation; the
  configured split of samples over cell sizes (gan.sample.cell_sizes) beside the other one on
  the same model. Goal: uniqueness >= 50 % of valid at validity >= 90 % on 2 cores.

Usage: python benchmarks/gan.py [--epochs 5] [--samples 1000] [--kim-epochs 5] [--threads 1]
       [--skip-diversity]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import peak_rss_mb, write  # noqa: E402

from matdisco.config import validate_config  # noqa: E402
from matdisco.generate import gan as G  # noqa: E402
from matdisco.generate.pointcloud import (  # noqa: E402
    PointCloudSpec,
    check_validity,
    counts_of,
    min_distances,
    sort_slots,
)
from matdisco.settings import GANSettings, GANValiditySettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KIM_DIR = ROOT.parent / "shared/data/raw/ccgan_mgmno"
TARGETS = ["MgMn2O4", "Mg2MnO4", "MgMnO3", "MgMn3O8", "Mg3MnO4", "Mg2Mn3O8"]


def default_config() -> dict:
    """config/config.yaml with schema defaults filled in."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate_config(cfg, ROOT / "workflow/schemas/config.schema.yaml")
    return cfg


def settings_of(cfg: dict, epochs: int, copies: int | None = None) -> GANSettings:
    """The configured ``gan`` settings with other epochs (and augmented copies)."""
    st = GANSettings.from_config(cfg["gan"])
    st = replace(st, train=replace(st.train, epochs=epochs))
    if copies is not None:
        st = replace(st, augment=replace(st.augment, copies=copies))
    return st


def time_training(
    data: G.TrainingSet, st: GANSettings, device: str, threads: int
) -> tuple[G.GANModel, dict]:
    """Train from scratch and time it (wall and CPU seconds per epoch)."""
    c0, w0 = time.process_time(), time.perf_counter()
    model, hist, info = G.train_gan(data, st, seed=0, device=device, threads=threads)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return model, {
        "epochs": st.train.epochs,
        "training_images": len(data.images),
        "images_per_epoch": len(data.images) * st.augment.copies,
        "generator_steps_per_epoch": int(hist["generator_steps"].iloc[0]),
        "seconds_per_epoch_wall": round(wall / st.train.epochs, 3),
        "seconds_per_epoch_cpu": round(cpu / st.train.epochs, 3),
        "final_wasserstein": round(float(hist["wasserstein"].iloc[-1]), 4),
    }


def time_sampling(model: G.GANModel, n: int, max_sites: int, validity: GANValiditySettings) -> dict:
    """Sampling speed, raw and with decoding + validity checks, for MgMn2O4."""
    counts = G.formula_multiples("MgMn2O4", model.spec, max_sites)[-1]
    w0 = time.perf_counter()
    imgs = G.sample_images(model, counts, n, seed=0)
    raw = time.perf_counter() - w0
    w0 = time.perf_counter()
    res = [
        check_validity(
            x, model.spec, counts, validity, use_counts=model.settings.model.mask_composition
        )
        for x in imgs
    ]
    check = time.perf_counter() - w0
    return {
        "composition": list(counts),
        "samples": n,
        "raw_images_per_second": round(n / raw, 1),
        "decode_and_check_per_second": round(n / (raw + check), 1),
        "valid_rate": round(float(np.mean([r["valid"] for r in res])), 4),
        "distance_ok_rate": round(float(np.mean([r["distance_ok"] for r in res])), 4),
        "lattice_ok_rate": round(float(np.mean([r["lattice_ok"] for r in res])), 4),
    }


def diversity(cfg: dict, threads: int) -> dict:
    """Full default training on the substitution training set; 1,200 samples over 4 targets."""
    import tempfile

    from matdisco.generate.gan.metrics import novelty_and_coverage, system_structures
    from matdisco.generate.gan.sample import match_settings
    from matdisco.generate.gan.training_set import build_gan_training_set
    from matdisco.settings import GANTrainingSetSettings

    g = cfg["gan"]
    store = ROOT / cfg["data"]["bundled"]["structures"]
    elements = cfg["target"]["elements"]
    max_sites = g["data"]["max_sites"] or cfg["target"]["max_atoms"]
    st = GANSettings.from_config(g)
    with tempfile.TemporaryDirectory() as tmp:
        w0 = time.perf_counter()
        ts_summary = build_gan_training_set(
            store,
            elements=elements,
            oxidation_states=cfg["target"]["oxidation_states"],
            max_atoms=cfg["target"]["max_atoms"],
            settings=GANTrainingSetSettings.from_config(g["training_set"]),
            out_store=Path(tmp) / "ts.h5",
            out_summary=Path(tmp) / "ts.json",
        )
        build_s = time.perf_counter() - w0
        data = G.training_set_from_store(
            Path(tmp) / "ts.h5",
            elements,
            max_sites=max_sites,
            slots=st.data.slots,
            length_scale=st.data.length_scale,
            use_supercells=st.data.supercells,
        )
        training = system_structures(Path(tmp) / "ts.h5", elements)[1]
    c0 = time.process_time()
    model, train = time_training(data, st, "cpu", threads)
    train_cpu = time.process_time() - c0
    known = system_structures(store, elements)[1]
    runs = {}
    # the shipped split (gan.sample.cell_sizes) and, as the baseline on the same model, the other
    for how in dict.fromkeys([st.sample.cell_sizes, "equal", "sites"]):
        w0, c0 = time.perf_counter(), time.process_time()
        _, structures, summ = G.generate_structures(
            model,
            TARGETS[:4],
            n_per_composition=300,
            max_sites=max_sites,
            validity=st.validity,
            dedupe=st.dedupe,
            seed=st.seed,
            cell_sizes=how,
        )
        sample_s, sample_cpu = time.perf_counter() - w0, time.process_time() - c0
        novelty, _, _ = novelty_and_coverage(structures, training, known, match_settings(st.dedupe))
        tot = summ["totals"]
        runs[how] = {
            "samples": tot["samples"],
            "valid": tot["valid"],
            "valid_rate": tot["valid_rate"],
            "valid_rate_ci95": wilson(tot["valid"], tot["samples"]),
            "unique": tot["unique"],
            "unique_rate_of_valid": summ["unique_rate_of_valid"],
            "unique_rate_of_valid_ci95": wilson(tot["unique"], tot["valid"]),
            "invalid_reasons": dict(
                sum(
                    (Counter(v.get("invalid_reasons", {})) for v in summ["per_formula"].values()),
                    Counter(),
                )
            ),
            "per_formula": {
                f: {
                    k: v.get(k)
                    for k in ("valid", "unique", "unique_rate_of_valid", "samples_per_multiple")
                }
                for f, v in summ["per_formula"].items()
            },
            "novelty": novelty["totals"],
            "samples_per_second": round(tot["samples"] / sample_s, 1),
            "generate_cpu_seconds": round(sample_cpu, 1),
            "goal_met": bool(
                (tot["valid_rate"] or 0) >= 0.9 and (summ["unique_rate_of_valid"] or 0) >= 0.5
            ),
        }
    shipped = runs[st.sample.cell_sizes]
    return {
        "training_set": {k: v for k, v in ts_summary.items() if k != "structures_per_composition"},
        "training_set_build_seconds": round(build_s, 1),
        "train": train,
        "train_cpu_seconds": round(train_cpu, 1),
        "train_plus_generate_cpu_minutes": round(
            (train_cpu + shipped["generate_cpu_seconds"]) / 60, 2
        ),
        "targets": TARGETS[:4],
        "model": {k: getattr(st.model, k) for k in ("latent_dim", "hidden", "diversity_weight")}
        | {"pack": st.model.pack, "generator_init": st.model.generator_init},
        "cell_sizes_shipped": st.sample.cell_sizes,
        **{k: shipped[k] for k in ("samples", "valid_rate", "unique_rate_of_valid", "goal_met")},
        "by_cell_sizes": runs,
        "note": f"one training seed (gan.seed = {st.seed}); the {st.train.epochs}-epoch CPU "
        "training varies from seed to seed (docs/metrics.md, section 8); CPU seconds on a "
        "shared 2-core machine",
    }


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """95 % Wilson score interval of the proportion k / n (None when n = 0)."""
    if n == 0:
        return None
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [round(float(mid - half), 4), round(float(mid + half), 4)]


def kim_training_set() -> tuple[G.TrainingSet, dict]:
    """Kim et al.'s (2627, 30, 3) images as a TrainingSet, plus compatibility checks."""
    arr = np.load(KIM_DIR / "unique_sc_mgmno.npy")
    names_file = KIM_DIR / "unique_sc_mgmno_name_list.derived.txt"
    names = (
        names_file.read_text().split()
        if names_file.exists()
        else [f"kim-{i}" for i in range(len(arr))]
    )
    spec = PointCloudSpec(("Mg", "Mn", "O"), (8, 8, 12))
    images, counts, ratios, max_err, failures = [], [], [], 0.0, 0
    for img in arr:
        try:
            s = spec.decode(img)  # the paper's rule: rows with coordinate sum > 0.4
        except ValueError:
            failures += 1
            continue
        c = counts_of(s, spec.elements)
        again = spec.encode(s)
        m = spec.mask(c)
        # atom order within a block is free: compare sorted (rounded, so float noise cannot
        # flip the order of atoms with equal x)
        a = sort_slots(again.round(9)[None], m[None], spec)[0]
        b = sort_slots(img.round(9)[None], m[None], spec)[0]
        max_err = max(max_err, float(np.abs(a - b).max()))
        D, R = min_distances(s)
        ratios.append(float((D / R).min()))
        images.append(a)
        counts.append(c)
    images_a = np.stack(images)
    ids = [f"{n}#{i}" for i, n in enumerate(names[: len(images)])]
    ts = G.TrainingSet(spec, images_a, np.array(counts), ids, n_base=len(images))
    comp = Counter(tuple(c) for c in counts)
    check = {
        "images": int(len(arr)),
        "decoded": len(images),
        "decode_failures": failures,
        "reencode_max_abs_error": max_err,
        "min_distance_ratio_percentiles_0_1_50": [
            round(float(x), 3) for x in np.percentile(ratios, [0, 1, 50])
        ],
        "distance_valid_rate_at_0.5": round(float(np.mean(np.array(ratios) >= 0.5)), 4),
        "compositions": len(comp),
        "most_common": [[list(k), v] for k, v in comp.most_common(4)],
    }
    return ts, check


def main() -> int:
    """Run the benchmark and write benchmarks/results/gan.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="epochs timed (default config otherwise)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--kim-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-kim", action="store_true")
    ap.add_argument("--skip-diversity", action="store_true")
    args = ap.parse_args()
    cfg = default_config()
    g = cfg["gan"]
    max_sites = g["data"]["max_sites"] or cfg["target"]["max_atoms"]
    validity = GANValiditySettings.from_config(g["validity"])
    t0 = time.perf_counter()
    data = G.training_set_from_store(
        ROOT / cfg["data"]["bundled"]["structures"],
        cfg["target"]["elements"],
        max_sites=max_sites,
        slots=g["data"]["slots"],
        length_scale=g["data"]["length_scale"],
        use_supercells=g["data"]["supercells"],
    )
    result: dict = {
        "training_set": {
            "structures": data.n_base,
            "supercells": len(data.images) - data.n_base,
            "slots": dict(zip(data.spec.elements, data.spec.slots, strict=True)),
            "seconds_to_build": round(time.perf_counter() - t0, 2),
        },
        "default_epochs": g["train"]["epochs"],
        "threads": args.threads,
    }
    st = settings_of(cfg, epochs=args.epochs)
    model, train = time_training(data, st, "cpu", args.threads)
    result["cpu"] = {
        "train": train,
        "default_run_train_seconds_estimate": round(
            train["seconds_per_epoch_wall"] * g["train"]["epochs"], 1
        ),
        "sample": time_sampling(model, args.samples, max_sites, validity),
        "note": f"{args.epochs} epochs from scratch: validity here is of an undertrained model",
    }
    if torch.cuda.is_available():
        model_c, train_c = time_training(data, st, "cuda", args.threads)
        result["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            "train": train_c,
            "sample": time_sampling(model_c, args.samples, max_sites, validity),
        }
    else:
        result["cuda"] = {"skipped": "no CUDA device on this machine"}
    if args.skip_kim:
        result["kim_reproduction"] = {"skipped": "--skip-kim"}
    elif not (KIM_DIR / "unique_sc_mgmno.npy").exists():
        msg = f"{KIM_DIR} not found: Kim et al. (2020) reproduction skipped"
        print(msg, file=sys.stderr)
        result["kim_reproduction"] = {"skipped": msg}
    else:
        kim, check = kim_training_set()
        st_k = settings_of(cfg, epochs=args.kim_epochs, copies=1)
        w0 = time.perf_counter()
        model_k, hist_k, info_k = G.train_gan(kim, st_k, seed=0, device="cpu", threads=args.threads)
        train_s = time.perf_counter() - w0
        targets = [
            ("".join(f"{e}{n}" for e, n in zip(kim.spec.elements, k, strict=True)), k)
            for k, _ in check["most_common"]
        ]
        samples = {}
        for name, counts in targets:
            imgs = G.sample_images(model_k, counts, 250, seed=1)
            res = [
                check_validity(
                    x, kim.spec, counts, validity, use_counts=st_k.model.mask_composition
                )
                for x in imgs
            ]
            samples[name] = {
                key: round(float(np.mean([r[key] for r in res])), 4)
                for key in ("valid", "distance_ok", "composition_ok", "lattice_ok")
            }
            valid = [r["structure"] for r in res if r["valid"]]
            samples[name]["unique_of_valid"] = len(G.dedupe_structures(valid))
        result["kim_reproduction"] = {
            "source": "Kim et al., ACS Cent. Sci. 6, 1412 (2020); "
            "kaist-amsg/Composition-Conditioned-Crystal-GAN @ 35cf6d0a",
            "compatibility": check,
            "train": {
                "epochs": args.kim_epochs,
                "copies": 1,
                "seconds": round(train_s, 1),
                "seconds_per_epoch": round(train_s / args.kim_epochs, 2),
                "final_wasserstein": round(float(hist_k["wasserstein"].iloc[-1]), 4),
            },
            "samples_per_composition": 250,
            "validity_by_composition": samples,
        }
    if args.skip_diversity:
        result["diversity"] = {"skipped": "--skip-diversity"}
    else:
        result["diversity"] = diversity(cfg, args.threads)
        if not torch.cuda.is_available():
            result["diversity"]["cuda"] = "no CUDA device on this machine"
    result["validity_settings"] = validity.to_dict()
    result["peak_rss_mb"] = peak_rss_mb()
    write("gan", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
