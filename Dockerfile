# The agent's image: `cz-agent serve` as a non-root user, on a read-only root filesystem (it writes only under
# /data, the volume of the run store and bill inbox, and /tmp). tests/deploy/test_dockerfile.py replays the
# builder's RUN lines in a virtualenv and lints this file with hadolint.
#
# Both stages start from python:3.11.13-slim-bookworm pinned by digest: the tag's multi-arch index (linux/amd64 and
# linux/arm64), as public Dockerfiles pin it and as an arm64 Docker host reported the tag resolving (the amd64
# manifest alone is sha256:cec9aa7aa96eea4fa036e9b82be1e6b325f2e3707f462d885868df51ec0a4b47). Taken from public
# sources, not read from the registry: `docker buildx imagetools inspect python:3.11.13-slim-bookworm` shows it.
#
# Build: docker build --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE_URL=<the repository's URL> .
# BASE_IMAGE replaces that base where the public registry is out of reach: the test node builds on a Debian
# bookworm rootfs of Debian's python3 (scripts/node-images.sh), with `python` on its PATH as here.

ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
FROM ${BASE_IMAGE} AS builder
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependencies exactly as locked, every file checked against its hash (`make lock` writes the lock), then the
# agent alone: a layer of dependencies that a change of the sources leaves cached.
COPY requirements.lock ./
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY agent/ agent/
RUN "$VIRTUAL_ENV/bin/pip" install --no-deps .

FROM ${BASE_IMAGE}
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    CZ_AGENT_HOST=0.0.0.0 \
    CZ_AGENT_PORT=8080 \
    CZ_AGENT_STORE_URL=sqlite:////data/runs.db \
    CZ_AGENT_INBOX_DIR=/data/inbox
RUN groupadd --gid 10001 cz-agent \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cz-agent \
    && mkdir -p /data/inbox \
    && chown -R 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
# Declared late: a new revision leaves the layers above cached.
ARG VERSION=0.1.0
ARG REVISION=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="cz-allocation-agent" \
      org.opencontainers.image.description="Kubernetes-integrated cost allocation agent: exact chargeback of cloud bills to companies and services" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["cz-agent"]
CMD ["serve"]
