# magtek-bridge: slim Python base, non-root user, hidapi from its wheel (manylinux wheels exist
# for amd64 and arm64, so no compiler is needed on either).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    MAGTEK_BRIDGE_METRICS__ADDRESS=0.0.0.0 \
    MAGTEK_BRIDGE_LOGGING__FORMAT=json \
    STATE_DIRECTORY=/var/lib/magtek-bridge

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-cache-dir . \
    && groupadd --system magtek \
    && useradd --system --gid magtek --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin magtek-bridge \
    && install -d -m 0700 -o magtek-bridge -g magtek /var/lib/magtek-bridge

USER magtek-bridge
# The outbox spool (messages held through a broker outage survive a container restart).
VOLUME ["/var/lib/magtek-bridge"]
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2).status == 200 else 1)"]
# Real readers: run with --device /dev/hidrawN --group-add <gid of the hidraw node>.
ENTRYPOINT ["magtek-bridge"]
CMD ["run"]
