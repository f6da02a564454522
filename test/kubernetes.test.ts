// ci: floor line only: it checks files proxy-gate writes with the tools that read them, not Node's runtime
// deploy/kubernetes without a cluster: kubectl renders the kustomize base and the workload example
// offline (and decodes every object), then the manifests are held against what proxy-gate really
// is: the image `sandbox build` tags and the Dockerfile's user, and a real proxy-gate started with
// the container's own arguments, environment and mounted files, asked for the probe paths on the
// probe ports (also with its proxy port full) and for /metrics where the scrape annotations point, as
// the kubelet and Prometheus ask.
import { readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import t from 'tap'
import { DEFAULT_IMAGE } from '../lib/cli/sandbox.js'
import { parseConfig } from '../lib/rules/config.js'
import { CLI_PATH, runCli, startCli } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'
import { BASE, KUBECTL_MISSING, ROOT, decode, one, portOf, render, type Container, type DeploymentSpec, type K8sObject, type PodSpec } from './helpers/kubernetes.js'
import { NETNS_SKIP, rawSession, type RawSession } from './helpers/net.js'

const EXAMPLE = join(BASE, 'examples/workload-namespace')
/** what the kubelet puts in status.podIP here: the test namespace's loopback */
const POD_IP = '127.0.0.1'

/** The Dockerfile's USER, ENTRYPOINT and WORKDIR. */
function dockerfile(): { uid: number; gid: number; entrypoint: string[]; workdir: string } {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
  const user = /^USER (\d+):(\d+)$/m.exec(text)
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(text)
  const workdir = /^WORKDIR (\S+)$/m.exec(text)
  if (!user || !entrypoint || !workdir) throw new Error('the Dockerfile has no USER uid:gid, ENTRYPOINT [...] or WORKDIR')
  return { uid: Number(user[1]), gid: Number(user[2]), entrypoint: JSON.parse(entrypoint[1] ?? '') as string[], workdir: workdir[1] ?? '' }
}

function get(port: number, path: string, host: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: POD_IP, port, path, headers: { Host: host } }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'] ?? '', body }))
    })
    req.on('error', reject)
    req.end()
  })
}

const base = KUBECTL_MISSING ? [] : render(BASE)

/** The proxy-gate Deployment, its pod and its one container. */
function workload(): { deployment: K8sObject & { spec: DeploymentSpec }; pod: PodSpec; container: Container } {
  const deployment = one(base, 'Deployment', 'proxy-gate')
  const pod = deployment.spec.template.spec
  const [container, ...others] = pod.containers
  if (!container || others.length > 0) throw new Error('the pod should have one container')
  return { deployment, pod, container }
}

t.test('the base renders every object, all in the proxy-gate namespace', { skip: KUBECTL_MISSING }, async (t) => {
  const kinds = base.map((o) => o.kind).sort()
  t.same(kinds, ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'Namespace', 'NetworkPolicy', 'NetworkPolicy', 'PodDisruptionBudget', 'Service', 'ServiceAccount'])
  t.same(one(base, 'Namespace').metadata.name, 'proxy-gate')
  for (const o of base.filter((o) => o.kind !== 'Namespace')) t.equal(o.metadata.namespace, 'proxy-gate', `${o.kind} ${o.metadata.name}`)
})

t.test('the Deployment runs the image sandbox build tags, as the Dockerfile user, locked down', { skip: KUBECTL_MISSING }, async (t) => {
  const { pod, container } = workload()
  const image = dockerfile()
  t.equal(container.image, DEFAULT_IMAGE, 'the tag `proxy-gate sandbox build` gives it')
  t.notOk(container.command, 'the Dockerfile ENTRYPOINT stays')
  t.match(pod.securityContext, { runAsNonRoot: true, runAsUser: image.uid, runAsGroup: image.gid })
  t.match(container.securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } })
  for (const kind of ['requests', 'limits'] as const) t.ok(container.resources[kind]?.cpu && container.resources[kind].memory, `${kind} for cpu and memory`)
})

