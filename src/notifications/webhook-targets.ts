import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import type { Config } from '../config';

/**
 * Where a webhook may go. Tenants choose webhook URLs, and the worker POSTs to them from inside
 * the deployment, so a URL naming an internal address would make tally call internal services
 * (server-side request forgery). A target must be `https` (plain `http` only to hosts on an
 * allow-list) and must resolve to public addresses only. The API checks this when a URL is
 * registered; the worker checks it again at every delivery, on the address the connection
 * actually uses (see {@link pinnedLookup}), so a name that is re-pointed after registration (DNS
 * rebinding) is caught at the door of the socket.
 */

/** What kind of address an IP is; anything but `public` is refused by default. */
export type AddressClass =
  | 'public'
  | 'metadata'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'cgnat'
  | 'unique_local'
  | 'ipv4_mapped'
  | 'multicast'
  | 'reserved';

/** The operator's choice (WEBHOOK_ALLOW_PRIVATE_TARGETS, WEBHOOK_HTTP_ALLOWED_HOSTS). */
export interface WebhookTargetPolicy {
  /** Loopback, private, link-local, CGNAT, unique-local and similar addresses are allowed (tests, local development). Cloud metadata never is. */
  allowPrivateTargets: boolean;
  /** Host names (lower case; IPv6 without brackets) that may be reached over plain `http`. */
  httpAllowedHosts: readonly string[];
}

/** The default everywhere: `https` only, public addresses only. */
export const STRICT_WEBHOOK_TARGETS: WebhookTargetPolicy = Object.freeze({ allowPrivateTargets: false, httpAllowedHosts: Object.freeze([]) });

/** The policy of a process, from WEBHOOK_ALLOW_PRIVATE_TARGETS and WEBHOOK_HTTP_ALLOWED_HOSTS. */
export function webhookTargetPolicyFromConfig(config: Pick<Config, 'WEBHOOK_ALLOW_PRIVATE_TARGETS' | 'WEBHOOK_HTTP_ALLOWED_HOSTS'>): WebhookTargetPolicy {
  return { allowPrivateTargets: config.WEBHOOK_ALLOW_PRIVATE_TARGETS, httpAllowedHosts: config.WEBHOOK_HTTP_ALLOWED_HOSTS ?? [] };
}

/** Why a target is refused; `message` names the address or scheme and the setting that would allow it. */
export class WebhookTargetRefusedError extends Error {
  readonly code = 'EWEBHOOKTARGET';
  constructor(
    readonly reason: 'scheme' | Exclude<AddressClass, 'public'>,
    message: string,
  ) {
    super(message);
    this.name = 'WebhookTargetRefusedError';
  }
}

type Range = [address: string, prefix: number];

