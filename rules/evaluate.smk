# `snakemake evaluate`: scores a model (by default the study's) on held-out synthetic subjects and,
# when its package is installed, on fsaverage's real T1w; the scores go under <output_dir>/evaluation/.


rule evaluate:
    input:
        weights=f"{EVALUATED_MODEL}/model.safetensors",
    output:
        scores=paths.evaluation("scores.json"),
        summary=paths.evaluation("summary.md"),
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
        "{params.cli} evaluate-model --model {params.model:q} {params.options}"
        " --out {output.scores:q} --out-markdown {output.summary:q} > {log:q} 2>&1"
