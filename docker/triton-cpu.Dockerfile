# A CPU Triton for the local stack in containers (k8s/overlays/local) and its tests, since NVIDIA's
# image cannot be pulled here; production runs nvcr.io/nvidia/tritonserver on GPUs. It holds the
# tritonserver 2.51 binary and python backend of the nvidia-pytriton wheel, the backend's
# Python 3.11 stub, and the environment the CPU models (configs/cpu.pbtxt) need: numpy<2 and
# onnxruntime, from requirements-triton*.txt. Build: make images (docker/build.py).
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
COPY requirements-triton.txt requirements-triton-nodeps.txt ./
RUN python3 -m venv /opt/triton \
    && /opt/triton/bin/pip install -r requirements-triton.txt \
    && /opt/triton/bin/pip install --no-deps -r requirements-triton-nodeps.txt

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="text2image-search local CPU Triton" \
      org.opencontainers.image.description="tritonserver 2.51 with the python backend, from the nvidia-pytriton wheel (local stack and tests only)"
# The python backend's stub links libpython3.11 (the upstream base has it; Debian's python3 does not).
# hadolint ignore=DL3008
RUN if [ ! -e /usr/local/lib/libpython3.11.so.1.0 ]; then \
        apt-get update && apt-get install -y --no-install-recommends libpython3.11 && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 triton && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin triton
COPY --from=build /opt/triton /opt/triton
# Triton's default backend folder, holding the python backend next to its 3.11 stub.
RUN server=/opt/triton/lib/python3.11/site-packages/pytriton/tritonserver \
    && mkdir -p /opt/tritonserver/backends/python \
    && cp "$server/backends/python/libtriton_python.so" "$server/backends/python/triton_python_backend_utils.py" \
          "$server/python_backend_stubs/3.11/triton_python_backend_stub" /opt/tritonserver/backends/python/ \
    && ln -s "$server/bin/tritonserver" /usr/local/bin/tritonserver
ENV PATH=/opt/triton/bin:$PATH LD_LIBRARY_PATH=/opt/triton/lib/python3.11/site-packages/nvidia_pytriton.libs PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8001 8002
# Kubernetes probes /v2/health/ready over HTTP.
HEALTHCHECK NONE
CMD ["tritonserver", "--help"]
