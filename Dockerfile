# One image for every Python service: both APIs, the Celery worker, beat and Flower.
# docker-compose.yml picks the process with `command:`.
#
# BASE_IMAGE: any Debian-like image with Python >= 3.11 and the venv module.
# The default is the official slim image; CI builds from a stand-in with the same shape.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

# A non-root user that owns nothing but its data directories. /data/* exist in the
# image so that the named volumes mounted there start out owned by this user.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /app /data/log /data/beat /data/flower \
 && chown -R app:app /data

# `python3`: the official image and Debian both have it (`python` is not guaranteed).
RUN python3 -m venv "$VIRTUAL_ENV"

# Dependencies first, from pyproject.toml alone: editing the source does not
# invalidate this (slow) layer, only changing the dependency list does.
WORKDIR /app
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The source last (see .dockerignore). It runs from /app through PYTHONPATH; no
# install step, so nothing is built at image build time.
COPY shared ./shared
COPY fastapi_bg ./fastapi_bg
COPY celery_app ./celery_app

USER app
EXPOSE 8001 8002 5555
# Overridden by every compose service; this one makes `docker run IMAGE` do something useful.
CMD ["uvicorn", "fastapi_bg.main:app", "--host", "0.0.0.0", "--port", "8001"]
