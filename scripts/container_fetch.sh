#!/bin/sh
# fetch URL SHA256 DEST TOOL VERSION: download URL to DEST, check it, and add a line to the image
# manifest (/opt/bidsapp/manifest.d/TOOL.tsv: tool, version, source, reference, digest, verified).
#
# SHA256 is either 64 hexadecimal digits, checked with sha256sum (a mismatch stops the build), or
# the literal word "unpublished" for the few sources that publish no checksum and offer no
# immutable reference (see the Dockerfile): the file is then downloaded, its SHA-256 computed and
# recorded in the manifest as not verified, and a warning is printed. An empty SHA256 stops the
# build. scripts/refresh_pins.py turns "unpublished" into a digest on a networked machine.
set -eu
[ "$#" -eq 5 ] || { echo "usage: fetch URL SHA256 DEST TOOL VERSION" >&2; exit 2; }
url=$1 sha=$2 dest=$3 tool=$4 version=$5
case "$sha" in
    "") echo "fetch: no SHA-256 given for $url (set its *_SHA256 pin)" >&2; exit 1 ;;
    unpublished) ;;
    *) printf '%s' "$sha" | grep -Eq '^[0-9a-f]{64}$' \
           || { echo "fetch: '$sha' is not a SHA-256 (64 hex digits) for $url" >&2; exit 1; } ;;
esac
curl -fsSL --retry 5 -o "$dest" "$url"
digest=$(sha256sum "$dest" | cut -d ' ' -f 1)
if [ "$sha" = unpublished ]; then
    verified="no (the source publishes no checksum; SHA-256 recorded at build time)"
    echo "fetch: WARNING: $url is not verified (no published checksum); its SHA-256 is $digest" >&2
else
    echo "$sha  $dest" | sha256sum -c - >&2
    verified="sha256"
fi
manifest=${BIDSAPP_MANIFEST_DIR:-/opt/bidsapp/manifest.d}
mkdir -p "$manifest"
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$version" "$url" "file" "sha256:$digest" "$verified" \
    >> "$manifest/$tool.tsv"
