# `snakemake train`: trains the model in stages on synthetic cohorts (and the lab's labelled scans,
# when the settings name a manifest), then exports the last stage's best checkpoint for the study
# run's `model:`. Each stage has a resumable run folder of its own (<run>/<stage>/) that is not a rule
# output, so Snakemake never deletes it: running the target again resumes. A stage starts from the
# checkpoint the one before it exported (the first from its `init`, by default the shipped model).


rule train_stage:
    input:
        previous=previous_stage_export,
        labelled=lambda wildcards: [config["training"]["settings"]["labelled"]]
        if config["training"]["settings"].get("labelled")
        else [],
    output:
        checkpoint_files(stage_export("{stage}")),
    wildcard_constraints:
        stage="|".join(config["training"]["stages"]),
    params:
        cli=VOXELPROMPT,
        run=lambda wildcards: f"{config['training']['run']}/{wildcards.stage}",
        export=lambda wildcards, output: Path(output[0]).parent,
        options=lambda wildcards: cli_options(stage_settings(wildcards.stage)),
    log:
        paths.study_log("train-{stage}"),
    threads: job_resources("train")["threads"]
    resources:
        mem_mb=job_resources("train")["mem_mb"],
        runtime=job_resources("train")["runtime"],
        gpu=job_resources("train")["gpu"],
    shell:
        "{params.cli} train --stage {wildcards.stage} --out {params.run:q} {params.options} --threads {threads}"
        " --export {params.export:q} > {log:q} 2>&1"


rule train:
    input:
        checkpoint_weights(stage_export(list(config["training"]["stages"])[-1])),
    output:
        checkpoint_files(config["training"]["model"]),
    params:
        cli=VOXELPROMPT,
        stage=lambda wildcards, input: Path(input[0]).parent,
        model=lambda wildcards, output: Path(output[0]).parent,
    log:
        paths.study_log("train"),
    shell:
        "{params.cli} export-model --model {params.stage:q} --out {params.model:q} > {log:q} 2>&1"
