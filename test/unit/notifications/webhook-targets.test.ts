import fc from 'fast-check';
import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebhookRejectedError, postWebhook } from '../../../src/notifications/transports';
import {
  STRICT_WEBHOOK_TARGETS,
  WebhookTargetRefusedError,
  assertWebhookTarget,
  classifyAddress,
  pinnedLookup,
  type AddressClass,
  type WebhookTargetPolicy,
} from '../../../src/notifications/webhook-targets';
import { loadConfig } from '../../../src/config';
import { internalIpv4 } from '../../support/internal-addresses';
import { webhookTargetPolicyFromConfig } from '../../../src/notifications/webhook-targets';

/** The host `new URL` makes of a URL: what the guard sees after normalization. */
const hostOf = (url: string) => new URL(url).hostname;

describe('classifyAddress', () => {
  test.each<[string, AddressClass]>([
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['172.32.0.1', 'public'], // just past 172.16/12
    ['100.128.0.1', 'public'], // just past 100.64/10
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.0.1', 'link_local'],
    ['169.254.169.254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['192.0.0.192', 'metadata'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['2606:4700:4700::1111', 'public'],
    ['2a00:1450:4001:80b::200e', 'public'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['::', 'unspecified'],
    ['fc00::1', 'unique_local'],
    ['fd12:3456::1', 'unique_local'],
    ['fd00:ec2::254', 'metadata'],
    ['fe80::1', 'link_local'],
    ['fe80::1%eth0', 'link_local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'ipv4_mapped'],
    ['::ffff:7f00:1', 'ipv4_mapped'],
    ['::ffff:8.8.8.8', 'ipv4_mapped'],
    ['::ffff:169.254.169.254', 'metadata'],
    ['0:0:0:0:0:ffff:a9fe:a9fe', 'metadata'],
    ['::127.0.0.1', 'reserved'], // IPv4-compatible (deprecated)
    ['64:ff9b::7f00:1', 'loopback'], // NAT64 of 127.0.0.1
    ['64:ff9b::808:808', 'public'], // NAT64 of 8.8.8.8
    ['2002:7f00:1::1', 'loopback'], // 6to4 of 127.0.0.1
    ['2002:a9fe:a9fe::1', 'metadata'], // 6to4 of 169.254.169.254
    ['2001:db8::1', 'reserved'],
    ['2001::1', 'reserved'], // Teredo
  ])('%s is %s', (address, expected) => {
    expect(classifyAddress(address)).toBe(expected);
  });

  test.each<[string, string, AddressClass]>([
    // Forms the URL parser turns into a dotted quad (or a canonical IPv6) before the guard sees them.
    ['decimal', 'http://2130706433/', 'loopback'],
    ['octal', 'http://0177.0.0.1/', 'loopback'],
    ['hex', 'http://0x7f.0x0.0x0.0x1/', 'loopback'],
    ['short', 'http://127.1/', 'loopback'],
    ['mixed', 'http://0x7f.1/', 'loopback'],
    ['decimal metadata', 'http://2852039166/', 'metadata'],
    ['octal private', 'http://012.0.0.1/', 'private'],
    ['zero', 'http://0/', 'unspecified'],
    ['mapped', 'http://[::ffff:127.0.0.1]/', 'ipv4_mapped'],
    ['mapped metadata', 'http://[::ffff:169.254.169.254]/', 'metadata'],
    ['long IPv6 loopback', 'http://[0000:0000:0000:0000:0000:0000:0000:0001]/', 'loopback'],
    ['upper-case ULA', 'http://[FD00:EC2::254]/', 'metadata'],
  ])('%s: %s is %s once parsed', (_name, url, expected) => {
    expect(classifyAddress(hostOf(url))).toBe(expected);
  });

  test('every address of the blocked IPv4 ranges is refused by the strict policy', async () => {
    const blocked = internalIpv4();
    await fc.assert(
      fc.asyncProperty(blocked, fc.constantFrom('dotted', 'decimal', 'mapped'), async (parts, form) => {
        const dotted = parts.join('.');
        const value = parts.reduce((n, p) => n * 256 + p, 0);
        const url = form === 'dotted' ? `https://${dotted}/h` : form === 'decimal' ? `https://${value}/h` : `https://[::ffff:${dotted}]/h`;
        await expect(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, url)).rejects.toBeInstanceOf(WebhookTargetRefusedError);
      }),
      { numRuns: 300 },
    );
  });

  test('text that is not an IP address is an error, not a class', () => {
    expect(() => classifyAddress('example.com')).toThrow(TypeError);
    expect(() => classifyAddress('999.1.1.1')).toThrow(TypeError);
  });
});

describe('the policy', () => {
  const resolver = (answers: Record<string, string[]>) => async (host: string): Promise<LookupAddress[]> => {
    const addresses = answers[host];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  const names = resolver({
    'hooks.example.com': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
    'internal.example.com': ['10.0.0.7'],
    'sneaky.example.com': ['93.184.216.34', '127.0.0.1'], // one public, one loopback
    'metadata.example.com': ['169.254.169.254'],
  });
  const refusal = (p: Promise<unknown>) => p.then(() => 'accepted', (err: WebhookTargetRefusedError) => err.reason);
  const local: WebhookTargetPolicy = { allowPrivateTargets: true, httpAllowedHosts: ['127.0.0.1', 'localhost'] };

  test('strict: https to names that resolve to public addresses only', async () => {
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'https://hooks.example.com/x', names))).toBe('accepted');
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'http://hooks.example.com/x', names))).toBe('scheme');
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'https://internal.example.com/x', names))).toBe('private');
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'https://sneaky.example.com/x', names))).toBe('loopback');
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'https://metadata.example.com/x', names))).toBe('metadata');
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'https://127.0.0.1/x', names))).toBe('loopback');
    // Cannot be judged now: accepted, and judged again at each delivery.
    expect(await refusal(assertWebhookTarget(STRICT_WEBHOOK_TARGETS, 'https://nowhere.example.com/x', names))).toBe('accepted');
  });

  test('the http allow-list names hosts; the private opt-in never opens metadata addresses', async () => {
    const allowList: WebhookTargetPolicy = { allowPrivateTargets: false, httpAllowedHosts: ['hooks.example.com'] };
    expect(await refusal(assertWebhookTarget(allowList, 'http://hooks.example.com:8080/x', names))).toBe('accepted');
    expect(await refusal(assertWebhookTarget(allowList, 'http://internal.example.com/x', names))).toBe('scheme');
    expect(await refusal(assertWebhookTarget(local, 'http://127.0.0.1:9/x', names))).toBe('accepted');
    expect(await refusal(assertWebhookTarget(local, 'https://internal.example.com/x', names))).toBe('accepted');
    expect(await refusal(assertWebhookTarget(local, 'https://metadata.example.com/x', names))).toBe('metadata');
    expect(await refusal(assertWebhookTarget(local, 'https://[fd00:ec2::254]/x', names))).toBe('metadata');
    expect(await refusal(assertWebhookTarget(local, 'http://169.254.169.254/latest/meta-data/', names))).toBe('scheme');
  });

  test('the configuration: strict by default, opt-in and allow-list from the environment', () => {
    expect(webhookTargetPolicyFromConfig(loadConfig({}))).toEqual({ allowPrivateTargets: false, httpAllowedHosts: [] });
    expect(webhookTargetPolicyFromConfig(loadConfig({ WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true', WEBHOOK_HTTP_ALLOWED_HOSTS: 'LocalHost,127.0.0.1,[::1]' }))).toEqual({
      allowPrivateTargets: true,
      httpAllowedHosts: ['localhost', '127.0.0.1', '::1'],
    });
    expect(() => loadConfig({ WEBHOOK_ALLOW_PRIVATE_TARGETS: 'yes' })).toThrow(/WEBHOOK_ALLOW_PRIVATE_TARGETS/);
    expect(() => loadConfig({ WEBHOOK_HTTP_ALLOWED_HOSTS: 'a b' })).toThrow(/WEBHOOK_HTTP_ALLOWED_HOSTS/);
  });

  test('the delivery lookup hands the socket only the addresses it checked, so a rebinding answer is refused', async () => {
    // A name that answers public first and loopback afterwards (DNS rebinding).
    let calls = 0;
    const rebinding = async (): Promise<LookupAddress[]> => (calls++ === 0 ? [{ address: '93.184.216.34', family: 4 }] : [{ address: '127.0.0.1', family: 4 }]);
    const lookup = pinnedLookup(STRICT_WEBHOOK_TARGETS, rebinding);
    const ask = (options: { all?: boolean; family?: number }) =>
      new Promise<{ err: NodeJS.ErrnoException | null; address: unknown }>((resolve) => lookup('rebind.example.com', options, (err, address) => resolve({ err, address })));
    expect(await ask({ all: true })).toEqual({ err: null, address: [{ address: '93.184.216.34', family: 4 }] });
    const second = await ask({});
    expect(second.err).toBeInstanceOf(WebhookTargetRefusedError);
    expect(second.err!.message).toContain('rebind.example.com (127.0.0.1) is a loopback address');

    const both = pinnedLookup(STRICT_WEBHOOK_TARGETS, names);
    const v6 = await new Promise<unknown>((resolve) => both('hooks.example.com', { family: 6 }, (_err, address, family) => resolve([address, family])));
    expect(v6).toEqual(['2606:2800:220:1:248:1893:25c8:1946', 6]);
  });
});

