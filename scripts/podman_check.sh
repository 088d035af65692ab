#!/usr/bin/env bash
# Build the bidsapp image stage that needs no external download (Dockerfile target "native")
# with podman, then run it on the shared test data: read-only root file system, read-only
# input, no network, as a non-root user (uid 1000, then an arbitrary uid).
#
# Usage (as root, with Debian's podman, runc and debootstrap installed):
#   scripts/podman_check.sh [build|run|all]        (default: all)
#
# Settings (environment):
#   BIDSAPP_TESTDATA   folder holding ds-faces         (default: ../shared/testdata)
#   IMAGE              tag of the image built          (default: localhost/bidsapp:check)
#   BASE_IMAGE         base image name of the Dockerfile (default: docker.io/library/debian:bookworm-slim)
#   WHEELS             local wheel folder for pip (the torch CPU wheel), mounted into the build
#                      (default: /opt/wheels; unset it to use the PyTorch CPU index)
#   CA_BUNDLE          CA bundle pip must trust inside the build (default: the host's)
#   PARTICIPANTS       participant labels to run       (default: every participant)
#   DEFACERS           --defacers for the participant run (default: the CLI's own default)
#   OUT                output folder                   (default: a new /var/tmp/bidsapp-check.*)
#   LEVELS             analysis levels to run          (default: "participant group")
#
# This machine reaches no image registry, so the base image is made with debootstrap and
# imported under the Dockerfile's base image name; its podman needs the runc runtime and
# explicit ulimits.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
action=${1:-all}
testdata=${BIDSAPP_TESTDATA:-$repo/../shared/testdata}
image=${IMAGE:-localhost/bidsapp:check}
base_image=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
wheels=${WHEELS-/opt/wheels}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
podman_opts=(--runtime runc)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

step() { printf '\n== %s\n' "$*"; }
show() { printf '+ %s\n' "$*"; "$@"; }

make_base() {
    if podman image exists "$base_image"; then
        step "base image $base_image already present"
        return
    fi
    step "base image: debootstrap --variant=minbase bookworm, imported as $base_image"
    local rootfs
    rootfs=$(mktemp -d /var/tmp/bidsapp-rootfs.XXXXXX)
    # The Debian mirror this machine's apt already uses (override with DEBIAN_MIRROR).
    local mirror="${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}"
    show debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
    # The apt sources of Debian's own images (updates and security), and no apt cache.
    rm -f "$rootfs/etc/apt/sources.list"
    cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $mirror-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base_image"
    rm -rf "$rootfs"
}

