#!/usr/bin/env bash
# CI (as root): run the demo study through profiles/slurm on a real one-node SLURM, run it again
# locally, and require the two results/ folders to match file by file (tests/slurm_compare.py).
#   bash scripts/ci-slurm.sh [--reference RUN [MADE_IN]]
# With --reference, RUN is the folder of a finished local run of the demo (its results/ is compared)
# and no second local run is made; MADE_IN is the folder that run was made in, when RUN holds a copy
# of its results/ (their provenance names MADE_IN). Each run gets a fresh copy of the workflow files,
# as a user's clone would. SLURM is brought up by scripts/slurm-up.sh and always brought down again.
# Exit status non-zero on any failure or difference.
set -euo pipefail
REFERENCE=""
REFERENCE_MADE_IN=""
if [ "${1:-}" = --reference ]; then
    REFERENCE="$(cd "$2" && pwd)"
    REFERENCE_MADE_IN="$(cd "${3:-$2}" && pwd)"
    [ -f "$REFERENCE/results/responses.parquet" ] || { echo "ci-slurm: $2 holds no finished run" >&2; exit 2; }
fi
cd "$(dirname "$0")/.."
REPO="$PWD"
PYTHON="$REPO/.venv/bin/python"
WORKFLOW_FILES=(Snakefile rules config workflow profiles)

# Settings of this CI cluster, not of the workflow, so they stay out of the user profile:
SLURM_CI_FLAGS=(
    --slurm-status-command squeue                  # no accounting database: sacct cannot answer
    --slurm-no-account                             # and no accounts to guess from
    --slurm-init-seconds-before-status-checks 5    # the demo's jobs take seconds: poll early
    --seconds-between-status-checks 2              # and often (squeue on one node is cheap)
    --slurm-keep-successful-logs                   # every job's SLURM log stays for inspection
)

step() { echo "== $(date +%T) $*"; }
copy_workflow() {
    mkdir -p "$1"
    for name in "${WORKFLOW_FILES[@]}"; do cp -r "$REPO/$name" "$1/"; done
}
show_failure() {  # show_failure LOG: the end of a failed run's log and of its SLURM job logs
    echo "---- last lines of $1" >&2
    tail -n 60 "$1" >&2
    find "$(dirname "$1")/.snakemake/slurm_logs" -name '*.log' -print0 2>/dev/null \
        | xargs -0 -r tail -n 8 >&2 || true
}

"$PYTHON" -c 'import snakemake_executor_plugin_slurm' 2>/dev/null \
    || "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[slurm]"

work="$(mktemp -d "${TMPDIR:-/tmp}/voxelprompt-ci-slurm.XXXXXX")"
finish() {
    local status=$?
    bash "$REPO/scripts/slurm-down.sh" || true
    if [ "$status" = 0 ]; then rm -rf "$work"; else echo "ci-slurm: FAILED; runs kept in $work" >&2; fi
    exit "$status"
}
trap finish EXIT

step "bring up SLURM"
bash scripts/slurm-up.sh

step "demo through profiles/slurm"
copy_workflow "$work/slurm"
# As the profile's comments tell users: name the partition in the profile. CI's cluster has `debug`.
"$PYTHON" - "$work/slurm/profiles/slurm/config.yaml" <<'EOF'
import sys, yaml
path = sys.argv[1]
with open(path) as f:
    profile = yaml.safe_load(f)
profile["default-resources"]["slurm_partition"] = "debug"
with open(path, "w") as f:
    yaml.safe_dump(profile, f, sort_keys=False)
EOF
start=$SECONDS
(cd "$work/slurm" && "$PYTHON" -m snakemake --profile profiles/slurm "${SLURM_CI_FLAGS[@]}") \
    > "$work/slurm/snakemake.log" 2>&1 || { show_failure "$work/slurm/snakemake.log"; exit 1; }
slurm_seconds=$((SECONDS - start))

# Every job Snakemake ran must have been a SLURM job that completed: Snakemake prints "rule X:" for
# each job it hands to the executor ("localrule X:" for the few it runs itself).
jobs_planned=$(grep -c '^rule [A-Za-z_0-9]*:$' "$work/slurm/snakemake.log" || true)
mapfile -t slurm_ids < <(grep -oP 'has been submitted with SLURM jobid \K[0-9_]+' "$work/slurm/snakemake.log")
if [ "$jobs_planned" = 0 ] || [ "${#slurm_ids[@]}" != "$jobs_planned" ]; then
    echo "ci-slurm: $jobs_planned jobs ran but ${#slurm_ids[@]} were submitted to SLURM" >&2
    show_failure "$work/slurm/snakemake.log"
    exit 1
fi
for id in "${slurm_ids[@]}"; do
    state="$(scontrol show job -o "$id" 2>&1 | grep -oP 'JobState=\K\S+' || echo unknown)"
    if [ "$state" != COMPLETED ]; then
        echo "ci-slurm: SLURM job $id is $state, not COMPLETED" >&2
        exit 1
    fi
done
echo "${#slurm_ids[@]} SLURM jobs COMPLETED in ${slurm_seconds} s (ids ${slurm_ids[0]}..${slurm_ids[-1]})"

if [ -z "$REFERENCE" ]; then
    step "demo locally (--cores 2)"
    copy_workflow "$work/local"
    start=$SECONDS
    (cd "$work/local" && "$PYTHON" -m snakemake --cores 2) \
        > "$work/local/snakemake.log" 2>&1 || { show_failure "$work/local/snakemake.log"; exit 1; }
    echo "local run done in $((SECONDS - start)) s"
    REFERENCE="$work/local"
    REFERENCE_MADE_IN="$REFERENCE"
fi

step "compare results/ with the local run in $REFERENCE"
"$PYTHON" tests/slurm_compare.py "$work/slurm/results" "$REFERENCE/results" --b-made-in "$REFERENCE_MADE_IN"
step "ci-slurm: OK"