describe('postWebhook', () => {
  const local: WebhookTargetPolicy = { allowPrivateTargets: true, httpAllowedHosts: ['127.0.0.1'] };
  let server: http.Server;
  let url: string;
  const hits: string[] = [];
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      hits.push(req.url ?? '');
      req.resume();
      if (req.url === '/endless') {
        // A 2xx whose body never ends: the sender must stop reading, not wait for the end.
        res.writeHead(200, { 'content-type': 'text/plain' });
        const chunk = Buffer.alloc(1024, 'x');
        const timer = setInterval(() => res.write(chunk), 5);
        res.on('close', () => clearInterval(timer));
        return;
      }
      if (req.url === '/redirect') return void res.writeHead(302, { location: 'http://127.0.0.1:9/' }).end();
      res.writeHead(204).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const request = (path: string) => ({ url: `${url}${path}`, body: '{}', headers: {} });

  test('reads at most a few KiB of an answer: an endless 2xx body is delivered at once, not timed out', async () => {
    const started = Date.now();
    await expect(postWebhook(request('/endless'), 5_000, local)).resolves.toBeUndefined();
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  test('a redirect fails the attempt; a refused target sends nothing', async () => {
    await expect(postWebhook(request('/redirect'), 2_000, local)).rejects.toBeInstanceOf(WebhookRejectedError);
    const before = hits.length;
    await expect(postWebhook(request('/ok'), 2_000, STRICT_WEBHOOK_TARGETS)).rejects.toThrow(/https/);
    await expect(postWebhook(request('/ok'), 2_000, { allowPrivateTargets: false, httpAllowedHosts: ['127.0.0.1'] })).rejects.toThrow('127.0.0.1 is a loopback address');
    expect(hits.length).toBe(before);
    await expect(postWebhook(request('/ok'), 2_000, local)).resolves.toBeUndefined();
    expect(hits.length).toBe(before + 1);
  });

  test('a name is resolved by the pinned lookup and delivered to the address it checked', async () => {
    const byName = { url: url.replace('127.0.0.1', 'localhost'), body: '{}', headers: {} };
    const before = hits.length;
    await expect(postWebhook({ ...byName, url: `${byName.url}/named` }, 2_000, { allowPrivateTargets: true, httpAllowedHosts: ['localhost'] })).resolves.toBeUndefined();
    expect(hits.slice(before)).toEqual(['/named']);
  });
});
