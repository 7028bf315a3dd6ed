# The agent's image: `cz-agent serve` as a non-root user, on a read-only root filesystem (it writes only under
# /data, the volume of the run store and bill inbox, and /tmp). tests/deploy/test_dockerfile.py replays the
# builder's RUN lines in a virtualenv and lints this file with hadolint.

FROM python:3.11.13-slim-bookworm AS builder
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent/ agent/
RUN python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install .

FROM python:3.11.13-slim-bookworm
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
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["cz-agent"]
CMD ["serve"]
