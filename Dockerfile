# gpuconv on an NVIDIA CUDA 13 runtime image: the cupy-cuda13x wheel (the
# `cuda13` extra) finds cuBLAS, NVRTC and the CUDA runtime in the image, and
# the driver comes from the host through the NVIDIA container toolkit.
#
#   docker build -t gpuconv .                                  # gpuconv + CuPy (anchors: cupyx)
#   docker build -t gpuconv --build-arg INSTALL_TORCH=1 .      # + torch: cuDNN anchors
#   docker run --rm --gpus all -v "$PWD/bench/results:/results" gpuconv \
#       gpuconv bench --out /results/run
#
# The default command is `gpuconv bench` (every GPU suite, fp32 exact; JSON and
# PNG in a dated folder under /work, or --out DIR on a mounted volume).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# INSTALL_TORCH=1 adds torch for the cuDNN anchors; TORCH_SPEC is the pip
# requirement (use one built for CUDA 13, e.g. with an --index-url of your choice).
ARG INSTALL_TORCH=0
ARG TORCH_SPEC=torch

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GPUCONV_CACHE_DIR=/var/cache/gpuconv

# Ubuntu 24.04's Python 3.12 in a venv (the system interpreter is externally
# managed, PEP 668).  Versions come from the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/gpuconv-src
COPY pyproject.toml README.md ./
COPY gpuconv ./gpuconv
COPY kernels_cu ./kernels_cu
COPY bench ./bench

# A plain (non-editable) install: the wheel carries kernels_cu and the suites.
# TORCH_SPEC is split into words on purpose (a requirement plus pip options);
# the versions are the project's own constraints (pyproject.toml).
# hadolint ignore=SC2086,DL3013
RUN pip install --no-cache-dir ".[cuda13,bench]" \
    && if [ "$INSTALL_TORCH" = "1" ]; then pip install --no-cache-dir $TORCH_SPEC; fi \
    && gpuconv bench --list > /dev/null

WORKDIR /work
CMD ["gpuconv", "bench"]
