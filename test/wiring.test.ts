// Docker and system-proxy wiring: the generated keys against the documented formats, and the
// merge into realistic existing files (other keys kept, backup, atomic, no BOM, revert).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { bypassEntries, defaultPath, dockerFragment, type DockerTarget } from '../lib/wiring/docker.js'
import { parseBypass, type HostPattern } from '../lib/policy/rules.js'
import { systemProxyCommands } from '../lib/wiring/system-proxy.js'
import { runCli } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'

function patterns(list: string[]): HostPattern[] {
  return list.map((entry) => {
    const p = parseBypass(entry)
    if (!p.ok) throw new Error(p.error)
    return p.value
  })
}

const BYPASS = patterns(['localhost', '127.0.0.1', '::1', '*.local', '10.0.0.0/8', 'fd00::/8', 'intranet.corp'])
const WIRING = { proxyUrl: 'http://127.0.0.1:3128', pacUrl: 'http://127.0.0.1:3128/proxy.pac', usePac: false, bypass: BYPASS }

function rules(dir: string, extra: Record<string, unknown> = {}): string {
  const file = join(dir, 'rules.json')
  writeFileSync(file, JSON.stringify({ allow: ['registry-1.docker.io:443'], bypass: ['localhost', '*.local', '10.0.0.0/8'], ...extra }))
  return file
}

t.test('one table spells the bypass list for each target', async (t) => {
  const star = ['localhost', '127.0.0.1', '::1', '*.local', '10.0.0.0/8', 'fd00::/8', 'intranet.corp']
  const dot = ['localhost', '127.0.0.1', '::1', '.local', '10.0.0.0/8', 'fd00::/8', 'intranet.corp']
  const expected: Record<DockerTarget, string[]> = { 'settings-store': star, settings: star, admin: star, cli: dot, daemon: dot }
  for (const [target, list] of Object.entries(expected)) t.same(bypassEntries(target as DockerTarget, BYPASS), list, target)
})

t.test('each target carries the documented keys', async (t) => {
  const exclude = 'localhost,127.0.0.1,::1,*.local,10.0.0.0/8,fd00::/8,intranet.corp'
  t.same(dockerFragment('settings-store', WIRING), {
    ProxyHTTPMode: 'manual',
    OverrideProxyHTTP: 'http://127.0.0.1:3128',
    OverrideProxyHTTPS: 'http://127.0.0.1:3128',
    OverrideProxyExclude: exclude,
    OverrideProxyPAC: '',
    ContainersProxyHTTPMode: 'manual',
    ContainersOverrideProxyHTTP: 'http://127.0.0.1:3128',
    ContainersOverrideProxyHTTPS: 'http://127.0.0.1:3128',
    ContainersOverrideProxyExclude: exclude,
    ContainersOverrideProxyPAC: '',
  })
  t.same(dockerFragment('settings', WIRING), { proxyHttpMode: 'manual', overrideProxyHttp: 'http://127.0.0.1:3128', overrideProxyHttps: 'http://127.0.0.1:3128', overrideProxyExclude: exclude })
  const admin = dockerFragment('admin', { ...WIRING, usePac: true })
  t.same(admin, {
    configurationFileVersion: 2,
    proxy: { locked: true, mode: 'manual', http: 'http://127.0.0.1:3128', https: 'http://127.0.0.1:3128', exclude: exclude.split(','), pac: 'http://127.0.0.1:3128/proxy.pac' },
    containersProxy: { locked: true, mode: 'manual', http: 'http://127.0.0.1:3128', https: 'http://127.0.0.1:3128', exclude: exclude.split(','), pac: 'http://127.0.0.1:3128/proxy.pac', transparentPorts: '*' },
  })
  t.same(dockerFragment('cli', WIRING), { proxies: { default: { httpProxy: 'http://127.0.0.1:3128', httpsProxy: 'http://127.0.0.1:3128', noProxy: exclude.replace('*.local', '.local') } } })
  t.same(dockerFragment('daemon', WIRING), { proxies: { 'http-proxy': 'http://127.0.0.1:3128', 'https-proxy': 'http://127.0.0.1:3128', 'no-proxy': exclude.replace('*.local', '.local') } })
})

