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
        subject_space="",
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
        " --out-record {output.record:q} {params.orientation} {params.subject_space}"
        " > {log:q} 2>&1"


# A subject's reference image defines subject space: its own preprocessing job also writes its
# subject-space derivatives (itself, an identity transform and their records), where a co-registration
# job would have started only to align the image with itself. Its wildcard constraint lets the rule
# match the reference images' files only; for those it is preferred to `preprocess` and `coregister`.
use rule preprocess as preprocess_reference with:
    input:
        raw_image,
    output:
        image=paths.preprocessed_image(),
        mask=paths.cranial_cavity_mask(),
        mask_sidecar=paths.cranial_cavity_sidecar(),
        record=paths.preprocess_record(),
        subject_image=paths.coregistered_image(),
        subject_sidecar=paths.coregistered_sidecar(),
        transform=paths.transform(),
        registration_record=paths.registration_record(),
    params:
        cli=VOXELPROMPT,
        image=lambda wildcards: image_row(wildcards)["path"],
        modality=lambda wildcards: image_row(wildcards)["modality"],
        orientation=orientation_option(),
        subject_space=subject_space_options,
    wildcard_constraints:
        entities=REFERENCE_ENTITIES,


ruleorder: preprocess_reference > preprocess
ruleorder: preprocess_reference > coregister
