# One image for every FactoryLM process; the compose file picks the command. It holds the
# product only: the development package (demo, benchmarks, simulator, fakes) and its `sim`
# extra stay out.
# The plant board's charting library, from the npm registry as package-lock.json pins it
# (api/board.py serves it from /app/node_modules).
FROM node:20-slim AS board-assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --omit=dev

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# git and bubblewrap: the Monkey clones and commits, and runs card checks in a sandbox
# (docs/monkey.md); prlimit and setpriv come with util-linux.
RUN apt-get update && apt-get install -y --no-install-recommends git bubblewrap \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY factorylm ./factorylm
COPY workflows ./workflows
COPY activities ./activities
COPY workers ./workers
COPY ingest ./ingest
COPY api ./api
COPY temporal ./temporal
COPY app ./app
COPY config ./config
COPY --from=board-assets /assets/node_modules/uplot/dist ./node_modules/uplot/dist
# /var/lib/factorylm is the `appdata` volume (photos, the Monkey's workspace): owned by the
# process user here, so a new named volume starts writable by it rather than by root.
RUN pip install --no-cache-dir . && useradd --system --uid 10001 factorylm \
    && mkdir -p /var/lib/factorylm && chown factorylm /var/lib/factorylm
USER factorylm
ENTRYPOINT ["factorylm"]
CMD ["--help"]