t.test('default paths per OS', async (t) => {
  const mac = { os: 'macos' as const, home: '/Users/ann', appData: '', programData: '' }
  const win = { os: 'windows' as const, home: 'C:\\Users\\ann', appData: 'C:\\Users\\ann\\AppData\\Roaming', programData: 'C:\\ProgramData' }
  const linux = { os: 'linux' as const, home: '/home/ann', appData: '', programData: '' }
  t.equal(defaultPath('settings-store', mac), '/Users/ann/Library/Group Containers/group.com.docker/settings-store.json')
  t.equal(defaultPath('settings-store', win), 'C:\\Users\\ann\\AppData\\Roaming\\Docker\\settings-store.json')
  t.equal(defaultPath('settings-store', linux), '/home/ann/.docker/desktop/settings-store.json')
  t.equal(defaultPath('settings', mac), '/Users/ann/Library/Group Containers/group.com.docker/settings.json')
  t.equal(defaultPath('admin', mac), '/Library/Application Support/com.docker.docker/admin-settings.json')
  t.equal(defaultPath('admin', win), 'C:\\ProgramData\\DockerDesktop\\admin-settings.json')
  t.equal(defaultPath('admin', linux), '/usr/share/docker-desktop/admin-settings.json')
  t.equal(defaultPath('cli', win), 'C:\\Users\\ann\\.docker\\config.json')
  t.equal(defaultPath('daemon', linux), '/etc/docker/daemon.json')
})

const EXISTING: Record<DockerTarget, Record<string, unknown>> = {
  'settings-store': { SettingsVersion: 42, AutoStart: false, MemoryMiB: 8092, ProxyHTTPMode: 'system', OverrideProxyHTTP: '', UseContainerdSnapshotter: true },
  settings: { settingsVersion: 17, memoryMiB: 2048, proxyHttpMode: 'system', overrideProxyHttp: '', overrideProxyHttps: '', overrideProxyExclude: '' },
  admin: { configurationFileVersion: 2, enhancedContainerIsolation: { locked: true, value: true }, proxy: { locked: false, mode: 'system', windowsDockerdPort: 65000, enableKerberosNtlm: false } },
  cli: { auths: { 'https://index.docker.io/v1/': {} }, credsStore: 'desktop', proxies: { 'tcp://build-box:2376': { noProxy: '*.internal' } } },
  daemon: { 'log-driver': 'json-file', features: { buildkit: true } },
}

