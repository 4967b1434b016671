# portready in a container, for CI jobs that check a lab or a network segment.
#   docker build -t portready .
#   docker run --rm -v "$PWD:/work" portready scan -i /work/inventory.yaml --json /work/out/report.json
# `pip install .` is the default install: no impacket, so no attack tooling in the image
# (.ci/run checks the same install); portready[dcom] is left out on purpose.
FROM python:3.12-slim

LABEL org.opencontainers.image.title="portready" \
      org.opencontainers.image.description="Proves that the network lets a Netwrix Auditor server reach what it audits"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY scanner ./scanner
COPY profiles ./profiles
COPY reports ./reports
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin portready \
    && mkdir -p /work \
    && chown portready /work

USER 10001
WORKDIR /work
ENTRYPOINT ["portready"]
CMD ["--help"]
