# `snakemake evaluate`: the paper's evaluation protocol (voxelprompt/evaluation/protocol.py) for a model (by
# default the study's): Parquet tables, plots and summary.md under <output_dir>/evaluation/.


rule evaluate:
    input:
        weights=f"{EVALUATED_MODEL}/model.safetensors",
    output:
        directory(paths.evaluation_folder()),
    params:
        cli=VOXELPROMPT,
        model=lambda wildcards, input: Path(input.weights).parent,
        options=cli_options(config["evaluation"]["settings"]),
    log:
        paths.study_log("evaluate"),
    threads: job_resources("evaluate")["threads"]
    resources:
        mem_mb=job_resources("evaluate")["mem_mb"],
        runtime=job_resources("evaluate")["runtime"],
        gpu=job_resources("evaluate")["gpu"],
    shell:
        "{params.cli} evaluate-model --model {params.model:q} {params.options} --threads {threads}"
        " --out-dir {output:q} > {log:q} 2>&1"
