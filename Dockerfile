# syntax=docker/dockerfile:1
# Images for kipsec. Targets:
#   sidecar   the per-pod agent (`kipsec-sidecar run --config /etc/kipsec/config.yaml`)
#   operator  the kopf operator with its HTTPS endpoints (`kipsec-operator run`)
# Build one with `docker build --target operator -t kipsec-operator .`. Capabilities are
# granted by the pod spec (NET_ADMIN; NET_RAW only for raw ESP/AH), never by the image.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# ---- build: one wheel for the whole distribution --------------------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN pip install --no-cache-dir "build==1.2.2"
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY operator/ operator/
RUN python -m build --wheel --outdir /wheels

# ---- runtime base: a venv with kipsec and its dependencies, no build tools ---------------
FROM ${PYTHON_IMAGE} AS runtime
ENV VIRTUAL_ENV=/opt/kipsec PATH=/opt/kipsec/bin:$PATH PYTHONDONTWRITEBYTECODE=1
COPY --from=build /wheels /wheels
RUN python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels

# ---- sidecar: needs nft for TCP MSS clamping; runs as root inside the pod's namespace
# with only the capabilities the pod spec adds (NET_ADMIN, and NET_RAW for raw ESP/AH).
FROM runtime AS sidecar
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables=1.0.6-2+deb12u2 \
 && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["kipsec-sidecar"]
CMD ["run", "--config", "/etc/kipsec/config.yaml"]

# ---- operator: no extra packages and no privilege. An unprivileged user (65532, as the
# chart's runAsUser), nothing written to the image at run time (PYTHONDONTWRITEBYTECODE;
# the chart mounts an in-memory /tmp), so the root filesystem can be read-only.
FROM runtime AS operator
RUN groupadd --system --gid 65532 kipsec \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kipsec
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["kipsec-operator"]
CMD ["run"]
