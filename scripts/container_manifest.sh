#!/bin/sh
# The image manifest, /opt/bidsapp/manifest.tsv: one line per thing the image was built from,
#   tool  version  source  reference  digest  verified
# Each build stage adds its lines to /opt/bidsapp/manifest.d/NAME.tsv (the download stages through
# `fetch`); this script adds the base image and the Python packages (`native BASE_IMAGE`) and joins
# every part into manifest.tsv (`join`, the default). Installed as /usr/local/bin/bidsapp-manifest.
set -eu
parts=${BIDSAPP_MANIFEST_DIR:-/opt/bidsapp/manifest.d}
out=$(dirname "$parts")/manifest.tsv
mkdir -p "$parts"
case "${1:-join}" in
    native)
        base=${2:?usage: bidsapp-manifest native BASE_IMAGE}
        case "$base" in
            *@sha256:*) digest="sha256:${base##*@sha256:}"
                        verified="image digest (the registry content is addressed by it)" ;;
            *) digest="-"; verified="no (a tag, not a digest)" ;;
        esac
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' base-image "${base%%@*}" "$base" "container image" \
            "$digest" "$verified" > "$parts/00-base.tsv"
        # Python packages: from PyPI (and the PyTorch CPU index for torch) over HTTPS, by version.
        /opt/venv/bin/python - >> "$parts/00-base.tsv" <<'PY'
from importlib.metadata import distributions
for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
    name = dist.metadata["Name"]
    print("\t".join([name, dist.version, "PyPI", "pip", "-",
                     "no (pip by version over HTTPS; wheels not hash-locked)"]))
PY
        ;;
    join)
        {
            printf 'tool\tversion\tsource\treference\tdigest\tverified\n'
            cat "$parts"/*.tsv
        } > "$out"
        chmod 644 "$out"
        echo "image manifest: $(($(wc -l < "$out") - 1)) entries in $out"
        grep -v '	sha256$\|	git (' "$out" | grep -v '^tool	\|	PyPI	' >&2 || true
        ;;
    *) echo "usage: bidsapp-manifest [native BASE_IMAGE | join]" >&2; exit 2 ;;
esac
