# VoxelPrompt study workflow. Default config runs the embedded demo: `snakemake --cores 2`.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/preprocess.smk"
include: "rules/coregister.smk"


rule all:
    default_target: True
    input:
        coregistered_outputs(),
