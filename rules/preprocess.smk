# Preprocessing of every image: RAS orientation, crop around the cranial cavity, [0, 1] intensities.


rule preprocess:
    input:
        raw_image,
    output:
        image=paths.preprocessed_image(),
        mask=paths.cranial_cavity_mask(),
        mask_sidecar=paths.cranial_cavity_sidecar(),
        record=paths.preprocess_record(),
    params:
        cli=VOXELPROMPT,
        image=lambda wildcards: image_row(wildcards)["path"],
        modality=lambda wildcards: image_row(wildcards)["modality"],
        orientation=orientation_option(),
    log:
        paths.log("preprocess"),
    benchmark:
        paths.benchmark("preprocess")
    threads: job_resources("preprocess")["threads"]
    resources:
        mem_mb=job_resources("preprocess")["mem_mb"],
        runtime=job_resources("preprocess")["runtime"],
    shell:
        "{params.cli} preprocess --image {params.image:q} --modality {params.modality}"
        " --out-image {output.image:q} --out-mask {output.mask:q} --out-mask-sidecar {output.mask_sidecar:q}"
        " --out-record {output.record:q} {params.orientation}"
        " > {log:q} 2>&1"