t.test('--write merges into a realistic file, keeps every other key, backs it up, and --revert undoes it', async (t) => {
  for (const target of Object.keys(EXISTING) as DockerTarget[]) {
    const dir = tempDir('wiring')
    const file = join(dir, `${target}.json`)
    const original = `\uFEFF${JSON.stringify(EXISTING[target], null, 4)}\n`
    writeFileSync(file, original)
    const dry = await runCli(['docker', '--target', target, '--write', '--dry-run', '--file', file, '--rules', rules(dir)])
    t.equal(dry.code, 0, `${target} dry run`)
    t.match(dry.stdout, /dry run: would change/)
    t.equal(readFileSync(file, 'utf8'), original, `${target}: --dry-run writes nothing`)

    const wrote = await runCli(['docker', '--target', target, '--write', '--file', file, '--rules', rules(dir)])
    t.equal(wrote.code, 0, `${target} write: ${wrote.stderr}`)
    const text = readFileSync(file, 'utf8')
    t.not(text.charCodeAt(0), 0xfeff, `${target}: no BOM written`)
    t.match(text, /^\{\n {4}"/, `${target}: the file's own 4-space indentation kept`)
    const after = JSON.parse(text) as Record<string, unknown>
    for (const [key, value] of Object.entries(EXISTING[target])) {
      if (typeof value !== 'object' && !/proxy/i.test(key)) t.same(after[key], value, `${target}: ${key} kept`)
    }
    t.ok(existsSync(`${file}.proxy-gate-backup`), `${target}: backup beside the file`)
    t.equal(readFileSync(`${file}.proxy-gate-backup`, 'utf8'), original, `${target}: backup holds the file byte for byte`)

    const again = await runCli(['docker', '--target', target, '--write', '--file', file, '--rules', rules(dir)])
    t.match(again.stdout, /no change/, `${target}: a re-run changes nothing`)
    t.equal(readFileSync(`${file}.proxy-gate-backup`, 'utf8'), original, `${target}: a re-run keeps the first backup`)
    const changed = await runCli(['docker', '--target', target, '--write', '--file', file, '--rules', rules(dir), '--advertise', '127.0.0.9:3128'])
    t.equal(changed.code, 0, `${target} write with other settings: ${changed.stderr}`)
    t.equal(readFileSync(`${file}.proxy-gate-backup`, 'utf8'), original, `${target}: a write that changes the settings keeps the first backup too`)

    const reverted = await runCli(['docker', '--target', target, '--revert', '--file', file, '--rules', rules(dir)])
    t.equal(reverted.code, 0, `${target} revert: ${reverted.stderr}`)
    t.same(JSON.parse(readFileSync(file, 'utf8')), EXISTING[target], `${target}: revert restores the original values`)
    t.match(readFileSync(file, 'utf8'), /^\{\n {4}"/, `${target}: and keeps the indentation`)
    t.notOk(existsSync(`${file}.proxy-gate-backup`), `${target}: backup removed after revert`)
  }
})

t.test('specific merges: admin keeps its other proxy fields; cli keeps other daemon entries', async (t) => {
  const dir = tempDir('wiring')
  const admin = join(dir, 'admin-settings.json')
  writeFileSync(admin, JSON.stringify(EXISTING.admin))
  await runCli(['docker', '--target', 'admin', '--write', '--file', admin, '--rules', rules(dir)])
  const a = JSON.parse(readFileSync(admin, 'utf8')) as { proxy: Record<string, unknown>; containersProxy: Record<string, unknown>; enhancedContainerIsolation: unknown }
  t.equal(a.proxy.windowsDockerdPort, 65000)
  t.equal(a.proxy.mode, 'manual')
  t.equal(a.proxy.locked, true)
  t.same(a.proxy.exclude, ['localhost', '*.local', '10.0.0.0/8'])
  t.equal(a.containersProxy.transparentPorts, '*')
  t.same(a.enhancedContainerIsolation, { locked: true, value: true })

  const config = join(dir, 'config.json')
  writeFileSync(config, JSON.stringify(EXISTING.cli))
  await runCli(['docker', '--target', 'cli', '--write', '--file', config, '--rules', rules(dir, { listen: '127.0.0.1:3130' })])
  const c = JSON.parse(readFileSync(config, 'utf8')) as { proxies: Record<string, Record<string, string>>; credsStore: string }
  t.same(c.proxies['tcp://build-box:2376'], { noProxy: '*.internal' })
  t.same(c.proxies.default, { httpProxy: 'http://host.docker.internal:3130', httpsProxy: 'http://host.docker.internal:3130', noProxy: 'localhost,.local,10.0.0.0/8' })
  t.equal(c.credsStore, 'desktop')
})

t.test('a file that is not valid JSON is left untouched and the error says so', async (t) => {
  const dir = tempDir('wiring')
  const file = join(dir, 'settings-store.json')
  const broken = '{ "SettingsVersion": 42, }'
  writeFileSync(file, broken)
  const res = await runCli(['docker', '--target', 'settings-store', '--write', '--file', file, '--rules', rules(dir)])
  t.equal(res.code, 1)
  t.match(res.stderr, /is not valid JSON .*left untouched/)
  t.equal(readFileSync(file, 'utf8'), broken)
  t.notOk(existsSync(`${file}.proxy-gate-backup`))
  const revert = await runCli(['docker', '--target', 'settings-store', '--revert', '--file', join(dir, 'other.json'), '--rules', rules(dir)])
  t.equal(revert.code, 1)
  t.match(revert.stderr, /no backup/)
})

t.test('without --write it prints the fragment and where it goes; default paths follow HOME', async (t) => {
  const home = tempDir('wiring')
  const printed = await runCli(['docker', '--target', 'settings-store', '--pac', '--os', 'linux', '--rules', rules(home)], { env: { HOME: home } })
  t.equal(printed.code, 0)
  t.match(JSON.parse(printed.stdout), { OverrideProxyPAC: 'http://127.0.0.1:3128/proxy.pac', ContainersOverrideProxyPAC: 'http://127.0.0.1:3128/proxy.pac' })
  t.match(printed.stderr, new RegExp(`merge these keys into ${home}/\\.docker/desktop/settings-store\\.json`))
  t.match(printed.stderr, /Quit Docker Desktop/)
  const missing = await runCli(['docker', '--target', 'settings-store', '--write', '--os', 'linux', '--rules', rules(home)], { env: { HOME: home } })
  t.equal(missing.code, 1)
  t.match(missing.stderr, /does not exist: is Docker Desktop installed/)
  mkdirSync(join(home, '.docker', 'desktop'), { recursive: true })
  const written = await runCli(['docker', '--target', 'settings-store', '--write', '--os', 'linux', '--rules', rules(home)], { env: { HOME: home } })
  t.equal(written.code, 0)
  t.match(JSON.parse(readFileSync(join(home, '.docker', 'desktop', 'settings-store.json'), 'utf8')), { ProxyHTTPMode: 'manual' })
  const bad = await runCli(['docker', '--target', 'nope', '--rules', rules(home)])
  t.equal(bad.code, 2)
})

t.test('system-proxy prints each OS its commands, and --apply only runs on that OS', async (t) => {
  const wiring = { host: '127.0.0.1', port: 3128, pacUrl: 'http://127.0.0.1:3128/proxy.pac', bypass: BYPASS, mode: 'pac' as const }
  const mac = systemProxyCommands('macos', wiring, false).join('\n')
  t.match(mac, /networksetup -listallnetworkservices/)
  t.match(mac, /networksetup -setautoproxyurl "\$service" 'http:\/\/127\.0\.0\.1:3128\/proxy\.pac'/)
  const macManual = systemProxyCommands('macos', { ...wiring, mode: 'manual' }, false).join('\n')
  t.match(macManual, /-setwebproxy "\$service" '127\.0\.0\.1' 3128/)
  t.match(macManual, /-setsecurewebproxy "\$service" '127\.0\.0\.1' 3128/)
  t.match(macManual, /-setproxybypassdomains "\$service" 'localhost' '127\.0\.0\.1' '::1' '\*\.local' '10\.0\.0\.0\/8'/)
  t.match(systemProxyCommands('macos', wiring, true).join('\n'), /-setautoproxystate "\$service" off/)

  const win = systemProxyCommands('windows', { ...wiring, mode: 'manual' }, false)
  t.same(win, [
    'reg add "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings" /v ProxyEnable /t REG_DWORD /d "1" /f',
    'reg add "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings" /v ProxyServer /t REG_SZ /d "127.0.0.1:3128" /f',
    'reg add "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings" /v ProxyOverride /t REG_SZ /d "localhost;127.0.0.1;::1;*.local;10.*;intranet.corp" /f',
    'REM ProxyOverride cannot express fd00::/8; requests there go through proxy-gate',
  ])
  t.same(systemProxyCommands('windows', wiring, false), ['reg add "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings" /v AutoConfigURL /t REG_SZ /d "http://127.0.0.1:3128/proxy.pac" /f'])
  t.same(systemProxyCommands('windows', wiring, true), ['reg delete "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings" /v AutoConfigURL /f'])

  t.same(systemProxyCommands('gnome', wiring, false), ["gsettings set org.gnome.system.proxy autoconfig-url 'http://127.0.0.1:3128/proxy.pac'", "gsettings set org.gnome.system.proxy mode 'auto'"])
  t.match(systemProxyCommands('gnome', { ...wiring, mode: 'manual' }, false).join('\n'), /ignore-hosts "\['localhost', '127\.0\.0\.1', '::1', '\*\.local', '10\.0\.0\.0\/8', 'fd00::\/8', 'intranet\.corp'\]"/)
  t.same(systemProxyCommands('gnome', wiring, true), ["gsettings set org.gnome.system.proxy mode 'none'"])

  const dir = tempDir('wiring')
  const printed = await runCli(['system-proxy', '--os', 'windows', '--rules', rules(dir)])
  t.equal(printed.code, 0)
  t.match(printed.stdout, /AutoConfigURL/)
  const refused = await runCli(['system-proxy', '--os', 'windows', '--apply', '--rules', rules(dir)])
  t.equal(refused.code, 2)
  t.match(refused.stderr, /--apply runs the commands only on windows itself/)
  const both = await runCli(['system-proxy', '--pac', '--manual', '--rules', rules(dir)])
  t.equal(both.code, 2)
})