t.test('two or more pods, kept by the HPA and the PDB; the Service reaches the proxy port', { skip: KUBECTL_MISSING }, async (t) => {
  const { deployment, container } = workload()
  const podLabels = deployment.spec.template.metadata.labels
  t.same(deployment.spec.selector.matchLabels, podLabels)
  t.equal(deployment.spec.replicas, undefined, 'the HPA owns the count: apply would reset it')
  const hpa = one(base, 'HorizontalPodAutoscaler')
  t.ok(hpa.spec.minReplicas >= 2 && hpa.spec.maxReplicas > hpa.spec.minReplicas, 'at least 2 replicas')
  t.match(hpa.spec.scaleTargetRef, { kind: 'Deployment', name: deployment.metadata.name })
  t.same(hpa.spec.metrics.map((m) => m.resource.name), ['cpu'])
  const pdb = one(base, 'PodDisruptionBudget').spec
  t.same(pdb.selector.matchLabels, podLabels)
  // a drain takes one pod at a time however many the HPA runs: minAvailable 1 would let it take 9 of 10
  t.same({ maxUnavailable: pdb.maxUnavailable, minAvailable: pdb.minAvailable }, { maxUnavailable: 1, minAvailable: undefined })
  const service = one(base, 'Service', 'proxy-gate')
  t.same(service.spec.selector, podLabels)
  t.same(service.spec.ports.map((p) => portOf(container, p.targetPort)), [portOf(container, 'proxy')])
})

t.test('the rules come from the ConfigMap, mounted as a folder where --rules reads them', { skip: KUBECTL_MISSING }, async (t) => {
  const { pod, container } = workload()
  const rulesArg = container.args[container.args.indexOf('--rules') + 1] ?? ''
  const mount = container.volumeMounts.find((m) => rulesArg.startsWith(`${m.mountPath}/`))
  t.ok(mount, `${rulesArg} is on a mount`)
  t.notOk(mount?.subPath, 'no subPath: ConfigMap updates never reach subPath mounts')
  const volume = pod.volumes.find((v) => v.name === mount?.name)
  const configMap = one(base, 'ConfigMap', volume?.configMap?.name)
  const file = rulesArg.slice((mount?.mountPath.length ?? 0) + 1)
  t.ok(configMap.data?.[file], `the ConfigMap holds ${file}`)
  const dir = tempDir('k8s-rules')
  writeFileSync(join(dir, file), configMap.data?.[file] ?? '')
  const validate = await runCli(['validate', '--rules', join(dir, file)])
  t.equal(validate.code, 0, validate.stdout + validate.stderr)
})

t.test('terminationGracePeriodSeconds outlasts the drain and the shutdown grace', { skip: KUBECTL_MISSING }, async (t) => {
  const { pod } = workload()
  const configMap = one(base, 'ConfigMap')
  const parsed = parseConfig(JSON.parse(configMap.data?.['rules.json'] ?? '{}'))
  if (!parsed.ok) throw new Error('rules.json is invalid')
  const { limits } = parsed.value
  const drainMs = limits.drainDelayMs
  t.ok(drainMs >= 5000, 'a drain delay long enough for the Service endpoints to drop the pod')
  t.ok(pod.terminationGracePeriodSeconds > (drainMs + limits.shutdownGraceMs) / 1000, `${pod.terminationGracePeriodSeconds}s > ${drainMs} + ${limits.shutdownGraceMs} ms`)
})

t.test('the ingress NetworkPolicy: clients to the proxy port, Prometheus to the admin port', { skip: KUBECTL_MISSING }, async (t) => {
  const { deployment, container } = workload()
  const ingress = one(base, 'NetworkPolicy', 'proxy-gate-ingress').spec
  t.same(ingress.podSelector.matchLabels, deployment.spec.template.metadata.labels)
  t.same(ingress.policyTypes, ['Ingress'])
  t.same(ingress.ingress?.flatMap((r) => r.ports?.map((p) => p.port)), [portOf(container, 'proxy'), portOf(container, 'admin')])
  t.equal(Number(deployment.spec.template.metadata.annotations?.['prometheus.io/port']), portOf(container, 'admin'), 'scraped on the admin port')
})

