# The study's outputs: the three Parquet tables from every subject's part, the visual QC report, and
# the description that makes the output folder a BIDS-derivative dataset.


rule gather:
    input:
        parts=expand(paths.part("{table}", "{subject}"), table=("metrics", "masks", "responses"), subject=SUBJECTS),
    output:
        metrics=paths.table("metrics"),
        responses=paths.table("responses"),
        masks=paths.table("masks"),
    params:
        cli=VOXELPROMPT,
        output_dir=lambda wildcards, output: Path(output.metrics).parent,
        model=MODEL,
        configuration=json.dumps(config, sort_keys=True),
        subjects=SUBJECTS,
    log:
        paths.study_log("gather"),
    benchmark:
        f"{config['log_dir']}/benchmarks/gather.tsv"
    threads: job_resources("gather")["threads"]
    resources:
        mem_mb=job_resources("gather")["mem_mb"],
        runtime=job_resources("gather")["runtime"],
    shell:
        "{params.cli} gather --output-dir {params.output_dir:q} --model {params.model:q}"
        " --config-json {params.configuration:q} {params.subjects} > {log:q} 2>&1"


rule qc_report:
    input:
        **rules.gather.output,
    output:
        # The page and its pictures, as one folder: `snakemake --report` embeds it whole.
        report(
            directory(paths.qc_folder()),
            htmlindex=Path(paths.qc_report()).name,
            caption="../workflow/report/qc.rst",
            category="Quality control",
        ),
    params:
        cli=VOXELPROMPT,
        page=paths.qc_report(),
        tables=lambda wildcards, input: Path(input.metrics).parent,
    log:
        paths.study_log("qc_report"),
    benchmark:
        f"{config['log_dir']}/benchmarks/qc_report.tsv"
    threads: job_resources("qc_report")["threads"]
    resources:
        mem_mb=job_resources("qc_report")["mem_mb"],
        runtime=job_resources("qc_report")["runtime"],
    shell:
        "{params.cli} qc-report --tables {params.tables:q} --out {params.page:q} > {log:q} 2>&1"


rule describe_derivatives:
    output:
        description=paths.dataset_description(),
        bidsignore=paths.bidsignore(),
    params:
        cli=VOXELPROMPT,
        output_dir=lambda wildcards, output: Path(output.description).parent,
        source=config["input"]["path"],
    log:
        paths.study_log("describe_derivatives"),
    shell:
        "{params.cli} describe-derivatives --output-dir {params.output_dir:q} --source {params.source:q} > {log:q} 2>&1"
