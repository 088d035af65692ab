# bidsapp: several MRI defacers side by side, and measures of whether they worked.
#
# Targets (docker build --target NAME .):
#   native    Python 3.11, bidsapp and its native defacers with their weights and templates
#             (deepbet, deepdefacer, quickshear, pydeface's template). Downloads only from
#             PyPI and the PyTorch CPU index. scripts/podman_check.sh builds and runs this one.
#   full      native + the external defacers: FSL subset (pydeface, fsl_deface, mridefacer),
#             FreeSurfer mri_deface with its two atlases, AFNI refacer subset. Default target.
#   full-spm  full + SPM12 standalone and the MATLAB Runtime for spm_deface (several GB).
#
# Pins: every pin is an ARG default of this file (no other pin file); the default target builds
# with no build argument. Each download is checked during the build by the strongest reference
# its source offers (base image by digest, git commit, exact conda build with the package's
# SHA-256, file SHA-256), and recorded in /opt/bidsapp/manifest.tsv inside the image with how it
# was verified. The sources that publish no checksum (FreeSurfer mri_deface, AFNI, SPM, MATLAB
# Runtime) are marked "unpublished": downloaded, their SHA-256 recorded, flagged as not verified.
# `scripts/refresh_pins.py` (on a networked machine) resolves new versions and rewrites the pins;
# `--check` verifies the current ones. Python packages come from PyPI with lower bounds in
# pyproject.toml; the few that matter for results are pinned here. See docs/installation.md.
#
# Runs as the non-root user "bidsapp" (uid 1000), also under any `-u UID:GID`, with a read-only
# root file system (caches go to /tmp), and under Apptainer (see Singularity.def).

# Debian 12 slim by the digest of its multi-platform index (docker-library/repo-info,
# repos/debian/remote/bookworm-slim.md at 05f354f0, build of 2026-08-03). Refresh it with
# scripts/refresh_pins.py; scripts/podman_check.sh passes a locally made base image instead.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:abd67ffcfa541b485a3dff59865ab629aa048a6c613e639d36e7456b0b229241

