// The operating system's proxy settings as commands a person can read before running them:
// macOS networksetup (every network service), Windows registry (WinINet), GNOME gsettings.
import { formatCidr } from '../policy/ip.js'
import { describePattern, type HostPattern } from '../policy/rules.js'

export type SystemOs = 'macos' | 'windows' | 'gnome'
export const SYSTEM_OSES: readonly SystemOs[] = ['macos', 'windows', 'gnome']

export interface SystemWiring {
  readonly host: string
  readonly port: number
  readonly pacUrl: string
  readonly bypass: readonly HostPattern[]
  readonly mode: 'pac' | 'manual'
}

const INTERNET_SETTINGS = '"HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings"'

/** Single-quoted for sh: the values are validated hosts and URLs, quoted anyway. */
function sq(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`
}

/** WinINet's ProxyOverride has no CIDRs: octet-aligned IPv4 ranges become `10.*`, others are skipped. */
function windowsOverride(bypass: readonly HostPattern[]): { entries: string[]; skipped: string[] } {
  const entries: string[] = []
  const skipped: string[] = []
  for (const p of bypass) {
    if (p.kind !== 'cidr' || p.cidr.prefix === (p.cidr.family === 4 ? 32 : 128)) {
      entries.push(describePattern(p))
      continue
    }
    const text = formatCidr(p.cidr)
    if (p.cidr.family === 4 && p.cidr.prefix % 8 === 0 && p.cidr.prefix > 0) {
      const octets = text.split('/')[0]?.split('.').slice(0, p.cidr.prefix / 8) ?? []
      entries.push([...octets, '*'].join('.'))
    } else skipped.push(text)
  }
  return { entries, skipped }
}

function macos(w: SystemWiring, revert: boolean): string[] {
  const body = revert
    ? w.mode === 'pac'
      ? ['  networksetup -setautoproxystate "$service" off']
      : ['  networksetup -setwebproxystate "$service" off', '  networksetup -setsecurewebproxystate "$service" off']
    : w.mode === 'pac'
      ? [`  networksetup -setautoproxyurl "$service" ${sq(w.pacUrl)}`, '  networksetup -setautoproxystate "$service" on']
      : [
          `  networksetup -setwebproxy "$service" ${sq(w.host)} ${w.port}`,
          `  networksetup -setsecurewebproxy "$service" ${sq(w.host)} ${w.port}`,
          `  networksetup -setproxybypassdomains "$service" ${w.bypass.map(describePattern).map(sq).join(' ') || 'Empty'}`,
        ]
  return [
    '# every network service (the first line of the listing is a legend; a leading * marks a disabled service)',
    "networksetup -listallnetworkservices | tail -n +2 | sed 's/^\\*//' | while IFS= read -r service; do",
    ...body,
    'done',
  ]
}

function windows(w: SystemWiring, revert: boolean): string[] {
  const reg = (name: string, type: string, data: string) => `reg add ${INTERNET_SETTINGS} /v ${name} /t ${type} /d "${data}" /f`
  if (revert) {
    return w.mode === 'pac' ? [`reg delete ${INTERNET_SETTINGS} /v AutoConfigURL /f`] : [reg('ProxyEnable', 'REG_DWORD', '0')]
  }
  if (w.mode === 'pac') return [reg('AutoConfigURL', 'REG_SZ', w.pacUrl)]
  const { entries, skipped } = windowsOverride(w.bypass)
  return [
    reg('ProxyEnable', 'REG_DWORD', '1'),
    reg('ProxyServer', 'REG_SZ', `${w.host}:${w.port}`),
    reg('ProxyOverride', 'REG_SZ', entries.join(';')),
    ...skipped.map((s) => `REM ProxyOverride cannot express ${s}; requests there go through proxy-gate`),
  ]
}

function gnome(w: SystemWiring, revert: boolean): string[] {
  const set = (schema: string, key: string, value: string) => `gsettings set ${schema} ${key} ${value}`
  const base = 'org.gnome.system.proxy'
  if (revert) return [set(base, 'mode', sq('none'))]
  if (w.mode === 'pac') return [set(base, 'autoconfig-url', sq(w.pacUrl)), set(base, 'mode', sq('auto'))]
  const hosts = `"[${w.bypass.map(describePattern).map(sq).join(', ')}]"`
  return [
    set(`${base}.http`, 'host', sq(w.host)),
    set(`${base}.http`, 'port', String(w.port)),
    set(`${base}.https`, 'host', sq(w.host)),
    set(`${base}.https`, 'port', String(w.port)),
    set(base, 'ignore-hosts', hosts),
    set(base, 'mode', sq('manual')),
  ]
}

export function systemProxyCommands(os: SystemOs, wiring: SystemWiring, revert: boolean): string[] {
  if (os === 'macos') return macos(wiring, revert)
  if (os === 'windows') return windows(wiring, revert)
  return gnome(wiring, revert)
}
