// What to put in each Docker configuration file so that traffic goes through proxy-gate, and
// where each file lives. Pure: the caller reads, merges and writes (wiring/settings-file.ts).
import { formatCidr } from '../policy/ip.js'
import type { HostPattern } from '../policy/rules.js'

export type DockerTarget = 'settings-store' | 'settings' | 'admin' | 'cli' | 'daemon'
export const DOCKER_TARGETS: readonly DockerTarget[] = ['settings-store', 'settings', 'admin', 'cli', 'daemon']

export type OsName = 'macos' | 'windows' | 'linux'

export interface Wiring {
  /** e.g. http://127.0.0.1:3128 */
  readonly proxyUrl: string
  /** e.g. http://127.0.0.1:3128/proxy.pac */
  readonly pacUrl: string
  readonly usePac: boolean
  readonly bypass: readonly HostPattern[]
}

export interface Environment {
  readonly os: OsName
  readonly home: string
  /** %APPDATA% on Windows */
  readonly appData: string
  /** %ProgramData% on Windows */
  readonly programData: string
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
export type JsonObject = { [key: string]: Json }

/**
 * One table for the bypass spellings. Docker Desktop's lists take `*.example.com`; NO_PROXY
 * style lists (the CLI's noProxy, dockerd's no-proxy) take `.example.com` for subdomains.
 */
const WILDCARD_STYLE: Record<DockerTarget, 'star' | 'dot'> = {
  'settings-store': 'star',
  settings: 'star',
  admin: 'star',
  cli: 'dot',
  daemon: 'dot',
}

export function bypassEntries(target: DockerTarget, patterns: readonly HostPattern[]): string[] {
  return patterns.map((p) => {
    if (p.kind === 'exact') return p.name
    if (p.kind === 'wildcard') return WILDCARD_STYLE[target] === 'star' ? `*.${p.suffix}` : `.${p.suffix}`
    return formatCidr(p.cidr)
  })
}

/** The keys proxy-gate sets in each file; everything else in the file is left alone. */
export function dockerFragment(target: DockerTarget, wiring: Wiring): JsonObject {
  const { proxyUrl: url, pacUrl } = wiring
  const exclude = bypassEntries(target, wiring.bypass)
  const pac = wiring.usePac ? pacUrl : ''
  switch (target) {
    case 'settings-store':
      return {
        ProxyHTTPMode: 'manual',
        OverrideProxyHTTP: url,
        OverrideProxyHTTPS: url,
        OverrideProxyExclude: exclude.join(','),
        OverrideProxyPAC: pac,
        ContainersProxyHTTPMode: 'manual',
        ContainersOverrideProxyHTTP: url,
        ContainersOverrideProxyHTTPS: url,
        ContainersOverrideProxyExclude: exclude.join(','),
        ContainersOverrideProxyPAC: pac,
      }
    case 'settings':
      return { proxyHttpMode: 'manual', overrideProxyHttp: url, overrideProxyHttps: url, overrideProxyExclude: exclude.join(',') }
    case 'admin': {
      const common = { locked: true, mode: 'manual', http: url, https: url, exclude, pac }
      return { configurationFileVersion: 2, proxy: common, containersProxy: { ...common, transparentPorts: '*' } }
    }
    case 'cli':
      return { proxies: { default: { httpProxy: url, httpsProxy: url, noProxy: exclude.join(',') } } }
    case 'daemon':
      return { proxies: { 'http-proxy': url, 'https-proxy': url, 'no-proxy': exclude.join(',') } }
  }
}

/** Where each file lives on each OS (Docker Desktop's documented locations). */
export function defaultPath(target: DockerTarget, env: Environment): string {
  const { os, home, appData, programData } = env
  const win = (...parts: string[]) => parts.join('\\')
  const posix = (...parts: string[]) => parts.join('/')
  const desktopDir = os === 'macos' ? posix(home, 'Library/Group Containers/group.com.docker') : os === 'windows' ? win(appData, 'Docker') : posix(home, '.docker/desktop')
  const join = os === 'windows' ? win : posix
  switch (target) {
    case 'settings-store':
      return join(desktopDir, 'settings-store.json')
    case 'settings':
      return join(desktopDir, 'settings.json')
    case 'admin':
      return os === 'macos' ? '/Library/Application Support/com.docker.docker/admin-settings.json' : os === 'windows' ? win(programData, 'DockerDesktop', 'admin-settings.json') : '/usr/share/docker-desktop/admin-settings.json'
    case 'cli':
      return join(home, '.docker', 'config.json')
    case 'daemon':
      return os === 'linux' ? '/etc/docker/daemon.json' : join(home, '.docker', 'daemon.json')
  }
}

/** What the user must do after the file changes, and caveats that belong with each target. */
export function afterWriting(target: DockerTarget): string[] {
  switch (target) {
    case 'settings-store':
    case 'settings':
      return [
        'Quit Docker Desktop before writing (it may overwrite edits made while it runs), then start it again.',
        target === 'settings' ? 'This is the file of Docker Desktop 4.34 and older; 4.35+ uses settings-store.json.' : 'The Containers* keys set the proxy for container traffic (Docker Desktop 4.29+; shown in the GUI from 4.63).',
      ]
    case 'admin':
      return [
        'Needs Docker Business with sign-in enforced; the file is read when Docker Desktop is fully quit and relaunched.',
        'transparentPorts "*" sends container traffic on every port through proxy-gate. On ports other than 80 and 443 Docker hands the proxy only an IP address, so only IP rules can allow that traffic.',
        'Writing this file usually needs administrator rights (sudo / an elevated prompt).',
      ]
    case 'cli':
      return [
        'No restart: new containers and builds get HTTP_PROXY, HTTPS_PROXY and NO_PROXY (upper and lower case) from it.',
        'Inside a container 127.0.0.1 is the container itself, so the address is host.docker.internal by default.',
      ]
    case 'daemon':
      return [
        'Restart dockerd (sudo systemctl restart docker). Docker Engine 23.0+. Docker Desktop ignores daemon.json proxies: use the settings-store or admin target there.',
      ]
  }
}
