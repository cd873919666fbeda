# A standalone Milvus for the local stack in containers (k8s/overlays/local) and its tests, since
# Milvus's image cannot be pulled here; production runs Milvus 2.6 from its operator. It holds the
# milvus wheel's standalone server (Milvus 2.3.5 with an embedded etcd), pinned by constraints.txt.
# The server unpacks itself into its data folder at start: mount a volume on /var/lib/milvus.
# Build: make images (docker/build.py).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7:the base is this argument, whose default is a pinned release tag (tests/unit/test_dockerfiles.py checks it)

FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt ./
RUN python3 -m venv /opt/milvus && /opt/milvus/bin/pip install -c constraints.txt milvus

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="text2image-search local Milvus" \
      org.opencontainers.image.description="standalone Milvus 2.3.5 from the milvus wheel (local stack and tests only)"
RUN groupadd --gid 10001 milvus && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin milvus \
    && mkdir -p /var/lib/milvus && chown 10001:10001 /var/lib/milvus
COPY --from=build /opt/milvus /opt/milvus
ENV PATH=/opt/milvus/bin:$PATH PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/milvus
USER 10001:10001
EXPOSE 19530 9091
# Kubernetes probes /healthz on 9091 over HTTP.
HEALTHCHECK NONE
ENTRYPOINT ["milvus-server"]
CMD ["--data", "/var/lib/milvus", "--authorization-enabled", "true"]
