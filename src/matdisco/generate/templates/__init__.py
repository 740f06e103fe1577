"""Template-based structure prediction: substitute target elements into similar known structures.

The approach follows CSPML (Kusaba et al., Comput. Mater. Sci. 2022) and data-mined ionic
substitution: a known structure whose composition is close to the target's often *is* the
target's structure after swapping elements.

For a target composition T (reduced formula):

1. **Template search.** Every known entry of the store is a template. Its distance to T is
   first bounded from below by the element-movers distance (ElMD, Hargreaves et al. 2020) on
   the modified Pettifor scale, computed for all entries at once (on a 1-D scale the EMD is
   the L1 distance between cumulative distributions; equal to ``ElMD(metric="mod_petti")``).
   Templates are visited nearest first.
2. **Element mapping.** *Substitution*: a template with the same anonymous formula (same
   stoichiometry up to element names and an integer multiple, e.g. ZnAl2O4 -> MgMn2O4) is
   mapped element to element; every bijection that preserves the amounts is scored and the
   cheapest ones are kept. *Site splitting / merging* (the fallback, used when fewer than
   ``top_k`` distinct substitution candidates exist, e.g. in a small store): the template's
   symmetry-distinct site orbits (spglib at ``symprec``) are assigned to target elements so
   that the counts come out exactly (e.g. spinel Mn3O4: tetrahedral Mn -> Mg, octahedral
   Mn -> Mn gives MgMn2O4).
3. **Cost** of a mapping, per atom of the template cell, on the modified Pettifor scale::

       cost = sum_sites [ |p(a) - p(t)| + w_ox * |ox(a) - ox(t)| ] / n_sites

   with ``p`` the modified Pettifor number, ``ox`` the oxidation state of the element in its
   compound (first pymatgen ``oxi_state_guesses`` solution; the target's may be restricted by
   ``target.oxidation_states``), ``w_ox = oxidation_weight`` (0 when either is unknown). The
   Pettifor part is the cost of one transport plan between the two compositions, so it is >=
   the ElMD: the ElMD ordering prunes the search exactly. Cations therefore replace cations of
   similar chemistry and charge; an anion never replaces a cation unless nothing else fits.
4. **Volume rule.** The substituted cell keeps the template's fractional coordinates and cell
   shape and is scaled isotropically to ``V = V_template * sum_sites v(t) / sum_sites v(a)``
   (``volume_rule``):

   * ``element_volumes`` (default): ``v`` = additive volume per atom of each element, fitted by
     non-negative least squares to all cells of the store (V_cell = sum_e n_e v_e); the ratio
     keeps the template's packing and transfers the learned element sizes;
   * ``ionic_radii``: ``v = r^3`` with the Shannon ionic radius of the element's oxidation
     state (pymatgen; atomic radius when unknown);
   * ``template``: no rescaling.
5. **Distinct structures.** Candidates are taken in cost order; one that matches an already
   accepted candidate (StructureMatcher, with the fingerprint pre-filter of
   :mod:`matdisco.pool`) is skipped, so the ``top_k`` results are ``top_k`` different
   structures.

No template at all (nothing of a compatible stoichiometry in the store) gives no candidates
for that target and a logged warning, never an error.

Modules: :mod:`~matdisco.generate.templates.substitute` (element mapping, site splitting,
oxidation states, volume rules), :mod:`~matdisco.generate.templates.library`
(:class:`TemplateLibrary`: template search, ``predict``),
:mod:`~matdisco.generate.templates.stage` (``generate_templates``: every target, candidate
store and summary). Settings: :class:`matdisco.settings.TemplateSettings` (re-exported here).
"""

from matdisco.generate.templates.library import TemplateCandidate, TemplateLibrary
from matdisco.generate.templates.stage import candidates_table, generate_templates
from matdisco.generate.templates.substitute import _Option
from matdisco.settings import TemplateSettings

__all__ = [
    "TemplateSettings",
    "TemplateCandidate",
    "TemplateLibrary",
    "candidates_table",
    "generate_templates",
    "_Option",
]
