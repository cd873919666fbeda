# The runtime image: the gRPC gateway, the reindex and finalize Jobs, and the search page.
# Installs the gateway, reindex and web extras only (no torch), pinned by constraints.txt, generates
# the protos at build time, and runs as a non-root user. Expected size: about 500 MB (the
# python:3.11-slim base is about 130 MB; the environment measured 367 MB with 'make gateway-env').
# Build from the repository root:  docker build -f docker/runtime.Dockerfile -t text2image-search:0.1.0 .
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY protos protos
COPY core core
COPY inference inference
COPY devstack devstack
COPY search search
COPY gateway gateway
COPY reindex reindex
COPY export export
COPY t2i t2i
COPY web web
RUN python -m venv /opt/tools \
    && /opt/tools/bin/pip install -c constraints.txt grpcio-tools \
    && /opt/tools/bin/python -m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos --pyi_out=protos protos/text2image/v1/text2image.proto \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt ".[gateway,reindex,web]" \
    && /opt/venv/bin/python -c "import gateway.server, reindex.main, web.server"

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="text2image-search runtime" \
      org.opencontainers.image.description="gRPC gateway, reindex jobs and search page of text2image-search (no torch)"
RUN groupadd --gid 10001 t2i && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin t2i
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 10001:10001
# gRPC and Prometheus metrics of the gateway (T2I_LISTEN, T2I_METRICS_PORT); the page uses 8080.
EXPOSE 50051 9464 8080
# Kubernetes probes the gateway over grpc.health.v1; the Jobs exit. No Docker HEALTHCHECK.
HEALTHCHECK NONE
ENTRYPOINT ["t2i"]
CMD ["serve"]
