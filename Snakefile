# VoxelPrompt study workflow. Default config runs the embedded demo: `snakemake --cores 2`.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/preprocess.smk"
include: "rules/coregister.smk"
include: "rules/check.smk"
include: "rules/agent.smk"
include: "rules/report.smk"


localrules:
    check_subject,
    describe_derivatives,


rule all:
    default_target: True
    input:
        rules.gather.output,
        rules.qc_report.output,
        rules.describe_derivatives.output,
