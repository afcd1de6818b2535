# syntax=docker/dockerfile:1
# Images for kipsec. Targets:
#   sidecar   the per-pod agent (`kipsec-sidecar run --config /etc/kipsec/config.yaml`)
#   operator  the kopf operator with its HTTPS endpoints (`kipsec-operator run`)
# Build one with `docker build --target operator -t kipsec-operator .` (docs/install.md).
# `./dev images` builds both with podman on a machine without a registry or network
# inside the build: from a Debian base made with mmdebstrap (PYTHON_IMAGE) and the
# wheels of images/wheelhouse/ only (OFFLINE=1), see images/build.sh.
# Capabilities are granted by the pod spec (NET_ADMIN; NET_RAW only for raw ESP/AH),
# never by the image.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---- build: one virtualenv per program ---------------------------------------------------
# Dependencies come from images/wheelhouse/ (wheels made on the host with `pip wheel`)
# and, unless OFFLINE=1, from PyPI; images/constraints.txt pins every version, so two
# builds of a commit install the same set. They are installed before the sources are
# copied (from kipsec's metadata alone: the project without its packages), so a change
# of code rebuilds only the last layers. Only /opt/kipsec of the *-venv stages reaches
# an image (a virtualenv is made where it runs: its scripts name their interpreter).
FROM ${PYTHON_IMAGE} AS build
ARG OFFLINE=0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/images/constraints.txt \
    PIP_FIND_LINKS=/wheels PIP_NO_INDEX=${OFFLINE}
WORKDIR /src
COPY images/wheelhouse/ /wheels/
COPY images/constraints.txt images/
COPY pyproject.toml README.md ./
RUN python3 -m venv /tools \
 && /tools/bin/pip wheel --quiet --no-deps --wheel-dir /metadata .

FROM build AS sidecar-deps
RUN python3 -m venv /opt/kipsec \
 && /opt/kipsec/bin/pip install --quiet /metadata/kipsec-*.whl

FROM build AS operator-deps
RUN python3 -m venv /opt/kipsec \
 && /opt/kipsec/bin/pip install --quiet "$(echo /metadata/kipsec-*.whl)[operator]"

FROM build AS wheel
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN /tools/bin/pip wheel --quiet --no-deps --wheel-dir /dist .

FROM sidecar-deps AS sidecar-venv
COPY --from=wheel /dist/ /dist/
RUN /opt/kipsec/bin/pip install --quiet --no-deps --force-reinstall /dist/kipsec-*.whl \
 && /opt/kipsec/bin/pip check \
 && /opt/kipsec/bin/python -m pip uninstall --quiet --yes pip setuptools

FROM operator-deps AS operator-venv
COPY --from=wheel /dist/ /dist/
RUN /opt/kipsec/bin/pip install --quiet --no-deps --force-reinstall /dist/kipsec-*.whl \
 && /opt/kipsec/bin/pip check \
 && /opt/kipsec/bin/python -m pip uninstall --quiet --yes pip setuptools

# ---- sidecar: needs nft for TCP MSS clamping; runs as root inside the pod's namespace
# with only the capabilities the pod spec adds (NET_ADMIN, and NET_RAW for raw ESP/AH).
# The mmdebstrap base already holds nftables; the public Python image gets it from apt.
FROM ${PYTHON_IMAGE} AS sidecar
RUN if ! command -v nft >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends nftables=1.0.6-2+deb12u2 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=sidecar-venv /opt/kipsec /opt/kipsec
ENV VIRTUAL_ENV=/opt/kipsec PATH=/opt/kipsec/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["kipsec-sidecar"]
CMD ["run", "--config", "/etc/kipsec/config.yaml"]

# ---- operator: no extra packages and no privilege. An unprivileged user (65532, as the
# chart's runAsUser), nothing written to the image at run time (PYTHONDONTWRITEBYTECODE;
# the chart mounts an in-memory /tmp), so the root filesystem can be read-only.
FROM ${PYTHON_IMAGE} AS operator
RUN groupadd --system --gid 65532 kipsec \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kipsec
COPY --from=operator-venv /opt/kipsec /opt/kipsec
ENV VIRTUAL_ENV=/opt/kipsec PATH=/opt/kipsec/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["kipsec-operator"]
CMD ["run"]
