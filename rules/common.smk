# Discovery of the study's images and the one path helper every rule uses.
import shlex
import sys
from pathlib import Path

from voxelprompt import study
from voxelprompt.paths import WILDCARD_CONSTRAINTS, DerivativePaths


# Rules run the package's CLI with the interpreter that runs Snakemake, so the workflow works from
# an unactivated virtual environment as well as from a conda environment.
VOXELPROMPT = f"{shlex.quote(sys.executable)} -m voxelprompt"

paths = DerivativePaths(config["output_dir"], config["log_dir"])

if config["input"]["kind"] == "samples":
    validate(study.read_samples_table(config["input"]["path"]), "../workflow/schemas/samples.schema.yaml")
COHORT = study.load(config["input"]["kind"], config["input"]["path"])
for problem in COHORT.rejected:
    logger.warning(f"voxelprompt: skipped: {problem}")


wildcard_constraints:
    **WILDCARD_CONSTRAINTS,


def image_row(wildcards):
    return COHORT.image(f"{wildcards.entities}_{wildcards.suffix}")


def reference_row(wildcards):
    settings = config["coregistration"]
    return COHORT.reference_image(
        image_row(wildcards)["subject"], settings["reference_modality"], settings["reference_session"]
    )


def raw_image(wildcards):
    """The raw image as a job input. A missing file is left out here so that it fails its own job
    (with an error naming the file) instead of stopping the whole workflow at DAG construction."""
    path = image_row(wildcards)["path"]
    return path if config["input"]["kind"] == "demo" or Path(path).exists() else []


def coregistered_outputs():
    return [
        output
        for row in COHORT.images.to_dict("records")
        for output in (paths.coregistered_image(row), paths.transform(row), paths.registration_record(row))
    ]


def job_resources(rule_name):
    return config["resources"][rule_name]
