# VoxelPrompt study workflow. Default config runs the embedded demo: `snakemake --cores 2`.
# Separate targets: `snakemake train` (train and export a model), `snakemake evaluate` (score one).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/preprocess.smk"
include: "rules/coregister.smk"
include: "rules/check.smk"
include: "rules/agent.smk"
include: "rules/report.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


localrules:
    check_subject,
    describe_derivatives,


rule all:
    default_target: True
    input:
        rules.gather.output,
        rules.qc_report.output,
        rules.describe_derivatives.output,
