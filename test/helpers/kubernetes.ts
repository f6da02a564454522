// deploy/kubernetes as kubectl sees it, without a cluster: the kustomize base rendered offline and
// every object decoded by kubectl itself (Debian's kubectl 1.20, which CI has, or a newer one).
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

export const ROOT = new URL('../../', import.meta.url).pathname
export const BASE = join(ROOT, 'deploy/kubernetes')
export const KUBECTL_MISSING = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0 ? false : 'needs kubectl (apt-get install kubernetes-client) to render the kustomize base'

interface Meta {
  readonly name: string
  readonly namespace?: string
  readonly labels?: Record<string, string>
  readonly annotations?: Record<string, string>
}
export interface K8sObject {
  readonly kind: string
  readonly metadata: Meta
  readonly spec?: unknown
  readonly data?: Record<string, string>
}
interface Port {
  readonly name?: string
  readonly containerPort: number
  readonly protocol?: string
}
interface Probe {
  readonly httpGet: { readonly path: string; readonly port: number | string }
}
interface EnvVar {
  readonly name: string
  readonly value?: string
  readonly valueFrom?: { readonly fieldRef?: { readonly fieldPath: string } }
}
export interface Container {
  readonly image: string
  readonly command?: string[]
  readonly args: string[]
  readonly env?: EnvVar[]
  readonly ports: Port[]
  readonly readinessProbe: Probe
  readonly livenessProbe: Probe
  readonly resources: { readonly requests?: Record<string, string>; readonly limits?: Record<string, string> }
  readonly securityContext: { readonly allowPrivilegeEscalation?: boolean; readonly readOnlyRootFilesystem?: boolean; readonly capabilities?: { readonly drop?: string[] } }
  readonly volumeMounts: Array<{ readonly name: string; readonly mountPath: string; readonly subPath?: string; readonly readOnly?: boolean }>
}
export interface PodSpec {
  readonly terminationGracePeriodSeconds: number
  readonly securityContext: { readonly runAsNonRoot?: boolean; readonly runAsUser?: number; readonly runAsGroup?: number }
  readonly containers: Container[]
  readonly volumes: Array<{ readonly name: string; readonly configMap?: { readonly name: string }; readonly emptyDir?: object }>
}
export interface DeploymentSpec {
  readonly replicas?: number
  readonly selector: { readonly matchLabels: Record<string, string> }
  readonly template: { readonly metadata: Meta; readonly spec: PodSpec }
}
export interface Peer {
  readonly ipBlock?: { readonly cidr: string; readonly except?: string[] }
  readonly namespaceSelector?: { readonly matchLabels?: Record<string, string> }
  readonly podSelector?: { readonly matchLabels?: Record<string, string> }
}
interface PolicyRule {
  readonly from?: Peer[]
  readonly to?: Peer[]
  readonly ports?: Array<{ readonly port: number; readonly protocol: string }>
}
export interface PolicySpec {
  readonly podSelector: { readonly matchLabels?: Record<string, string> }
  readonly policyTypes: string[]
  readonly ingress?: PolicyRule[]
  readonly egress?: PolicyRule[]
}

function kubectl(args: readonly string[], input?: string): string {
  const run = spawnSync('kubectl', args, { input, encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${run.stderr}`)
  return run.stdout
}

/** Manifests decoded by kubectl itself: a no-op label removal prints each object as JSON. */
export function decode(yaml: string): K8sObject[] {
  const lines = kubectl(['label', '--local', '-f', '-', 'proxy-gate-none-', '-o', 'jsonpath={@}{"\\n"}'], yaml)
  return lines.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as K8sObject)
}

/** `kubectl kustomize DIR`, decoded. */
export function render(dir: string): K8sObject[] {
  return decode(kubectl(['kustomize', dir]))
}

/** The spec of each kind, as far as these checks read it. */
interface Specs {
  readonly Namespace: unknown
  readonly ConfigMap: unknown
  readonly Deployment: DeploymentSpec
  readonly Service: { readonly selector: Record<string, string>; readonly ports: Array<{ readonly port: number; readonly targetPort: number | string }> }
  readonly PodDisruptionBudget: { readonly selector: { readonly matchLabels: Record<string, string> }; readonly minAvailable?: number | string; readonly maxUnavailable?: number | string }
  readonly HorizontalPodAutoscaler: {
    readonly minReplicas: number
    readonly maxReplicas: number
    readonly scaleTargetRef: { readonly kind: string; readonly name: string }
    readonly metrics: Array<{ readonly resource: { readonly name: string } }>
  }
  readonly NetworkPolicy: PolicySpec
  readonly PodMonitor: { readonly selector: { readonly matchLabels: Record<string, string> }; readonly podMetricsEndpoints: Array<{ readonly port: string; readonly path: string }> }
}

export function one<K extends keyof Specs>(objects: readonly K8sObject[], kind: K, name?: string): K8sObject & { spec: Specs[K] } {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name))
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`)
  return found[0] as K8sObject & { spec: Specs[K] }
}

/** The container port a probe or Service names (by name or number). */
export function portOf(container: Container, port: number | string): number {
  const found = container.ports.find((p) => p.name === port || p.containerPort === port)
  if (!found) throw new Error(`the container has no port ${port}`)
  return found.containerPort
}
