# proxy-gate as a container image. It builds with no network access: the build context is what
# `proxy-gate sandbox build` prepares (dist/, the production node_modules, the default rules), so
# nothing is downloaded or installed here and an air-gapped site only needs a local Node image.
#   proxy-gate sandbox build [--base IMAGE] [--tag TAG]
ARG NODE_IMAGE=node:22-slim
FROM ${NODE_IMAGE}
WORKDIR /opt/proxy-gate
COPY package.json rules.json rules.schema.json ./
COPY node_modules/ ./node_modules/
COPY dist/ ./dist/
ENV NODE_ENV=production
# not root: rules come in read-only at /etc/proxy-gate, nothing is written (run it with --read-only)
USER 1000:1000
EXPOSE 3128
STOPSIGNAL SIGTERM
# started with another --listen port? set PROXY_GATE_HEALTH_URL to match
ENV PROXY_GATE_HEALTH_URL=http://127.0.0.1:3128/healthz
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "require('http').get(process.env.PROXY_GATE_HEALTH_URL, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
ENTRYPOINT ["node", "/opt/proxy-gate/dist/cli.js"]
CMD ["start", "--rules", "/etc/proxy-gate/rules.json", "--listen", "0.0.0.0:3128", "--insecure-open", "--admin-listen", "off"]
