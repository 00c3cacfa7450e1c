# A subject's raw images are read once before anything else is planned for it: the check's status
# file exists whether they are usable or not, so a bad image becomes error rows in the study tables
# instead of a failed job that would keep the tables from being written.


checkpoint check_subject:
    input:
        subject_raw_images,
    output:
        status=paths.subject_check(),
    params:
        cli=VOXELPROMPT,
        images=lambda wildcards: [row["path"] for row in COHORT.subject_rows(wildcards.subject)],
        orientation=orientation_option(),
    log:
        paths.subject_log("check_subject"),
    benchmark:
        paths.subject_benchmark("check_subject")
    threads: job_resources("check_subject")["threads"]
    resources:
        mem_mb=job_resources("check_subject")["mem_mb"],
        runtime=job_resources("check_subject")["runtime"],
    shell:
        "{params.cli} check-images --out-status {output.status:q} --memory-limit-mb {resources.mem_mb}"
        " {params.orientation} {params.images:q} > {log:q} 2>&1"
