# tally: one image for the API, the worker and the migrations (docker-compose.yml picks the command).
# TypeScript runs through tsx at runtime; the only build step is the dashboard's bundle (esbuild).
FROM node:20-bookworm-slim

WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false \
    NPM_CONFIG_FUND=false

# Dependencies first, so source edits don't invalidate this layer.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# Source stays root-owned and read-only for the app user.
COPY . .
# The dashboard's bundle (.build/web/), which the API serves at /dashboard.
RUN node scripts/build-web.mjs

ENV NODE_ENV=production \
    PORT=3000
USER node
EXPOSE 3000
CMD ["npm", "run", "api"]
