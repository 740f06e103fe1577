"""Typed settings of the structure generators (target compositions, templates, WGAN-GP).

Drafted from workflow/schemas/config.schema.yaml by scripts/gen_settings.py; the schema
and these classes are kept in agreement by tests/test_settings.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from matdisco.settings._base import SettingsBase

__all__ = [
    "GenerateSettings",
    "TemplateSettings",
    "GANDataSettings",
    "GANTrainingSetSettings",
    "GANAugmentSettings",
    "GANModelSettings",
    "GANTrainSettings",
    "GANSampleSettings",
    "GANValiditySettings",
    "GANDedupeSettings",
    "GANSettings",
]


@dataclass(frozen=True)
class GenerateSettings(SettingsBase):
    """``generate``: target compositions shared by the structure generators (WGAN-GP and templates).

    Attributes:
        n_top: number of best-ranked proposals (proposals/proposals.csv) to generate structures for
        compositions: explicit formulas to generate for instead of the proposals (null = use the
            proposals)
    """

    section: ClassVar[str] = "generate"

    n_top: int = 6
    compositions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TemplateSettings(SettingsBase):
    """``templates``: template-based structure prediction (matdisco.generate.templates): substitute
    the target elements into the most similar known structures (ElMD on the modified Pettifor
    scale).

    Attributes:
        top_k: distinct candidate structures kept per target composition
        max_templates: (template, element mapping) options examined per target, cheapest first
        max_sites: templates with more sites than this in their stored cell are skipped
        max_e_above_hull: skip templates whose known energy above hull exceeds this, eV/atom (null
            keeps all)
        max_distance: skip element mappings costlier than this (modified-Pettifor units per atom,
            oxidation penalty included; null = no limit)
        oxidation_weight: mapping cost per unit oxidation-state difference per atom, in modified-
            Pettifor units (0 ignores oxidation states)
        volume_rule: cell volume of a substituted structure: template volume times the ratio of
            summed fitted element volumes (element_volumes) or of cubed Shannon ionic radii
            (ionic_radii), or unchanged (template)
        fallback: split / merge the symmetry-distinct site orbits of templates of other
            stoichiometries: when fewer than top_k distinct same-stoichiometry candidates exist
            (when_needed, or true), whenever cheaper (always), or not at all (never, or false)
        max_fallback_templates: templates tried for the fallback per target (each needs a symmetry
            analysis)
        symprec: spglib tolerance (Angstrom) for the site orbits of the fallback
    """

    section: ClassVar[str] = "templates"

    top_k: int = 5
    max_templates: int = 100
    max_sites: int = 80
    max_e_above_hull: float | None = None
    max_distance: float | None = 10.0
    oxidation_weight: float = 4.0
    volume_rule: Literal["element_volumes", "ionic_radii", "template"] = "element_volumes"
    fallback: Literal["never", "when_needed", "always"] | bool = "when_needed"
    max_fallback_templates: int = 200
    symprec: float = 0.1
    include_target_formula: bool = False


@dataclass(frozen=True)
class GANDataSettings(SettingsBase):
    """``gan.data``: training set (store entries whose chemical system lies within target.elements).

    Attributes:
        max_sites: largest training cell (store structures and supercells), sites; null =
            target.max_atoms
        slots: rows of each element's slot block (largest atom count per element), e.g. {Mg: 8, Mn:
            8, O: 12}; null = the largest count in the training set
        length_scale: lattice lengths are divided by this in the image, Angstrom (paper 30)
        supercells: add the diagonal supercells of each structure that fit the slots and max_sites
    """

    section: ClassVar[str] = "gan.data"

    max_sites: int | None = None
    slots: dict[str, int] | None = None
    length_scale: float = 30.0
    supercells: bool = True


@dataclass(frozen=True)
class GANTrainingSetSettings(SettingsBase):
    """``gan.training_set``: substitution training set (rule build_gan_training_set).

    Attributes:
        enabled: train on the substitution training set (true) or on the store entries of the
            target system only (false)
        max_cations: prototypes are store entries of the target anion(s) plus 1..max_cations
            metals
        max_orbits: cation site orbits enumerated per prototype; prototypes with more take
            element-wise assignments only
        prototypes: further prototypes by store id or reduced formula (any chemistry)
    """

    section: ClassVar[str] = "gan.training_set"

    enabled: bool = True
    max_cations: int = 2
    max_orbits: int = 4
    prototypes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GANAugmentSettings(SettingsBase):
    """Settings of config section ``gan.augment``.

    Attributes:
        copies: augmented copies of every training image per epoch
        translate: random translation of all atoms (periodic)
        permute_axes: random cyclic permutation of the cell axes (keeps handedness)
    """

    section: ClassVar[str] = "gan.augment"

    copies: int = 16
    translate: bool = True
    permute_axes: bool = True


@dataclass(frozen=True)
class GANModelSettings(SettingsBase):
    """Settings of config section ``gan.model``.

    Attributes:
        latent_dim: length of the noise vector
        hidden: width of the hidden layers of the three networks
        mask_composition: zero the generator's unoccupied slots (composition exact by construction);
            false = the paper's rule (rows with coordinate sum > 0.4 are atoms)
        distance_features: smallest interatomic distances per atom given to the critic (0 = off)
        minibatch_std: give the critic the batch's mean feature standard deviation (against mode
            collapse)
        contact_penalty: weight of the generator's hinge penalty on too short interatomic distances
            (0 = off, as in the paper)
        contact_margin: the penalty acts below this fraction of the sum of covalent radii
        contact_random: also apply the contact penalty to images generated for random compositions
            within the slots, so compositions absent from the training set learn to avoid overlaps
        instance_noise: standard deviation of Gaussian noise on the occupied rows of the images the
            critic sees (0 = off)
        diversity_weight: weight of the mode-seeking term (Mao et al. 2019) in the generator loss,
            1 / (mean |G(z1) - G(z2)| / mean |z1 - z2|), against mode collapse (0 = off)
        pack: images of one composition the critic scores jointly (PacGAN, Lin et al. 2018),
            against mode collapse (1 = off, the paper's critic)
        generator_init: initial weights of the generator: torch (torch's default, which starts the
            generator collapsed: the noise barely reaches the output) | he (He-normal hidden layers,
            output layer std 1/sqrt(fan_in): the noise moves the output as much as the data vary)
    """

    section: ClassVar[str] = "gan.model"

    latent_dim: int = 64
    hidden: int = 256
    mask_composition: bool = True
    distance_features: int = 4
    minibatch_std: bool = True
    contact_penalty: float = 10.0
    contact_margin: float = 0.75
    contact_random: bool = True
    instance_noise: float = 0.01
    diversity_weight: float = 0.0
    pack: int = 1
    generator_init: str = "torch"


@dataclass(frozen=True)
class GANTrainSettings(SettingsBase):
    """Settings of config section ``gan.train``.

    Attributes:
        epochs: training epochs (each: every training image 'copies' times)
        batch_size: images per critic / generator step
        n_critic: critic steps per generator step
        gp_lambda: gradient penalty weight
        cls_weight: weight of the composition classifier loss in the generator loss
        lr: Adam learning rate
        beta1: Adam beta1
        beta2: Adam beta2
        checkpoint_every: checkpoint every this many epochs (and at the end)
    """

    section: ClassVar[str] = "gan.train"

    epochs: int = 30
    batch_size: int = 64
    n_critic: int = 5
    gp_lambda: float = 10.0
    cls_weight: float = 1.0
    lr: float = 0.0005
    beta1: float = 0.5
    beta2: float = 0.999
    checkpoint_every: int = 10


@dataclass(frozen=True)
class GANSampleSettings(SettingsBase):
    """Settings of config section ``gan.sample``.

    Attributes:
        per_composition: structures sampled per target composition (split over its cell sizes)
        max_sites: largest generated cell, sites; null = target.max_atoms
        cell_sizes: how a composition's samples are split over its cell sizes: equal (the same
            number per size) | sites (in proportion to the cell's number of sites)
    """

    section: ClassVar[str] = "gan.sample"

    per_composition: int = 300
    max_sites: int | None = None
    cell_sizes: str = "equal"


@dataclass(frozen=True)
class GANValiditySettings(SettingsBase):
    """``gan.validity``: checks of generated structures; invalid ones are rejected.

    Attributes:
        min_distance_factor: reject atoms closer than this times the sum of their covalent radii
        min_distance: reject atoms closer than this, Angstrom
        min_angle: lattice angles must lie in [min_angle, 180 - min_angle], degrees
        min_volume_per_atom: smallest cell volume per atom, Angstrom^3
        max_volume_per_atom: largest cell volume per atom, Angstrom^3
    """

    section: ClassVar[str] = "gan.validity"

    min_distance_factor: float = 0.5
    min_distance: float = 0.5
    min_angle: float = 30.0
    min_volume_per_atom: float = 2.0
    max_volume_per_atom: float = 60.0


@dataclass(frozen=True)
class GANDedupeSettings(SettingsBase):
    """``gan.dedupe``: uniqueness within each composition (pymatgen StructureMatcher, primitive
    cells, volume scaled).

    Attributes:
        ltol: StructureMatcher fractional length tolerance
        stol: StructureMatcher site tolerance
        angle_tol: StructureMatcher angle tolerance
    """

    section: ClassVar[str] = "gan.dedupe"

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0


@dataclass(frozen=True)
class GANSettings(SettingsBase):
    """``gan``: composition-conditioned WGAN-GP crystal generator on the point-cloud representation
    (Kim et al., ACS Cent. Sci. 6, 1412 (2020)); rules train_gan and generate_gan.

    Attributes:
        seed: seed of the weights, data order, augmentation and sampling noise
        device: torch device; auto = CUDA when available, else CPU
        data: training set (store entries whose chemical system lies within target.elements)
        training_set: ``gan.training_set``
        augment: ``gan.augment``
        model: ``gan.model``
        train: ``gan.train``
        sample: ``gan.sample``
        validity: checks of generated structures; invalid ones are rejected
        dedupe: uniqueness within each composition (pymatgen StructureMatcher, primitive cells,
            volume scaled)
    """

    section: ClassVar[str] = "gan"

    seed: int = 0
    device: str = "auto"
    data: GANDataSettings = field(default_factory=GANDataSettings)
    training_set: GANTrainingSetSettings = field(default_factory=GANTrainingSetSettings)
    augment: GANAugmentSettings = field(default_factory=GANAugmentSettings)
    model: GANModelSettings = field(default_factory=GANModelSettings)
    train: GANTrainSettings = field(default_factory=GANTrainSettings)
    sample: GANSampleSettings = field(default_factory=GANSampleSettings)
    validity: GANValiditySettings = field(default_factory=GANValiditySettings)
    dedupe: GANDedupeSettings = field(default_factory=GANDedupeSettings)
