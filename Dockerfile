# sagabridge as a container: `docker build -t sagabridge .`, then `docker run sagabridge --help`.
# docker-compose.yml builds this image for the worker, the one-shot topic set-up and the demo
# services. Flows, topics.yaml and the settings file are mounted, not baked in, so one image
# serves every deployment.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what `pip install .` reads (pyproject.toml names README.md as the long description).
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install . && rm -rf /src

# An unprivileged user; /var/lib/sagabridge holds RocksDB state (--state-dir) when a volume is
# mounted there, and is the working directory, so the in-memory store's scratch folder is too.
RUN useradd --system --uid 10001 --home-dir /var/lib/sagabridge --create-home sagabridge
USER sagabridge
WORKDIR /var/lib/sagabridge

EXPOSE 6066
ENTRYPOINT ["sagabridge"]
CMD ["--help"]
