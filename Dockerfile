# One image for the API and every worker pool; the command picks the role.
# Installed editable from /app: migrations/ and js_harness/ are read from beside the code;
# the comparison's and the diagnosis's numba kernels compiled into their cache there at
# build time.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DRIFTBENCH_DATA_DIR=/data \
    DRIFTBENCH_CHROMIUM_PATH=/usr/bin/chromium

# Chromium for the TF.js backends, Node to install TF.js from the lock file.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       chromium nodejs npm fonts-dejavu-core gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY js_harness/package.json js_harness/package-lock.json js_harness/
COPY app/web/package.json app/web/package-lock.json app/web/
RUN npm ci --prefix js_harness --no-audit --no-fund --loglevel=error \
    && npm ci --prefix app/web --no-audit --no-fund --loglevel=error
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY driftbench driftbench
COPY migrations migrations
COPY js_harness/harness.html js_harness/harness.js js_harness/
RUN pip install -e . \
    && python -c "from workers.kernels import load_kernels; load_kernels()"

VOLUME /data
EXPOSE 8000
CMD ["driftbench", "serve", "--host", "0.0.0.0", "--port", "8000"]
