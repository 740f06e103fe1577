# matdisco: inorganic materials discovery pipeline (table of contents).
#
#   make run                   # everything on the default config (bundled offline data, Mg-Mn-O)
#   snakemake -n               # what would run
#   snakemake --profile profiles/slurm   # on a SLURM cluster (see README)
#
# Each stage lives in workflow/rules/<stage>.smk; the science is in the matdisco package.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
# before the stage files: it defines KNOWN (the known slice with the knowledge base, loop.use)
include: "workflow/rules/loop.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/recommender.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/relax.smk"
include: "workflow/rules/screen.smk"


rule all:
    input:
        TARGETS,
    default_target: True