// Order matters: the first class that matches names the address (metadata before link-local).
const IPV4_CLASSES: Array<[Exclude<AddressClass, 'public' | 'ipv4_mapped'>, Range[]]> = [
  // AWS, GCP, Azure, OpenStack (169.254.169.254), Alibaba (100.100.100.200), Oracle (192.0.0.192).
  ['metadata', [['169.254.169.254', 32], ['100.100.100.200', 32], ['192.0.0.192', 32]]],
  ['unspecified', [['0.0.0.0', 8]]],
  ['loopback', [['127.0.0.0', 8]]],
  ['private', [['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16]]],
  ['link_local', [['169.254.0.0', 16]]],
  ['cgnat', [['100.64.0.0', 10]]],
  ['multicast', [['224.0.0.0', 4]]],
  // IETF assignments, documentation and benchmark networks, 6to4 relays, class E and broadcast.
  ['reserved', [['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24], ['240.0.0.0', 4]]],
];

const IPV6_CLASSES: Array<[Exclude<AddressClass, 'public' | 'ipv4_mapped'>, Range[]]> = [
  ['metadata', [['fd00:ec2::254', 128]]], // AWS's IPv6 instance metadata service
  ['unspecified', [['::', 128]]],
  ['loopback', [['::1', 128]]],
  ['unique_local', [['fc00::', 7]]],
  ['link_local', [['fe80::', 10]]],
  ['private', [['fec0::', 10], ['64:ff9b:1::', 48]]], // deprecated site-local; local-use NAT64
  ['multicast', [['ff00::', 8]]],
  // IPv4-compatible (deprecated), discard-only, IETF protocol assignments (Teredo included), documentation.
  ['reserved', [['::', 96], ['100::', 64], ['2001::', 23], ['2001:db8::', 32]]],
];

function blockLists(classes: typeof IPV4_CLASSES, family: 'ipv4' | 'ipv6'): Array<[AddressClass, BlockList]> {
  return classes.map(([name, ranges]) => {
    const list = new BlockList();
    for (const [address, prefix] of ranges) list.addSubnet(address, prefix, family);
    return [name, list];
  });
}

const IPV4_LISTS = blockLists(IPV4_CLASSES, 'ipv4');
const IPV6_LISTS = blockLists(IPV6_CLASSES, 'ipv6');

/**
 * The class of one IP address (v4 dotted quad or v6 text, brackets and zone ids allowed). IPv6
 * forms that embed an IPv4 address are judged by it: IPv4-mapped (`::ffff:a.b.c.d`, refused as
 * `ipv4_mapped` unless the embedded address is a metadata address), NAT64 (`64:ff9b::/96`) and
 * 6to4 (`2002::/16`). Throws for a string that is not an IP address.
 */
export function classifyAddress(input: string): AddressClass {
  const address = unbracket(input).replace(/%.*$/, '');
  const family = isIP(address);
  if (family === 4) return classifyIpv4(address);
  if (family !== 6) throw new TypeError(`not an IP address: ${input}`);
  const bytes = ipv6Bytes(address);
  const isZero = (from: number, to: number) => bytes.subarray(from, to).every((b) => b === 0);
  if (isZero(0, 10) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return classifyIpv4(bytes.subarray(12, 16).join('.')) === 'metadata' ? 'metadata' : 'ipv4_mapped';
  }
  if (bytes[0] === 0x00 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && isZero(4, 12)) {
    return classifyIpv4(bytes.subarray(12, 16).join('.'));
  }
  if (bytes[0] === 0x20 && bytes[1] === 0x02) {
    const embedded = classifyIpv4(bytes.subarray(2, 6).join('.'));
    if (embedded !== 'public') return embedded;
  }
  for (const [name, list] of IPV6_LISTS) if (list.check(address, 'ipv6')) return name;
  return 'public';
}

function classifyIpv4(address: string): AddressClass {
  for (const [name, list] of IPV4_LISTS) if (list.check(address, 'ipv4')) return name;
  return 'public';
}

/** The 16 bytes of an IPv6 address in text form (`::` compression and a trailing dotted quad allowed). */
function ipv6Bytes(address: string): Uint8Array {
  let text = address.toLowerCase();
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad[1]!.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, -quad[1]!.length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    const value = parseInt(group, 16);
    bytes[i * 2] = value >> 8;
    bytes[i * 2 + 1] = value & 0xff;
  });
  return bytes;
}

function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** Whether the policy lets a webhook connect to an address of this class. */
export function isAllowedAddress(policy: WebhookTargetPolicy, cls: AddressClass): boolean {
  if (cls === 'public') return true;
  if (cls === 'metadata') return false; // never, whatever the opt-in: it hands out cloud credentials
  return policy.allowPrivateTargets;
}

/** Refuses an address the policy does not allow, naming it, its class and (if any) the opt-in. */
export function assertAllowedAddress(policy: WebhookTargetPolicy, address: string, host: string): void {
  const cls = classifyAddress(address);
  if (isAllowedAddress(policy, cls)) return;
  const where = host === address ? address : `${host} (${address})`;
  const hint = cls === 'metadata' ? ' (a cloud metadata address is never allowed)' : ' (WEBHOOK_ALLOW_PRIVATE_TARGETS=true allows it, for tests and local development)';
  throw new WebhookTargetRefusedError(cls as Exclude<AddressClass, 'public'>, `${where} is a ${cls.replace('_', '-')} address${hint}`);
}

/**
 * Checks the URL's scheme against the policy and, when its host is an IP literal, the address
 * (`new URL` has already turned decimal, octal and hex IPv4 forms into a dotted quad). Returns
 * the host name to resolve, or undefined when the host was a literal.
 */
export function checkWebhookUrl(policy: WebhookTargetPolicy, url: URL): string | undefined {
  const host = unbracket(url.hostname).toLowerCase();
  if (url.protocol !== 'https:') {
    if (url.protocol !== 'http:' || !policy.httpAllowedHosts.includes(host)) {
      throw new WebhookTargetRefusedError('scheme', `must be an https URL (plain http only to a host listed in WEBHOOK_HTTP_ALLOWED_HOSTS; ${host} is not)`);
    }
  }
  if (isIP(host)) {
    assertAllowedAddress(policy, host, host);
    return undefined;
  }
  return host;
}

/** Resolves a host name to every address it has now (A and AAAA). */
export type ResolveAll = (host: string) => Promise<LookupAddress[]>;

export const resolveAll: ResolveAll = (host) =>
  new Promise((resolve, reject) => dnsLookup(host, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))));

/** How long registration waits for DNS before it gives up judging a name (delivery judges it again). */
const REGISTRATION_LOOKUP_TIMEOUT_MS = 2_000;

/**
 * The registration check: scheme, literal address, and every address the name resolves to now.
 * A name that does not resolve (or not within 2 s) cannot be judged and is accepted: it cannot be
 * delivered to either, and each delivery checks it again. Throws {@link WebhookTargetRefusedError}.
 */
export async function assertWebhookTarget(policy: WebhookTargetPolicy, rawUrl: string, resolve: ResolveAll = resolveAll): Promise<void> {
  const host = checkWebhookUrl(policy, new URL(rawUrl));
  if (host === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<LookupAddress[]>((done) => {
    timer = setTimeout(() => done([]), REGISTRATION_LOOKUP_TIMEOUT_MS);
  });
  const addresses = await Promise.race([resolve(host).catch(() => [] as LookupAddress[]), timeout]).finally(() => clearTimeout(timer));
  for (const { address } of addresses) assertAllowedAddress(policy, address, host);
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for the delivery's socket: it resolves the name, refuses the connection if any
 * address is not allowed, and hands the socket exactly the addresses it checked. The connection
 * can therefore only go where the check looked, whatever the name resolves to a moment later.
 */
export function pinnedLookup(policy: WebhookTargetPolicy, resolve: ResolveAll = resolveAll) {
  return (host: string, options: { all?: boolean; family?: number | string }, callback: LookupCallback): void => {
    resolve(host)
      .then((addresses) => {
        if (addresses.length === 0) throw Object.assign(new Error(`${host} has no address`), { code: 'ENOTFOUND' });
        for (const { address } of addresses) assertAllowedAddress(policy, address, host);
        const wanted = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0;
        const usable = wanted ? addresses.filter((a) => a.family === wanted) : addresses;
        if (usable.length === 0) throw Object.assign(new Error(`${host} has no IPv${wanted} address`), { code: 'ENOTFOUND' });
        if (options.all) callback(null, usable);
        else callback(null, usable[0]!.address, usable[0]!.family);
      })
      .catch((err: NodeJS.ErrnoException) => callback(err, options.all ? [] : ''));
  };
}
