#!/usr/bin/env bash
# Renders deploy/manifests/ from the chart with its default values (release `runbot`, namespace
# `runbot`), one file per template, for clusters without Helm:
#
#   deploy/helm/render-manifests.sh            # runs `helm template`
#   deploy/helm/render-manifests.sh FILE       # splits FILE, output of the same helm template
#
# sandbox/tests/it/deploy_manifests.rs checks the result against the chart and the API.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=deploy/manifests
if [ $# -ge 1 ]; then
    rendered=$(cat "$1")
else
    rendered=$(helm template runbot deploy/helm/runbot --namespace runbot)
fi
rm -f "$out"/*.yaml
mkdir -p "$out"
printf '%s\n' "$rendered" | awk -v out="$out" '
    /^---$/ { pending = 1; next }
    /^# Source: runbot\/templates\// {
        file = out "/" substr($0, length("# Source: runbot/templates/") + 1)
        if (!(file in seen)) {
            seen[file] = 1
            print "# Rendered from deploy/helm/runbot with its default values (release runbot, namespace" > file
            print "# runbot) by deploy/helm/render-manifests.sh. Edit the chart, then render again." > file
        }
        print "---" > file
        pending = 0
    }
    file != "" { print > file }
'
ls "$out"
