# syntax=docker/dockerfile:1
# BackPath FHIR server image.
#   docker build -t backpath .
#   docker run -p 8080:8080 -v backpath-data:/data backpath
# Production: pass DATABASE_URL=postgresql+asyncpg://user:pass@host:5432/db (and no BACKPATH_DEV_MODE),
# BACKPATH_BASE_URL, and a token issuer (BACKPATH_AUTH_ISSUER + BACKPATH_AUTH_JWKS_URL, or the built-in
# token endpoint's BACKPATH_TOKEN_SIGNING_KEY_FILE + BACKPATH_BACKEND_CLIENTS_FILE): without one the
# server refuses to start (see README, "Security").

# ---- LHC-Forms for the patient form, from the same package-lock.json as development (no CDN at run time)
FROM node:20-bookworm-slim AS lforms
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

# ---- build stage: install into a self-contained venv, so the runtime stage gets no pip/build leftovers
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ ./app/
# Regular (non-editable) install: the package, its data files and Alembic migrations land in the venv.
RUN /opt/venv/bin/pip install --no-cache-dir .

# ---- runtime stage
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite+aiosqlite:////data/backpath.db \
    BACKPATH_CONTENT_DIRS=/app/plandefinitions:/app/fhir_profiles \
    BACKPATH_LFORMS_DIR=/app/lforms
# The content dirs are not inside the installed package (its default looks next to app/ in
# site-packages), hence BACKPATH_CONTENT_DIRS above pointing at the copies in /app.

# Fixed non-root uid/gid so volume ownership is predictable across hosts and rebuilds.
RUN groupadd --system --gid 10001 backpath \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin backpath \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Content stays root-owned (read-only for the service); only /data is writable.
COPY plandefinitions/ ./plandefinitions/
COPY fhir_profiles/ ./fhir_profiles/
COPY --from=lforms /src/node_modules/lforms/dist/lforms/webcomponent/ ./lforms/webcomponent/
COPY --from=lforms /src/node_modules/lforms/dist/lforms/fhir/R4/ ./lforms/fhir/R4/

USER 10001:10001
# Declared after the chown so a new named volume starts out owned by the service user.
VOLUME ["/data"]
EXPOSE 8080

# slim has no curl: use python's urllib (non-2xx or no answer raises -> exit 1 -> unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["backpath", "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "auto"]