t.test('the workload example: labelled for proxy-gate, out only through its pods and DNS, HTTP_PROXY at the Service', { skip: KUBECTL_MISSING }, async (t) => {
  const { deployment, container } = workload()
  const example = render(EXAMPLE)
  const namespace = one(example, 'Namespace')
  const ingress = one(base, 'NetworkPolicy', 'proxy-gate-ingress').spec
  t.match(namespace.metadata.labels, ingress.ingress?.[0]?.from?.[0]?.namespaceSelector?.matchLabels ?? { missing: true }, 'admitted by the ingress policy')
  const policy = one(example, 'NetworkPolicy').spec
  t.same(policy.podSelector, {}, 'every pod of the namespace')
  t.same(policy.policyTypes, ['Egress'])
  const [toProxy, toDns, ...rest] = policy.egress ?? []
  t.same(rest, [])
  t.same(toProxy?.to, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'proxy-gate' } }, podSelector: { matchLabels: deployment.spec.template.metadata.labels } }])
  t.same(toProxy?.ports, [{ port: portOf(container, 'proxy'), protocol: 'TCP' }])
  t.same(toDns?.ports, [{ port: 53, protocol: 'UDP' }, { port: 53, protocol: 'TCP' }])
  const service = one(base, 'Service', 'proxy-gate')
  const client = one(example, 'Deployment').spec.template.spec.containers[0]
  const serviceAddress = `${service.metadata.name}.${service.metadata.namespace ?? ''}.svc:${service.spec.ports[0]?.port ?? 0}`
  t.equal(container.args[container.args.indexOf('--advertise') + 1], serviceAddress, 'the PAC file names the Service')
  const proxyUrl = `http://${serviceAddress}`
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) t.equal(client?.env?.find((e) => e.name === name)?.value, proxyUrl, name)
})

/** The container's environment as the kubelet makes it (status.podIP is POD_IP). */
function containerEnv(c: Container): Record<string, string> {
  const env: Record<string, string> = {}
  for (const e of c.env ?? []) {
    if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = POD_IP
    else if (e.value !== undefined) env[e.name] = e.value
    else throw new Error(`env ${e.name}: only values and status.podIP are known here`)
  }
  return env
}

/** A ConfigMap's files as the base has them. */
const configMapData = (name: string): Record<string, string> => one(base, 'ConfigMap', name).data ?? {}

/**
 * The container's command line on this machine: $(VAR) expanded, each mount and the image's folder
 * mapped to a local folder (a ConfigMap's keys written as files, from `files`); `writable` are the
 * mounts' folders that the container may write to (emptyDir, not read-only).
 */
function localCommand(c: Container, spec: PodSpec, env: Record<string, string>, files = configMapData): { command: string[]; writable: string[] } {
  const image = dockerfile()
  const places: Array<[string, string]> = [[image.workdir, ROOT.replace(/\/$/, '')]]
  const writable: string[] = []
  for (const mount of c.volumeMounts) {
    const dir = tempDir('k8s-mount')
    const volume = spec.volumes.find((v) => v.name === mount.name)
    if (volume?.configMap) for (const [key, value] of Object.entries(files(volume.configMap.name))) writeFileSync(join(dir, key), value)
    if (volume?.emptyDir && mount.readOnly !== true) writable.push(dir)
    places.push([mount.mountPath, dir])
  }
  const local = (arg: string): string => {
    const expanded = arg.replace(/\$\((\w+)\)/g, (whole, name: string) => env[name] ?? whole)
    const place = places.find(([from]) => expanded === from || expanded.startsWith(`${from}/`))
    return place ? place[1] + expanded.slice(place[0].length) : expanded
  }
  return { command: [...image.entrypoint, ...c.args].map(local), writable }
}

