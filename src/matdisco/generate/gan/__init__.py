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

Training is resumable (:mod:`.train`); on CPU with a fixed seed and thread count a resumed run
is bitwise identical to an uninterrupted one.

Modules: :mod:`.nets` (networks, model file), :mod:`.data` (training images), :mod:`.train`
(WGAN-GP training, checkpoints, the ``train_gan`` stage), :mod:`.sample` (sampling, validity,
deduplication, the ``generate_gan`` stage), :mod:`.plots`. Settings are the typed ``gan``
section, :class:`matdisco.settings.GANSettings`.
"""

from matdisco.generate.gan.data import TrainingSet, build_training_set, training_set_from_store
from matdisco.generate.gan.nets import (
    CompositionClassifier,
    ContactPenalty,
    Critic,
    DistanceFeatures,
    GANModel,
    Generator,
    load_model,
    pick_device,
    save_model,
)
from matdisco.generate.gan.plots import plot_history
from matdisco.generate.gan.sample import (
    dedupe_structures,
    formula_multiples,
    generate_from_model,
    generate_structures,
    sample_images,
)
from matdisco.generate.gan.train import train_from_store, train_gan
from matdisco.generate.gan.training_set import build_gan_training_set
from matdisco.settings import GANSettings

__all__ = [
    "GANSettings",
    "TrainingSet",
    "Generator",
    "Critic",
    "CompositionClassifier",
    "DistanceFeatures",
    "ContactPenalty",
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
    "build_gan_training_set",
]
