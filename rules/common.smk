# Discovery of the study's images and the one path helper every rule uses.
import json
import shlex
import sys
from pathlib import Path

from voxelprompt.study import inputs
from voxelprompt.study.image_check import failure_of
from voxelprompt.model import SHIPPED_MODEL
from voxelprompt.study.paths import WILDCARD_CONSTRAINTS, DerivativePaths, reference_entities_constraint


# Rules run the package's CLI with the interpreter that runs Snakemake, so the workflow works from
# an unactivated virtual environment as well as from a conda environment.
VOXELPROMPT = f"{shlex.quote(sys.executable)} -m voxelprompt"

paths = DerivativePaths(config["output_dir"], config["log_dir"])

if config["input"]["kind"] == "samples":
    validate(inputs.read_samples_table(config["input"]["path"]), "../workflow/schemas/samples.schema.yaml")
COHORT = inputs.load(config["input"]["kind"], config["input"]["path"])
for problem in COHORT.rejected:
    logger.warning(f"voxelprompt: skipped: {problem}")


MODEL = config["model"] or str(SHIPPED_MODEL)
EVALUATED_MODEL = config["evaluation"]["model"] or MODEL
SUBJECTS = COHORT.subjects()
REFERENCE_ENTITIES = reference_entities_constraint(
    COHORT.reference_image(subject, config["coregistration"]["reference_modality"],
                           config["coregistration"]["reference_session"])
    for subject in SUBJECTS
)


wildcard_constraints:
    **WILDCARD_CONSTRAINTS,
    subject="[A-Za-z0-9]+",


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


def subject_space_options(wildcards, output):
    """`voxelprompt preprocess`'s options that make a reference image's subject-space derivatives."""
    return (f"--out-subject-image {shlex.quote(output.subject_image)} --out-subject-image-sidecar "
            f"{shlex.quote(output.subject_sidecar)} --out-transform {shlex.quote(output.transform)} "
            f"--out-registration-record {shlex.quote(output.registration_record)}")


def subject_raw_images(wildcards):
    """The subject's raw images as job inputs (missing files left to the check to report)."""
    rows = COHORT.subject_rows(wildcards.subject)
    return [row["path"] for row in rows if config["input"]["kind"] == "demo" or Path(row["path"]).exists()]


def answer_inputs(wildcards):
    """The subject's check, and its co-registered images once the check has passed (a subject with
    a bad image is answered with error rows, without processing any of its images)."""
    rows = COHORT.subject_rows(wildcards.subject)
    check = checkpoints.check_subject.get(subject=wildcards.subject).output.status
    inputs = {"check": check, "prompts": config["prompts"], "weights": f"{MODEL}/model.safetensors"}
    if not failure_of(check):
        inputs |= {
            "images": [paths.coregistered_image(row) for row in rows],
            "transforms": [paths.transform(row) for row in rows],
            "records": [paths.preprocess_record(row) for row in rows],
            # Not read by the job: asked for so that every derivative of the subject is complete
            # before its answers are (Snakemake only makes the outputs something asks for).
            "sidecars": [paths.coregistered_sidecar(row) for row in rows]
            + [paths.cranial_cavity_sidecar(row) for row in rows],
        }
    return inputs


def orientation_option():
    """The image-reading jobs' option for images of unknown orientation, as the study's config asks."""
    return "--accept-unknown-orientation" if config["input"].get("accept_unknown_orientation") else ""


def job_resources(rule_name):
    return config["resources"][rule_name]


def stage_export(stage):
    """Where a training stage exports its best checkpoint (the next stage starts from it)."""
    return f"{config['training']['run']}/exported/{stage}"


# The files `voxelprompt export-model` writes. Paths are joined, not concatenated with "/": the
# linter takes a literal that starts with "/" for an absolute path.
CHECKPOINT_FILES = ("config.json", "tokenizer.json", "model.safetensors", "MODEL_CARD.md")


def checkpoint_files(folder):
    return [str(Path(folder) / name) for name in CHECKPOINT_FILES]


def checkpoint_weights(folder):
    return str(Path(folder) / "model.safetensors")


def stage_settings(stage):
    """The `voxelprompt train` options of a stage: the settings common to every stage, then the
    stage's own, then where it starts from (the stage before it, if any)."""
    stages = list(config["training"]["stages"])
    settings = {**config["training"]["settings"], **(config["training"]["stages"][stage] or {})}
    if stages.index(stage) > 0:
        settings["init"] = stage_export(stages[stages.index(stage) - 1])
    return settings


def previous_stage_export(wildcards):
    stages = list(config["training"]["stages"])
    position = stages.index(wildcards.stage)
    return [checkpoint_weights(stage_export(stages[position - 1]))] if position > 0 else []


YAML_WORDS = {"true": True, "false": False, "null": None, "~": None}


def cli_options(settings):
    """`--name value` options of the package's CLI from a config mapping: `True` gives `--name`,
    `False` gives `--no-name`, `None` leaves the option out."""
    options = []
    for name, value in settings.items():
        option = name.replace("_", "-")
        # `--config` on the command line gives nested values as text: read the YAML words as YAML would.
        if isinstance(value, str) and value.lower() in YAML_WORDS:
            value = YAML_WORDS[value.lower()]
        if value is True or value is False:
            options.append(f"--{option}" if value else f"--no-{option}")
        elif value is not None:
            options += [f"--{option}", str(value)]
    return shlex.join(options)
