# One image for every Python service: both APIs, the Celery worker, beat and Flower.
# docker-compose.yml picks the process with `command:`.
#
# BASE_IMAGE: any Debian-like image with Python >= 3.11 and the venv module.
# The default is the official slim image of 3.11, the Python every measured page
# names; CI builds from a stand-in with the same shape (Debian bookworm's 3.11).
ARG BASE_IMAGE=python:3.11-slim

# --- the dependencies, from the lock file and nothing else -------------------------------
FROM ${BASE_IMAGE} AS deps
ARG UV_VERSION=0.13.9
# UV_SYSTEM_CERTS: trust the image's CA store (a proxy's CA added there works too).
# UV_COMPILE_BYTECODE: the dependencies' bytecode is compiled here, once, not by
# each of the five containers at every start (PYTHONDONTWRITEBYTECODE below).
ENV UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_CACHE_DIR=/root/.cache/uv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# uv itself, pinned, in a venv of its own that the final image does not keep.
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
# --frozen: install exactly uv.lock (a stale lock fails CI's `uv lock --check`, the
# build never resolves anew); --no-dev and no extras: what the services import, and
# only that (no matplotlib, numpy, psutil, httpx: the experiments' extra). uv's cache
# is a build cache mount: a rebuild after a lock change downloads only what changed,
# and the cache is in no layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3

# --- the image ----------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

# A non-root user that owns nothing but its data directories. /data/* exist in the
# image so that the named volumes mounted there start out owned by this user.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /app /data/log /data/beat /data/flower \
 && chown -R app:app /data

# The venv from the lock (its python links to this same base image's).
COPY --from=deps /opt/venv /opt/venv

# The source last (see .dockerignore). It runs from /app through PYTHONPATH; the
# project itself is not installed (pyproject.toml gives the API its version).
WORKDIR /app
# The whole context: .dockerignore lets in only pyproject.toml, uv.lock, shared/ and
# the implementations' packages (fastapi_bg/ and every <queue>_app/).
COPY . ./
# The project's own bytecode too (root-owned, like the source).
RUN python -m compileall -q /app

USER app
EXPOSE 8001-8005 5555
# Overridden by every compose service; this one makes `docker run IMAGE` do something useful.
CMD ["uvicorn", "fastapi_bg.main:app", "--host", "0.0.0.0", "--port", "8001"]