t.test('proxy-gate started as the pod starts it answers the probes and the scrape where the manifest points', { skip: KUBECTL_MISSING || NETNS_SKIP }, async (t) => {
  const { deployment, pod, container } = workload()
  const env = containerEnv(container)
  const { command, writable } = localCommand(container, pod, env)
  const [program, ...args] = command
  t.equal(program, 'node')
  const cli = await startCli(args, { env, command: [process.execPath] })
  t.teardown(() => cli.stop())
  t.equal(cli.url, `http://0.0.0.0:${portOf(container, 'proxy')}`, 'the proxy port on every interface of the pod')
  const admin = await cli.waitFor((l) => l.message === 'admin listening')
  t.equal(admin.url, `http://${POD_IP}:${portOf(container, 'admin')}/`)
  // the root filesystem is read-only: what proxy-gate writes must land on a writable mount
  t.ok(writable.some((dir) => String(admin.tokenFile).startsWith(`${dir}/`)), `the admin token (${String(admin.tokenFile)}) is on an emptyDir`)
  for (const probe of [container.readinessProbe, container.livenessProbe]) {
    const port = portOf(container, probe.httpGet.port)
    // the kubelet dials the pod's address and names it in Host
    const answer = await get(port, probe.httpGet.path, `${POD_IP}:${port}`)
    t.equal(answer.status, 200, `${probe.httpGet.path} on ${port}`)
  }
  const annotations = deployment.spec.template.metadata.annotations ?? {}
  t.equal(annotations['prometheus.io/scrape'], 'true')
  const scrapePort = Number(annotations['prometheus.io/port'])
  const scrape = await get(scrapePort, annotations['prometheus.io/path'] ?? '', `${POD_IP}:${scrapePort}`)
  t.equal(scrape.status, 200, 'Prometheus, which names the pod address in Host, gets the metrics')
  t.match(scrape.type, /^text\/plain; version=0\.0\.4/)
  t.match(scrape.body, /^proxygate_process_/m)
  const denied = await get(portOf(container, 'proxy'), 'http://example.com/', 'example.com')
  t.equal(denied.status, 403, 'the proxy port is the proxy')
  t.equal(await cli.stop(), 0)
})

t.test('with its proxy port full, the pod still answers the kubelet: the probes are on the admin port', { skip: KUBECTL_MISSING || NETNS_SKIP }, async (t) => {
  const { pod, container } = workload()
  const env = containerEnv(container)
  const maxConnections = 2
  // the ConfigMap's rules with a small maxConnections, and no drain delay: this pod is not drained
  const files = (name: string): Record<string, string> => {
    const data = configMapData(name)
    const rules = JSON.parse(data['rules.json'] ?? '{}') as { limits?: object }
    return { ...data, 'rules.json': JSON.stringify({ ...rules, limits: { ...rules.limits, maxConnections, drainDelayMs: 0 } }) }
  }
  const [, ...args] = localCommand(container, pod, env, files).command
  const cli = await startCli(args, { env, command: [process.execPath] })
  const holders: RawSession[] = []
  t.teardown(() => {
    for (const h of holders) h.destroy()
    return cli.stop()
  })
  await cli.waitFor((l) => l.message === 'admin listening')
  const proxyPort = portOf(container, 'proxy')
  // clients that hold every connection the proxy port takes, as many tunnels or slow clients do
  for (let i = 0; i < maxConnections; i++) holders.push(await rawSession(proxyPort, POD_IP))
  await t.rejects(get(proxyPort, '/healthz', `${POD_IP}:${proxyPort}`), 'a probe of the proxy port would fail: the kubelet would restart a working pod')
  for (const probe of [container.readinessProbe, container.livenessProbe]) {
    const port = portOf(container, probe.httpGet.port)
    const answer = await get(port, probe.httpGet.path, `${POD_IP}:${port}`)
    t.equal(answer.status, 200, `${probe.httpGet.path} on ${port} answers`)
  }
})

t.test('the PodMonitor example scrapes the pods where the annotations do', { skip: KUBECTL_MISSING }, async (t) => {
  const { deployment, container } = workload()
  const monitor = one(decode(readFileSync(join(EXAMPLE, '../podmonitor.yaml'), 'utf8')), 'PodMonitor')
  t.equal(monitor.metadata.namespace, deployment.metadata.namespace)
  t.same(monitor.spec.selector.matchLabels, deployment.spec.template.metadata.labels)
  const annotations = deployment.spec.template.metadata.annotations ?? {}
  t.same(
    monitor.spec.podMetricsEndpoints.map((e) => [portOf(container, e.port), e.path]),
    [[Number(annotations['prometheus.io/port']), annotations['prometheus.io/path']]],
  )
})

t.test('CLI_PATH is the entrypoint the Dockerfile runs', async (t) => {
  const image = dockerfile()
  t.same(image.entrypoint, ['node', `${image.workdir}/${CLI_PATH.slice(ROOT.length)}`])
})