# --------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ca-certificates \
        libgomp1 \
        python3 \
        python3-venv \
 && rm -rf /var/lib/apt/lists/*

# --------------------------------------------------------------------------------------------
# The Python environment. The dependencies of pyproject.toml are installed before the source is
# copied, so that editing the code does not reinstall torch.
FROM base AS python
ARG PIP_VERSION=26.3
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYDEFACE_VERSION=2.1.0
ARG DEEPDEFACER_VERSION=2.1.2
# Not set by default; a build that needs a local wheel folder or a site CA bundle passes them.
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv \
 && pip install "pip==${PIP_VERSION}" \
 && pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}+cpu"
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; print(chr(10).join(deps))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt "torch==${TORCH_VERSION}+cpu" \
 && pip install --no-deps "pydeface==${PYDEFACE_VERSION}" "deepdefacer==${DEEPDEFACER_VERSION}" \
 && rm /tmp/requirements.txt
COPY README.md /src/README.md
COPY bidsapp /src/bidsapp
ARG VERSION=0.1.0.dev0
RUN SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}" pip install --no-deps /src \
 && rm -rf /src
# MRIQC's template for the IQMs (TemplateFlow's MNI152NLin2009cAsym, res 1 and 2), fetched now so
# that nothing is downloaded at run time. TEMPLATEFLOW_PREFETCH=0 (offline builds such as
# scripts/podman_check.sh) leaves the folder empty, and bidsapp falls back to nilearn's maps and
# records that in every record (iqm_template).
ARG TEMPLATEFLOW_PREFETCH=1
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN mkdir -p /opt/templateflow \
 && if [ "${TEMPLATEFLOW_PREFETCH}" = 1 ]; then \
      python -c "from bidsapp.anatomy.templates import prefetch; print(*prefetch(), sep=chr(10))"; \
    fi

# --------------------------------------------------------------------------------------------
FROM base AS native
ARG BASE_IMAGE
ARG VERSION=0.1.0.dev0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="bidsapp" \
      org.opencontainers.image.description="A BIDS App that runs several MRI defacing tools side by side and measures whether they worked." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.url="https://bidsapp.readthedocs.io" \
      org.opencontainers.image.documentation="https://bidsapp.readthedocs.io" \
      org.opencontainers.image.source="https://github.com/bidsapp/bidsapp" \
      org.opencontainers.image.vendor="The bidsapp developers" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --from=python /opt/venv /opt/venv
COPY --from=python /opt/templateflow /opt/templateflow
COPY scripts/container_manifest.sh /usr/local/bin/bidsapp-manifest
# HOME is world-writable so that any -u UID works when the root file system is writable; every
# cache also points to /tmp for read-only runs (Docker --read-only --tmpfs /tmp, Apptainer).
# The image manifest (/opt/bidsapp/manifest.tsv): the base image and the Python packages here;
# the full targets add every external tool with its pin and how it was verified.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/bidsapp --shell /bin/bash bidsapp \
 && chmod 1777 /home/bidsapp \
 && bidsapp-manifest native "${BASE_IMAGE}" \
 && bidsapp-manifest join
ENV PATH=/opt/venv/bin:${PATH} \
    HOME=/home/bidsapp \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    KERAS_HOME=/tmp/keras \
    KERAS_BACKEND=torch \
    NIPYPE_NO_ET=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIDSAPP_CONTAINER=docker
WORKDIR /tmp
USER 1000:1000
# Smoke test: the CLI starts, every native defacer is available, the bundled weights and
# templates are there (nothing is downloaded at run time), and the external ones say why not.
RUN bidsapp --version \
 && bidsapp --help > /dev/null \
 && python -c "from bidsapp.defacers import REGISTRY, availability, get_defacer; bad = {n: availability(n).reason for n in REGISTRY if get_defacer(n).kind != 'external' and not availability(n).available}; assert not bad, bad" \
 && python -c "from bidsapp.anatomy.templates import pydeface_file; pydeface_file('mean_reg2mean.nii.gz'); pydeface_file('facemask.nii.gz')" \
 && python -c "from bidsapp.defacers.deepdefacer import model_file; assert model_file(), 'deepdefacer model.hdf5 missing'" \
 && python -c "import deepbet, quickshear, torch, ants, cv2; assert not torch.cuda.is_available()" \
 && python -m bidsapp.defacers.external
ENTRYPOINT ["bidsapp"]
CMD ["--help"]

# ============================================================================================
# Download stages for the external defacers. Every pin is an ARG default below (the only place
# pins live; scripts/refresh_pins.py rewrites them) and every download is checked during the
# build, by the strongest reference its source offers:
#   git commit      mridefacer: fetched by commit, `git rev-parse HEAD` must equal the pin
#   conda build     FSL: exact name=version=build from FSL's own channel, and the SHA-256 of each
#                   package file micromamba downloaded must equal the pinned one
#   file SHA-256    micromamba: the SHA-256 its publisher puts beside each release asset
#   "unpublished"   FreeSurfer mri_deface and AFNI: their publishers give neither a checksum nor
#                   a versioned, immutable download; the SHA-256 is computed and recorded in the
#                   image manifest as not verified (docs/installation.md, "Pins")
# Each stage adds its lines to /opt/bidsapp/manifest.d/; the final image joins them into
# /opt/bidsapp/manifest.tsv (tool, version, source, reference, digest, verified).
FROM base AS fetcher
RUN apt-get update \
 && apt-get install -y --no-install-recommends bzip2 curl git unzip xz-utils \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/container_fetch.sh /usr/local/bin/fetch

# --------------------------------------------------------------------------------------------
# FSL: only the packages pydeface (flirt), fsl_deface (bet, flirt, robustfov, fslmaths, ...)
# and mridefacer (fslreorient2std, bet, flirt, fslmaths, im* scripts, numbound) need, and only
# the standard images they register to. Only the programs they call are put on PATH
# (share/fsl/bin), so the conda environment's python stays off it. pydeface refuses to run
# unless an `fsl` command exists (it never calls it): a stub that says the GUI is absent stands
# in for it.
# FSL_PINS: name=version=build=sha256 of FSL packages on FSL's channel (the versions, builds and
# SHA-256 published in fMRIPrep's pixi.lock, nipreps/fmriprep@0b321365, which installs from the
# same channel). FSL_UNPINNED: packages that lock does not hold; they are resolved from FSL's
# channel (micromamba checks them against the channel's repodata) and their exact build and
# SHA-256 are recorded in the manifest; refresh_pins.py pins them on a networked machine.
FROM fetcher AS fsl
ARG MICROMAMBA_VERSION=2.0.5-0
ARG MICROMAMBA_SHA256=cdf5a2e18d213617b6c5c32d8763b4e8fc05f8173b4f4017997683cb984357eb
ARG FSL_VERSION=2504.3
ARG FSL_CHANNEL=https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public/
ARG FSL_PINS="fsl-base=2504.3=py_0=5fc85973f435ccc663114dc273017efe3295102cc0e381c4cf61efbdc462f88c \
fsl-utils=2412.5=h500b71b_1=344fa8c56ccea9a0c1223d3eb62a15c353e33a8874e82a719a67a1bb5522cad1 \
fsl-avwutils=2209.3=h982b8fd_4=a46edc6c2dab02038c8d5664acfb70672c0046889896ac4601693719e27a9c9b \
fsl-flirt=2111.4=h982b8fd_0=4c073ae63bb92ddb8797c3d9077e466ab23677eba4dce02accfa9556e05693d6 \
fsl-bet2=2111.8=h982b8fd_3=697992b3cf01c8653641469fe61fe60a31196f7acbbf00b339e4af0ad3c8591b \
fsl-misc_c=2111.0=hc1c3352_7=55a85a5aa70480f197cfcb7114d7a42d61c6fa5129cc7909eb31a6cddb21d739 \
fsl-miscmaths=2412.4=h982b8fd_0=3ae14b4da69485c25db6a7dde747d472368a1b5b08e3c6429aa01b7c3e63bc83 \
fsl-newimage=2501.4=h500b71b_0=334948211331026a15068b0623903329724adfaa602b1c3afe9c3b29390306b2 \
fsl-newnifti=4.1.0=hc1c3352_6=e1c12b63ac7fbf439445a6eda1014e7f4f3a413fbc9da2917d137a989a465e4e \
fsl-znzlib=2111.0=hc1c3352_9=c22421624176fc71f01186ef1ed47eea8876c87bb501f821846f4343d936b371 \
fsl-armawrap=0.7.0=hc1c3352_2=5fd899a62186cc8aa9d55221a4b78750b5f0b2d83872dfce3739f84634ef9b8b \
fsl-cprob=2111.0=hc1c3352_7=e505a2822bb36bcdc177222bd0b33ff87fcd5de17c33b3bde8ed4fd7ba151262 \
fsl-basisfield=2203.4=h982b8fd_0=99e0a68d204f8259f96605cf5edb9cc1059983afeb8c53352a1aeec8149a9eef \
fsl-warpfns=2501.0=h982b8fd_0=81ed5d9d38e996756d947e96db36300dca274b0b7ab00b760c3bce6b73e89601 \
fsl-meshclass=2111.0=h982b8fd_10=09e0a15ef1dacae3a83da95c7b10b716fbd04526174a27415f5897efd606fdd7 \
fsl-fast4=2111.3=h982b8fd_6=772d02273d2af5e9c82f19e963fb6e7d4cc7ec6839d6649a0dbcdfaaa75b5926 \
fsl-fugue=2201.5=h982b8fd_4=f81743a23f0ca4edf7e0c9db1da4149812d56ac8d3a71b4c3e0be916c4172314 \
fsl-fnirt=2203.2=h982b8fd_2=67cde3bb2f558fecbca45b8e2fdd61fff3303e2662ce57e9056cff3c7b383656 \
fsl-misc_tcl=2406.0=0=37112ef97abec7e508d78f950442939bf727330ffa84968dcefb058facbc9d69 \
fsl-installer=3.16.8=py_0=cb5a0f989c7a7040edd7a991ad28b0587fc5b85e39a78c03c8ccedb608a5902a \
fsl-sub=2.9.0=py_0=fd5b18ba8c750deedd2d9b607ee28f91eba04d4658b69c9cbd3ed8f56826397c"
ARG FSL_UNPINNED="fsl-misc_scripts fsl-data_standard"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN fetch "https://github.com/mamba-org/micromamba-releases/releases/download/${MICROMAMBA_VERSION}/micromamba-linux-64" \
          "${MICROMAMBA_SHA256}" /usr/local/bin/micromamba micromamba "${MICROMAMBA_VERSION}" \
 && chmod 755 /usr/local/bin/micromamba \
 && read -r -a pins <<< "${FSL_PINS}" \
 && read -r -a unpinned <<< "${FSL_UNPINNED}" \
 && specs=() \
 && for pin in "${pins[@]}"; do IFS='=' read -r n v b _ <<< "${pin}"; specs+=("${n}=${v}=${b}"); done \
 && MAMBA_ROOT_PREFIX=/tmp/mamba micromamba create --yes --prefix /opt/fsl \
        --override-channels --channel "${FSL_CHANNEL}" --channel conda-forge \
        "${specs[@]}" "${unpinned[@]}" \
 && for pin in "${pins[@]}"; do \
        IFS='=' read -r n v b sha <<< "${pin}"; \
        file=; \
        for f in /tmp/mamba/pkgs/"${n}-${v}-${b}".tar.bz2 /tmp/mamba/pkgs/"${n}-${v}-${b}".conda; do \
            [ -f "${f}" ] && file=${f}; \
        done; \
        meta="/opt/fsl/conda-meta/${n}-${v}-${b}.json"; \
        [ -f "${meta}" ] || { echo "FSL: ${n}=${v}=${b} was not installed" >&2; exit 1; }; \
        if [ -n "${file}" ]; then \
            echo "${sha}  ${file}" | sha256sum -c - \
              || { echo "FSL: ${file} does not match its pinned SHA-256" >&2; exit 1; }; \
        else \
            python3 -c "import json, sys; got = json.load(open(sys.argv[1])).get('sha256'); sys.exit(None if got == sys.argv[2] else f'FSL: {sys.argv[1]} records sha256 {got}, pinned {sys.argv[2]}')" "${meta}" "${sha}" \
              || exit 1; \
        fi; \
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${n}" "${v}" "${FSL_CHANNEL}" "conda ${n}=${v}=${b}" \
            "sha256:${sha}" "sha256" >> /opt/bidsapp/manifest.d/fsl.tsv; \
    done \
 && for n in "${unpinned[@]}"; do \
        metas=(/opt/fsl/conda-meta/"${n}"-[0-9]*.json); meta=${metas[0]}; \
        [ -f "${meta}" ] || { echo "FSL: ${n} was not installed" >&2; exit 1; }; \
        python3 -c "import json, sys; m = json.load(open(sys.argv[1])); print('\t'.join([m['name'], m['version'], sys.argv[2], 'conda ' + m['name'] + '=' + m['version'] + '=' + m['build'], 'sha256:' + m.get('sha256', '') if m.get('sha256') else 'md5:' + m.get('md5', ''), 'channel repodata (conda); build not pinned']))" \
            "${meta}" "${FSL_CHANNEL}" >> /opt/bidsapp/manifest.d/fsl.tsv; \
    done \
 && mkdir -p /opt/fsl/share/fsl/bin \
 && for prog in flirt bet bet2 fslmaths fslstats fslinfo fslroi fslreorient2std robustfov \
                convert_xfm standard_space_roi imcp immv imtest imln remove_ext numbound \
                fsl_deface; do \
        [ -x "/opt/fsl/bin/${prog}" ] || { echo "FSL: ${prog} missing" >&2; exit 1; }; \
        ln -sf "../../../bin/${prog}" "/opt/fsl/share/fsl/bin/${prog}"; \
    done \
 && find /opt/fsl/data/standard -mindepth 1 \
        ! -name 'MNI152_T1_1mm.nii.gz' ! -name 'MNI152_T1_1mm_brain.nii.gz' \
        ! -name 'MNI152_T1_1mm_brain_mask.nii.gz' ! -name 'MNI152_T1_1mm_BigFoV_facemask.nii.gz' \
        ! -name 'MNI152_T1_2mm.nii.gz' ! -name 'MNI152_T1_2mm_brain.nii.gz' \
        ! -name 'MNI152_T1_2mm_brain_mask.nii.gz' ! -name 'MNI_to_MNI_BigFoV_facemask.mat' \
        -delete \
 && printf '%s\n' '#!/bin/sh' \
      'echo "fsl: the FSL GUI is not in the bidsapp image (command-line subset only)" >&2' \
      'exit 1' > /opt/fsl/share/fsl/bin/fsl \
 && chmod 755 /opt/fsl/share/fsl/bin/fsl \
 && { printf 'fsl-base %s' "${FSL_VERSION}"; \
      for pin in "${pins[@]}"; do \
          IFS='=' read -r n v _ <<< "${pin}"; \
          case "${n}" in fsl-flirt|fsl-bet2) printf ', %s %s' "${n}" "${v}" ;; esac; \
      done; echo; } > /opt/fsl/etc/fslversion \
 && micromamba clean --all --yes --force-pkgs-dirs \
 && rm -rf /tmp/mamba /opt/fsl/pkgs /opt/fsl/include /opt/fsl/share/doc /opt/fsl/man

# --------------------------------------------------------------------------------------------
# mridefacer (Hanke; MIT): the script and its three templates, at one commit of
# github.com/mih/mridefacer (the script says version 0.2.2). git checks every object's hash, and
# the build checks that the checked-out commit is the pinned one.
FROM fetcher AS mridefacer
ARG MRIDEFACER_REPO=https://github.com/mih/mridefacer
ARG MRIDEFACER_COMMIT=37c38058859dc94c03903166b73b92c02796d77d
RUN git init -q /tmp/mridefacer \
 && git -C /tmp/mridefacer fetch -q --depth 1 "${MRIDEFACER_REPO}" "${MRIDEFACER_COMMIT}" \
 && git -C /tmp/mridefacer -c advice.detachedHead=false checkout -q FETCH_HEAD \
 && [ "$(git -C /tmp/mridefacer rev-parse HEAD)" = "${MRIDEFACER_COMMIT}" ] \
 && mkdir -p /opt/mridefacer/data /opt/bidsapp/manifest.d \
 && cp /tmp/mridefacer/mridefacer /tmp/mridefacer/COPYING /opt/mridefacer/ \
 && for t in head_tmpl_brain head_tmpl_weights face_teeth_ear_mask; do \
        [ -s "/tmp/mridefacer/data/${t}.nii.gz" ] || { echo "mridefacer: ${t} missing" >&2; exit 1; }; \
        cp "/tmp/mridefacer/data/${t}.nii.gz" /opt/mridefacer/data/; \
    done \
 && chmod 755 /opt/mridefacer/mridefacer \
 && printf '%s\t%s\t%s\t%s\t%s\t%s\n' mridefacer \
        "$(sed -n 's/^mridefacer_version=//p' /opt/mridefacer/mridefacer)" "${MRIDEFACER_REPO}" \
        "git commit" "git:${MRIDEFACER_COMMIT}" "git (commit and object hashes)" \
        > /opt/bidsapp/manifest.d/mridefacer.tsv \
 && rm -rf /tmp/mridefacer

# --------------------------------------------------------------------------------------------
# FreeSurfer's mri_deface (static binary, v1.22) and its two atlases. FreeSurfer publishes no
# checksum for these files and serves them at unversioned addresses: "unpublished" (see above).
FROM fetcher AS mrideface
ARG MRIDEFACE_VERSION=1.22
ARG MRIDEFACE_URL=https://surfer.nmr.mgh.harvard.edu/pub/dist/mri_deface
ARG MRIDEFACE_BINARY_SHA256=unpublished
ARG MRIDEFACE_TALAIRACH_SHA256=unpublished
ARG MRIDEFACE_FACE_SHA256=unpublished
RUN mkdir -p /opt/mri_deface \
 && fetch "${MRIDEFACE_URL}/mri_deface-v${MRIDEFACE_VERSION}-Linux64.gz" "${MRIDEFACE_BINARY_SHA256}" \
          /opt/mri_deface/mri_deface.gz mri_deface "${MRIDEFACE_VERSION}" \
 && fetch "${MRIDEFACE_URL}/talairach_mixed_with_skull.gca.gz" "${MRIDEFACE_TALAIRACH_SHA256}" \
          /opt/mri_deface/talairach_mixed_with_skull.gca.gz mri_deface "${MRIDEFACE_VERSION}" \
 && fetch "${MRIDEFACE_URL}/face.gca.gz" "${MRIDEFACE_FACE_SHA256}" \
          /opt/mri_deface/face.gca.gz mri_deface "${MRIDEFACE_VERSION}" \
 && gunzip /opt/mri_deface/mri_deface.gz /opt/mri_deface/talairach_mixed_with_skull.gca.gz \
           /opt/mri_deface/face.gca.gz \
 && chmod 755 /opt/mri_deface/mri_deface \
 && chmod 644 /opt/mri_deface/*.gca

# --------------------------------------------------------------------------------------------
# AFNI: only @afni_refacer_run, the programs and scripts it calls, and its MNI template and
# refacer shells (the afni GUI is not needed: bidsapp links the datasets into the work dir).
# AFNI publishes binaries only for its current version, at an unversioned address, with no
# checksum: "unpublished" (see above); the build checks that AFNI_version.txt names AFNI_VERSION
# and records the tarball's SHA-256 in the manifest.
FROM fetcher AS afni
ARG AFNI_VERSION=AFNI_25.0.07
ARG AFNI_URL=https://afni.nimh.nih.gov/pub/dist/tgz/linux_openmp_64.tgz
ARG AFNI_SHA256=unpublished
RUN fetch "${AFNI_URL}" "${AFNI_SHA256}" /tmp/afni.tgz afni "${AFNI_VERSION}" \
 && mkdir -p /tmp/afni /opt/afni \
 && tar -xzf /tmp/afni.tgz -C /tmp/afni --strip-components=1 \
 && grep -q "${AFNI_VERSION}" /tmp/afni/AFNI_version.txt \
 && for f in @afni_refacer_run @global_parse apsearch 3dUnifize 3dAllineate 3dcalc 3dcopy 3dinfo \
             3dnvals 3dnewid 3drefit 3dBrickStat 3dBlurInMask cat_matvec ccalc nifti_tool \
             @FindAfniDsetPath @GetAfniPrefix @CheckForAfniDset ParseName \
             MNI152_2009_template_SSW.nii.gz afni_refacer_shell_sym_1.0.nii.gz \
             afni_refacer_shell_sym_2.0.nii.gz AFNI_version.txt; do \
        cp -p "/tmp/afni/${f}" /opt/afni/ || { echo "AFNI ${AFNI_VERSION}: ${f} missing" >&2; exit 1; }; \
    done \
 && rm -rf /tmp/afni /tmp/afni.tgz

# --------------------------------------------------------------------------------------------
# SPM12 standalone (r7771, compiled with MATLAB R2019b) and the matching MATLAB Runtime. Running
# it once at build time extracts its compiled archive in place, so a read-only image works.
# Neither MathWorks nor the FIL publishes a checksum for these archives: "unpublished".
FROM fetcher AS spm
ARG MATLAB_VERSION=R2019b
ARG MCR_VERSION=v97
ARG MCR_UPDATE=9
ARG MCR_SHA256=unpublished
ARG SPM_REVISION=r7771
ARG SPM_SHA256=unpublished
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxt6 libxext6 libx11-6 \
 && rm -rf /var/lib/apt/lists/* \
 && fetch "https://ssd.mathworks.com/supportfiles/downloads/${MATLAB_VERSION}/Release/${MCR_UPDATE}/deployment_files/installer/complete/glnxa64/MATLAB_Runtime_${MATLAB_VERSION}_Update_${MCR_UPDATE}_glnxa64.zip" \
          "${MCR_SHA256}" /tmp/mcr.zip matlab-runtime "${MATLAB_VERSION}u${MCR_UPDATE}" \
 && unzip -q /tmp/mcr.zip -d /tmp/mcr_install \
 && /tmp/mcr_install/install -mode silent -agreeToLicense yes -destinationFolder /opt/mcr \
 && rm -rf /tmp/mcr.zip /tmp/mcr_install \
 && fetch "https://www.fil.ion.ucl.ac.uk/spm/download/restricted/bids/spm12_${SPM_REVISION}_Linux_${MATLAB_VERSION}.zip" \
          "${SPM_SHA256}" /tmp/spm12.zip spm12 "${SPM_REVISION}" \
 && unzip -q /tmp/spm12.zip -d /opt \
 && rm /tmp/spm12.zip \
 && chmod 755 /opt/spm12/run_spm12.sh /opt/spm12/spm12 \
 && /opt/spm12/run_spm12.sh "/opt/mcr/${MCR_VERSION}" function exit \
 && chmod -R a+rX /opt/spm12 /opt/mcr

# ============================================================================================
# native + the external defacers (FSL, FreeSurfer mri_deface, AFNI, mridefacer).
FROM native AS tools
USER 0:0
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        bc \
        libglu1-mesa \
        libjpeg62-turbo \
        libxext6 \
        libxm4 \
        libxmu6 \
        libxpm4 \
        libxt6 \
        tcsh \
 && rm -rf /var/lib/apt/lists/*
COPY --from=fsl /opt/fsl /opt/fsl
COPY --from=mridefacer /opt/mridefacer /opt/mridefacer
COPY --from=mrideface /opt/mri_deface /opt/mri_deface
COPY --from=afni /opt/afni /opt/afni
COPY --from=fsl /opt/bidsapp/manifest.d/ /opt/bidsapp/manifest.d/
COPY --from=mridefacer /opt/bidsapp/manifest.d/ /opt/bidsapp/manifest.d/
COPY --from=mrideface /opt/bidsapp/manifest.d/ /opt/bidsapp/manifest.d/
COPY --from=afni /opt/bidsapp/manifest.d/ /opt/bidsapp/manifest.d/
# The versions below repeat pins of the download stages (an ARG ends with its stage); the test
# suite checks that they agree. FSL's version (fsl-base and the flirt and bet2 builds) is read
# from /opt/fsl/etc/fslversion, written from the pins.
ARG AFNI_VERSION=AFNI_25.0.07
ARG MRIDEFACER_COMMIT=37c38058859dc94c03903166b73b92c02796d77d
ENV FSLDIR=/opt/fsl \
    FSLOUTPUTTYPE=NIFTI_GZ \
    FSLMULTIFILEQUIT=TRUE \
    MRIDEFACER_DATA_DIR=/opt/mridefacer/data \
    BIDSAPP_MRIDEFACE_DIR=/opt/mri_deface \
    BIDSAPP_AFNI_DATA=/opt/afni \
    BIDSAPP_AFNI_VERSION=${AFNI_VERSION} \
    BIDSAPP_MRIDEFACE_VERSION=1.22 \
    BIDSAPP_MRIDEFACER_VERSION=0.2.2+g${MRIDEFACER_COMMIT} \
    AFNI_DONT_LOGFILE=YES \
    PATH=/opt/venv/bin:/opt/fsl/share/fsl/bin:/opt/afni:/opt/mridefacer:/opt/mri_deface:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Every AFNI program finds its shared libraries.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN for prog in /opt/afni/3d* /opt/afni/ParseName /opt/afni/cat_matvec /opt/afni/ccalc; do \
        if ldd "${prog}" | grep -q "not found"; then ldd "${prog}"; exit 1; fi; \
    done \
 && bidsapp-manifest
USER 1000:1000

# --------------------------------------------------------------------------------------------
FROM tools AS full-spm
COPY --from=spm /opt/mcr /opt/mcr
COPY --from=spm /opt/spm12 /opt/spm12
COPY --from=spm /opt/bidsapp/manifest.d/ /opt/bidsapp/manifest.d/
ARG SPM_REVISION=r7771
ARG MATLAB_VERSION=R2019b
ENV SPM_HOME=/opt/spm12 \
    MCR_HOME=/opt/mcr/v97 \
    MCR_INHIBIT_CTF_LOCK=1 \
    SPM_HTML_BROWSER=0 \
    BIDSAPP_SPM_VERSION="12 ${SPM_REVISION} (MATLAB Runtime ${MATLAB_VERSION})"
USER 0:0
RUN bidsapp-manifest
USER 1000:1000
RUN python -m bidsapp.defacers.external --require all

# --------------------------------------------------------------------------------------------
# The default target: everything except SPM.
FROM tools AS full
RUN python -m bidsapp.defacers.external \
        --require pydeface mrideface fsldeface mridefacer afnideface afnireface
