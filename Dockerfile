# magtek-bridge: non-root user, the package in a venv, hidapi from its wheel (manylinux wheels
# exist for amd64 and arm64, so no compiler is needed on either).
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module. The default
# comes from Docker Hub; where that is unreachable, build one from Debian packages, e.g.
#   mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm base.tar
#   podman import base.tar localhost/debian-python:bookworm
#   podman build --format docker --build-arg BASE_IMAGE=localhost/debian-python:bookworm .
# (tests/integration/test_container.py does exactly that.)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/magtek-bridge/venv/bin:$PATH \
    MAGTEK_BRIDGE_METRICS__ADDRESS=0.0.0.0 \
    MAGTEK_BRIDGE_LOGGING__FORMAT=json \
    STATE_DIRECTORY=/var/lib/magtek-bridge

# PIP_CERT: a CA bundle for pip (a build behind a TLS-inspecting proxy mounts the host's).
ARG PIP_CERT=
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN python3 -m venv /opt/magtek-bridge/venv \
    && /opt/magtek-bridge/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       ${PIP_CERT:+--cert "$PIP_CERT"} . \
    && groupadd --system magtek \
    && useradd --system --gid magtek --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin magtek-bridge \
    && install -d -m 0700 -o magtek-bridge -g magtek /var/lib/magtek-bridge

USER magtek-bridge
# The outbox spool (messages held through a broker outage survive a container restart).
VOLUME ["/var/lib/magtek-bridge"]
EXPOSE 9108
# `magtek-bridge health` reads the same config as `run` (file and MAGTEK_BRIDGE_* variables),
# so it asks /healthz on whatever [metrics] port the bridge really listens on.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["magtek-bridge", "health"]
# Real readers: see docker-compose.yml (a stable /dev/magtek/* path from the udev rule, or the
# hidraw major in device_cgroup_rules with /dev mounted).
ENTRYPOINT ["magtek-bridge"]
CMD ["run"]
