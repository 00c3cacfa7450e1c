# Rigid co-registration of every image of a subject (all sessions) to the subject's reference image.


rule coregister:
    input:
        reference=lambda wildcards: paths.preprocessed_image(reference_row(wildcards)),
        reference_mask=lambda wildcards: paths.cranial_cavity_mask(reference_row(wildcards)),
        reference_record=lambda wildcards: paths.preprocess_record(reference_row(wildcards)),
        moving=paths.preprocessed_image(),
        moving_mask=paths.cranial_cavity_mask(),
        moving_record=paths.preprocess_record(),
    output:
        image=paths.coregistered_image(),
        sidecar=paths.coregistered_sidecar(),
        transform=paths.transform(),
        record=paths.registration_record(),
    params:
        cli=VOXELPROMPT,
    log:
        paths.log("coregister"),
    benchmark:
        paths.benchmark("coregister")
    threads: job_resources("coregister")["threads"]
    resources:
        mem_mb=job_resources("coregister")["mem_mb"],
        runtime=job_resources("coregister")["runtime"],
    shell:
        "{params.cli} coregister --reference {input.reference:q} --reference-mask {input.reference_mask:q}"
        " --reference-record {input.reference_record:q} --moving {input.moving:q}"
        " --moving-mask {input.moving_mask:q} --moving-record {input.moving_record:q} --out-image {output.image:q}"
        " --out-image-sidecar {output.sidecar:q} --out-transform {output.transform:q}"
        " --out-record {output.record:q} --threads {threads} > {log:q} 2>&1"
