# `snakemake train`: trains the model on synthetic cohorts (and the lab's labelled scans, when the
# settings name a manifest), then exports the best checkpoint for the study run's `model:`. The run
# folder is not a rule output, so Snakemake never deletes it: running the target again resumes.


rule train:
    input:
        labelled=lambda wildcards: [config["training"]["settings"]["labelled"]]
        if config["training"]["settings"].get("labelled")
        else [],
    output:
        multiext(f"{config['training']['model']}/", "config.json", "tokenizer.json", "model.safetensors", "MODEL_CARD.md"),
    params:
        cli=VOXELPROMPT,
        run=config["training"]["run"],
        model=lambda wildcards, output: Path(output[0]).parent,
        options=cli_options(config["training"]["settings"]),
    log:
        paths.study_log("train"),
    threads: job_resources("train")["threads"]
    resources:
        mem_mb=job_resources("train")["mem_mb"],
        runtime=job_resources("train")["runtime"],
        gpu=job_resources("train")["gpu"],
    shell:
        "{params.cli} train --out {params.run:q} {params.options} --threads {threads}"
        " --export {params.model:q} > {log:q} 2>&1"
