# The agent, one job per subject: the model is loaded once and answers every prompt of the study
# on the subject's co-registered images; masks go back onto each input image's grid.


rule answer:
    input:
        unpack(answer_inputs),
    output:
        metrics=paths.part("metrics"),
        masks=paths.part("masks"),
        responses=paths.part("responses"),
    params:
        cli=VOXELPROMPT,
        kind=config["input"]["kind"],
        source=config["input"]["path"],
        output_dir=lambda wildcards: paths.output_dir,  # where the co-registered inputs lie
        prompts=config["prompts"],
        model=MODEL,
        device=config["device"],
    log:
        paths.subject_log("answer"),
    benchmark:
        paths.subject_benchmark("answer")
    threads: job_resources("answer")["threads"]
    resources:
        mem_mb=job_resources("answer")["mem_mb"],
        runtime=job_resources("answer")["runtime"],
        gpu=job_resources("answer")["gpu"],
    shell:
        "{params.cli} answer --subject {wildcards.subject} --input-kind {params.kind} --input-path {params.source:q}"
        " --output-dir {params.output_dir:q} --prompts {params.prompts:q} --model {params.model:q}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"
