#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) for the QC report's rendering test, when it
# is missing. Safe to run again. Root installs directly; anyone else needs sudo.
set -euo pipefail

browser() { command -v chromium || command -v chromium-browser || true; }

if [ -z "$(browser)" ]; then
    if [ "$(id -u)" = 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        echo "Chromium is missing and installing it needs root or sudo: apt-get install chromium" >&2
        exit 1
    fi
    # No prompts (e.g. tzdata) in CI; through env, since sudo resets the environment. The lock
    # timeout waits for another apt run (unattended upgrades, a parallel setup step) instead of failing.
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
    "${as_root[@]}" "${apt[@]}" update -qq
    "${as_root[@]}" "${apt[@]}" install -y -qq --no-install-recommends chromium
fi

# Chromium refuses to start as root without --no-sandbox; asking the version needs neither.
"$(browser)" --version
