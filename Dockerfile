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
# Every tool downloaded outside a package manager is pinned by version AND by SHA-256, checked by
# `fetch` below; an empty *_SHA256 stops the build. Fill one in from a trusted machine with
#   curl -fsSL URL | sha256sum
# (these checksums could not be computed where this file was written: no access to those sites).
# Conda packages (FSL) are pinned to the versions of one FSL release and checked by micromamba
# against the channel's SHA-256 records. Python packages come from PyPI with lower bounds in
# pyproject.toml; the few that matter for results are pinned here.
#
# Runs as the non-root user "bidsapp" (uid 1000), also under any `-u UID:GID`, with a read-only
# root file system (caches go to /tmp), and under Apptainer (see Singularity.def).

ARG BASE_IMAGE=debian:bookworm-slim

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

# --------------------------------------------------------------------------------------------
FROM base AS native
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
      org.opencontainers.image.base.name="debian:bookworm-slim"
COPY --from=python /opt/venv /opt/venv
# HOME is world-writable so that any -u UID works when the root file system is writable; every
# cache also points to /tmp for read-only runs (Docker --read-only --tmpfs /tmp, Apptainer).
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/bidsapp --shell /bin/bash bidsapp \
 && chmod 1777 /home/bidsapp
ENV PATH=/opt/venv/bin:${PATH} \
    HOME=/home/bidsapp \
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
# Download stages for the external defacers. `fetch URL SHA256 DEST` refuses an empty or wrong
# checksum.
FROM base AS fetcher
# hadolint ignore=SC2016
RUN apt-get update \
 && apt-get install -y --no-install-recommends bzip2 curl unzip xz-utils \
 && rm -rf /var/lib/apt/lists/* \
 && printf '%s\n' '#!/bin/sh' 'set -eu' \
      '[ -n "$2" ] || { echo "fetch: no SHA-256 given for $1 (set the *_SHA256 build argument)" >&2; exit 1; }' \
      'curl -fsSL --retry 5 -o "$3" "$1"' \
      'echo "$2  $3" | sha256sum -c -' > /usr/local/bin/fetch \
 && chmod 755 /usr/local/bin/fetch

# --------------------------------------------------------------------------------------------
# FSL: only the packages pydeface (flirt), fsl_deface (bet, flirt, robustfov, fslmaths, ...)
# and mridefacer (fslreorient2std, bet, flirt, fslmaths, im* scripts, numbound) need, at the
# versions of one FSL release, and only the standard images they register to. Only the programs
# they call are put on PATH (share/fsl/bin), so the conda environment's python stays off it.
# pydeface refuses to run unless an `fsl` command exists (it never calls it): a stub that says
# the GUI is absent stands in for it.
FROM fetcher AS fsl
ARG MICROMAMBA_VERSION=2.0.5-0
ARG MICROMAMBA_SHA256=
ARG FSL_VERSION=6.0.7.22
ARG FSL_RELEASE_SHA256=
ARG FSL_CHANNEL=https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/public/
ARG FSL_PACKAGES="fsl-base fsl-utils fsl-avwutils fsl-flirt fsl-bet2 fsl-misc_c fsl-misc_scripts fsl-data_standard"
RUN fetch "https://github.com/mamba-org/micromamba-releases/releases/download/${MICROMAMBA_VERSION}/micromamba-linux-64" \
          "${MICROMAMBA_SHA256}" /usr/local/bin/micromamba \
 && chmod 755 /usr/local/bin/micromamba \
 && fetch "https://fsl.fmrib.ox.ac.uk/fsldownloads/fslconda/releases/fsl-${FSL_VERSION}_linux-64.yml" \
          "${FSL_RELEASE_SHA256}" /tmp/fsl-release.yml \
 && python3 -c "import re, sys; text = open('/tmp/fsl-release.yml').read(); wanted = sys.argv[1:]; found = dict(re.findall(r'^\s*-\s*(fsl-[A-Za-z0-9_.-]+)[\s=]+([^\s#]+)', text, re.M)); lost = [w for w in wanted if w not in found]; sys.exit('not in the FSL release: ' + ' '.join(lost)) if lost else print(' '.join(w + '=' + found[w] for w in wanted))" ${FSL_PACKAGES} > /tmp/fsl-specs \
 && MAMBA_ROOT_PREFIX=/tmp/mamba xargs micromamba create --yes --prefix /opt/fsl \
        --override-channels --channel "${FSL_CHANNEL}" --channel conda-forge < /tmp/fsl-specs \
 && mkdir -p /opt/fsl/share/fsl/bin \
 && for prog in flirt bet bet2 fslmaths fslstats fslinfo fslroi fslreorient2std robustfov \
                convert_xfm standard_space_roi imcp immv imtest imln remove_ext numbound \
                fsl_deface; do \
        [ -x "/opt/fsl/bin/${prog}" ] || { echo "FSL ${FSL_VERSION}: ${prog} missing" >&2; exit 1; }; \
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
 && echo "${FSL_VERSION}" > /opt/fsl/etc/fslversion \
 && micromamba clean --all --yes --force-pkgs-dirs \
 && rm -rf /tmp/mamba /opt/fsl/pkgs /opt/fsl/include /opt/fsl/share/doc /opt/fsl/man

# --------------------------------------------------------------------------------------------
# mridefacer (Hanke; MIT): the script and its three templates, at one commit.
FROM fetcher AS mridefacer
ARG MRIDEFACER_COMMIT=0a352d278e8ce47c75b47d6604ed5f835b77501f
ARG MRIDEFACER_SHA256=
RUN fetch "https://github.com/mih/mridefacer/archive/${MRIDEFACER_COMMIT}.tar.gz" \
          "${MRIDEFACER_SHA256}" /tmp/mridefacer.tar.gz \
 && mkdir -p /opt/mridefacer \
 && tar -xzf /tmp/mridefacer.tar.gz -C /opt/mridefacer --strip-components=1 \
        "mridefacer-${MRIDEFACER_COMMIT}/mridefacer" "mridefacer-${MRIDEFACER_COMMIT}/data" \
        "mridefacer-${MRIDEFACER_COMMIT}/COPYING" \
 && chmod 755 /opt/mridefacer/mridefacer \
 && for t in head_tmpl_brain head_tmpl_weights face_teeth_ear_mask; do \
        [ -s "/opt/mridefacer/data/${t}.nii.gz" ] || { echo "mridefacer: ${t} missing" >&2; exit 1; }; \
    done \
 && rm /tmp/mridefacer.tar.gz

# --------------------------------------------------------------------------------------------
# FreeSurfer's mri_deface (static binary, v1.22) and its two atlases.
FROM fetcher AS mrideface
ARG MRIDEFACE_URL=https://surfer.nmr.mgh.harvard.edu/pub/dist/mri_deface
ARG MRIDEFACE_BINARY_SHA256=
ARG MRIDEFACE_TALAIRACH_SHA256=
ARG MRIDEFACE_FACE_SHA256=
RUN mkdir -p /opt/mri_deface \
 && fetch "${MRIDEFACE_URL}/mri_deface_linux" "${MRIDEFACE_BINARY_SHA256}" /opt/mri_deface/mri_deface \
 && fetch "${MRIDEFACE_URL}/talairach_mixed_with_skull.gca.gz" "${MRIDEFACE_TALAIRACH_SHA256}" \
          /opt/mri_deface/talairach_mixed_with_skull.gca.gz \
 && fetch "${MRIDEFACE_URL}/face.gca.gz" "${MRIDEFACE_FACE_SHA256}" /opt/mri_deface/face.gca.gz \
 && gunzip /opt/mri_deface/talairach_mixed_with_skull.gca.gz /opt/mri_deface/face.gca.gz \
 && chmod 755 /opt/mri_deface/mri_deface \
 && chmod 644 /opt/mri_deface/*.gca

# --------------------------------------------------------------------------------------------
# AFNI: only @afni_refacer_run, the programs and scripts it calls, and its MNI template and
# refacer shells (the afni GUI is not needed: bidsapp links the datasets into the work dir).
# AFNI publishes binaries only for its current version: the URL is unversioned, so the SHA-256
# pins the file and the build checks that AFNI_version.txt names AFNI_VERSION.
FROM fetcher AS afni
ARG AFNI_VERSION=AFNI_25.0.07
ARG AFNI_URL=https://afni.nimh.nih.gov/pub/dist/tgz/linux_openmp_64.tgz
ARG AFNI_SHA256=
RUN fetch "${AFNI_URL}" "${AFNI_SHA256}" /tmp/afni.tgz \
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
FROM fetcher AS spm
ARG MATLAB_VERSION=R2019b
ARG MCR_VERSION=v97
ARG MCR_UPDATE=9
ARG MCR_SHA256=
ARG SPM_REVISION=r7771
ARG SPM_SHA256=
RUN apt-get update \
 && apt-get install -y --no-install-recommends libxt6 libxext6 libx11-6 \
 && rm -rf /var/lib/apt/lists/* \
 && fetch "https://ssd.mathworks.com/supportfiles/downloads/${MATLAB_VERSION}/Release/${MCR_UPDATE}/deployment_files/installer/complete/glnxa64/MATLAB_Runtime_${MATLAB_VERSION}_Update_${MCR_UPDATE}_glnxa64.zip" \
          "${MCR_SHA256}" /tmp/mcr.zip \
 && unzip -q /tmp/mcr.zip -d /tmp/mcr_install \
 && /tmp/mcr_install/install -mode silent -agreeToLicense yes -destinationFolder /opt/mcr \
 && rm -rf /tmp/mcr.zip /tmp/mcr_install \
 && fetch "https://www.fil.ion.ucl.ac.uk/spm/download/restricted/bids/spm12_${SPM_REVISION}_Linux_${MATLAB_VERSION}.zip" \
          "${SPM_SHA256}" /tmp/spm12.zip \
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
ARG FSL_VERSION=6.0.7.22
ARG AFNI_VERSION=AFNI_25.0.07
ARG MRIDEFACER_COMMIT=0a352d278e8ce47c75b47d6604ed5f835b77501f
ENV FSLDIR=/opt/fsl \
    FSLOUTPUTTYPE=NIFTI_GZ \
    FSLMULTIFILEQUIT=TRUE \
    MRIDEFACER_DATA_DIR=/opt/mridefacer/data \
    BIDSAPP_MRIDEFACE_DIR=/opt/mri_deface \
    BIDSAPP_AFNI_DATA=/opt/afni \
    BIDSAPP_FSL_VERSION=${FSL_VERSION} \
    BIDSAPP_AFNI_VERSION=${AFNI_VERSION} \
    BIDSAPP_MRIDEFACE_VERSION=1.22 \
    BIDSAPP_MRIDEFACER_VERSION=0.1+g${MRIDEFACER_COMMIT} \
    AFNI_DONT_LOGFILE=YES \
    PATH=/opt/venv/bin:/opt/fsl/share/fsl/bin:/opt/afni:/opt/mridefacer:/opt/mri_deface:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Every AFNI program finds its shared libraries.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN for prog in /opt/afni/3d* /opt/afni/ParseName /opt/afni/cat_matvec /opt/afni/ccalc; do \
        if ldd "${prog}" | grep -q "not found"; then ldd "${prog}"; exit 1; fi; \
    done
USER 1000:1000

# --------------------------------------------------------------------------------------------
FROM tools AS full-spm
COPY --from=spm /opt/mcr /opt/mcr
COPY --from=spm /opt/spm12 /opt/spm12
ARG SPM_REVISION=r7771
ARG MATLAB_VERSION=R2019b
ENV SPM_HOME=/opt/spm12 \
    MCR_HOME=/opt/mcr/v97 \
    MCR_INHIBIT_CTF_LOCK=1 \
    SPM_HTML_BROWSER=0 \
    BIDSAPP_SPM_VERSION="12 ${SPM_REVISION} (MATLAB Runtime ${MATLAB_VERSION})"
RUN python -m bidsapp.defacers.external --require all

# --------------------------------------------------------------------------------------------
# The default target: everything except SPM.
FROM tools AS full
RUN python -m bidsapp.defacers.external \
        --require pydeface mrideface fsldeface mridefacer afnideface afnireface