build() {
    make_base
    # A clean build context: only what the Dockerfile copies (no .venv, .git or caches).
    local context version revision
    context=$(mktemp -d /var/tmp/bidsapp-context.XXXXXX)
    cp "$repo/Dockerfile" "$repo/pyproject.toml" "$repo/README.md" "$context/"
    cp -r "$repo/bidsapp" "$context/bidsapp"
    mkdir -p "$context/scripts"
    cp "$repo"/scripts/container_*.sh "$context/scripts/"
    find "$context" -name __pycache__ -type d -prune -exec rm -rf {} +
    revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    version=$(git -C "$repo" describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//;s/-\([0-9]*\)-g/.post\1+g/') \
        || true
    version=${version:-0.1.0.dev0+g$revision}
    local build_args=(
        --build-arg "BASE_IMAGE=$base_image"
        --build-arg "TEMPLATEFLOW_PREFETCH=0"   # no TemplateFlow (S3) here: the nilearn fallback
        --build-arg "VERSION=$version"
        --build-arg "VCS_REF=$revision"
        --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        --build-arg "PIP_CERT=/etc/pip-ca.crt"
        --volume "$ca_bundle:/etc/pip-ca.crt:ro"
    )
    if [ -n "$wheels" ]; then
        # The torch CPU wheel comes from the local folder; PyPI serves everything else.
        build_args+=(--build-arg "PIP_FIND_LINKS=/opt/wheels" --volume "$wheels:/opt/wheels:ro"
                     --build-arg "TORCH_INDEX_URL=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || python3 -c 'import pip._internal.models.index as i; print(i.PyPI.simple_url)')}")
    fi
    step "podman build --target native (version $version)"
    show podman "${podman_opts[@]}" build "${limits[@]}" --target native --tag "$image" \
        "${build_args[@]}" --file "$context/Dockerfile" "$context"
    rm -rf "$context"
    step "image"
    podman image inspect "$image" --format \
        'size={{.Size}} user={{.Config.User}} entrypoint={{.Config.Entrypoint}} version={{index .Config.Labels "org.opencontainers.image.version"}}'
}

# podman run, locked down: read-only root, tmpfs /tmp, no network, no capabilities.
run_locked() {
    local user=$1
    shift
    podman "${podman_opts[@]}" run --rm "${limits[@]}" --read-only --tmpfs /tmp:rw,exec,size=4g \
        --network none --cap-drop all --security-opt no-new-privileges --user "$user" "$@"
}

run() {
    local out data
    data=$(cd "$testdata/ds-faces" && pwd)
    out=${OUT:-$(mktemp -d /var/tmp/bidsapp-check.XXXXXX)}
    mkdir -p "$out/derivatives" "$out/work"
    chmod -R 0777 "$out"

    step "Python packages in the image (a starting point for a container lock file)"
    run_locked 1000:1000 --entrypoint pip "$image" freeze --all > "$out/image-pip-freeze.txt"
    echo "$(wc -l < "$out/image-pip-freeze.txt") packages: $out/image-pip-freeze.txt"

    step "image manifest (/opt/bidsapp/manifest.tsv)"
    run_locked 1000:1000 --entrypoint cat "$image" /opt/bidsapp/manifest.tsv > "$out/image-manifest.tsv"
    head -n 3 "$out/image-manifest.tsv"
    echo "$(($(wc -l < "$out/image-manifest.tsv") - 1)) entries: $out/image-manifest.tsv"

    step "bidsapp --version and --help, as uid 1000 and as an arbitrary uid"
    show run_locked 1000:1000 "$image" --version
    show run_locked 12345:12345 "$image" --version
    run_locked 1000:1000 "$image" --help | head -n 15

    local labels=()
    if [ -n "${PARTICIPANTS:-}" ]; then
        read -r -a labels <<< "$PARTICIPANTS"
        labels=(--participant-label "${labels[@]}")
    fi
    local defacers=()
    if [ -n "${DEFACERS:-}" ]; then
        read -r -a defacers <<< "$DEFACERS"
        defacers=(--defacers "${defacers[@]}")
    fi
    local mounts=(-v "$data:/bids:ro" -v "$out/derivatives:/out" -v "$out/work:/work")

    local levels=${LEVELS:-participant group} start status=0 gstatus=0
    if [[ " $levels " == *" participant "* ]]; then
        step "participant level (input read-only, uid 1000)"
        start=$SECONDS
        show run_locked 1000:1000 "${mounts[@]}" "$image" /bids /out participant \
            "${labels[@]}" "${defacers[@]}" -w /work --nprocs 2 || status=$?
        echo "participant: exit code $status after $((SECONDS - start)) s"
    fi
    if [[ " $levels " == *" group "* ]]; then
        step "group level"
        start=$SECONDS
        show run_locked 1000:1000 "${mounts[@]}" "$image" /bids /out group -w /work || gstatus=$?
        echo "group: exit code $gstatus after $((SECONDS - start)) s"
    fi

    step "outputs in $out/derivatives"
    (cd "$out/derivatives" && find . -maxdepth 4 | sort | head -n 80)
    echo "files: $(find "$out/derivatives" -type f | wc -l)"
    step "input unchanged"
    if find "$data" -newer "$out/work" -print -quit | grep -q .; then
        echo "input was modified!" >&2
        status=1
    else
        echo "no file in $data is newer than the run"
    fi
    [ "$status" -eq 0 ] && [ "$gstatus" -eq 0 ]
}

case "$action" in
    build) build ;;
    run) run ;;
    all) build && run ;;
    *) echo "usage: $0 [build|run|all]" >&2; exit 2 ;;
esac
