import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../src/config';
import { temporalConnectionSettings } from '../../src/temporal';

/** The config module names every bad variable, and never prints a secret's value. */
test('defaults apply and empty strings count as unset', () => {
  const config = loadConfig({ PORT: '', TEMPORAL_TASK_QUEUE: 'q' });
  expect(config.PORT).toBe(3000);
  expect(config.TEMPORAL_TASK_QUEUE).toBe('q');
  expect(config.DATA_DIR).toBe('.data');
});

test('a wrong value names the variable', () => {
  expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/PORT="eighty"/);
  expect(() => loadConfig({ PORT: '70000', LOG_LEVEL: 'loud' })).toThrow(ConfigError);
});

test('secrets are named but never shown', () => {
  let message = '';
  try {
    loadConfig({ BILLING_ADMIN_KEY: 'short-secret', SMTP_URL: 'http://user:hunter2@mail', DATABASE_URL: 'mysql://u:p4ss@db' });
  } catch (err) {
    message = (err as Error).message;
  }
  expect(message).toMatch(/BILLING_ADMIN_KEY=\(value hidden\)/);
  expect(message).toMatch(/SMTP_URL=\(value hidden\)/);
  expect(message).toMatch(/DATABASE_URL=\(value hidden\)/);
  expect(message).not.toMatch(/short-secret|hunter2|p4ss/);
});

describe('Temporal TLS and API key settings', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tally-config-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
  const KEY = '-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n';
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return '';
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return err.message;
    }
  };
  const address = { TEMPORAL_ADDRESS: 'temporal.example:7233' };

  test('contradictions, unreadable files and text that is not PEM stop the start, each on its own line', () => {
    expect(problems({ ...address, TEMPORAL_TLS_CERT: write('a.pem', CERT) })).toContain('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together');
    expect(problems({ ...address, TEMPORAL_TLS_KEY: write('a.key', KEY) })).toContain('TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together');
    expect(problems({ ...address, TEMPORAL_TLS_CA: path.join(dir, 'missing.pem') })).toMatch(/TEMPORAL_TLS_CA=".*missing\.pem": cannot read the file \(ENOENT\)/);
    expect(problems({ ...address, TEMPORAL_TLS_CA: write('key-as-ca.pem', KEY) })).toMatch(/TEMPORAL_TLS_CA=".*": not a PEM certificate/);
    expect(problems({ ...address, TEMPORAL_TLS_CERT: write('b.pem', CERT), TEMPORAL_TLS_KEY: write('cert-as-key.pem', CERT) })).toMatch(/TEMPORAL_TLS_KEY=".*": not a PEM private key/);
    const plaintextKey = problems({ ...address, TEMPORAL_TLS: 'false', TEMPORAL_API_KEY: 'secret-api-key-value' });
    expect(plaintextKey).toContain('TEMPORAL_TLS=false (plaintext) cannot be combined with TEMPORAL_API_KEY: an API key must never travel unencrypted');
    expect(plaintextKey).not.toContain('secret-api-key-value');
    expect(problems({ TEMPORAL_API_KEY: 'k' })).toContain('TEMPORAL_API_KEY need TEMPORAL_ADDRESS: the embedded dev server speaks plaintext only');
    expect(problems({ ...address, TEMPORAL_TLS: 'maybe' })).toContain('TEMPORAL_TLS="maybe": must be true or false');
    const both = problems({ ...address, TEMPORAL_TLS_CERT: path.join(dir, 'nope.pem'), TEMPORAL_TLS_CA: path.join(dir, 'nope-ca.pem') }).split('\n');
    expect(both.length).toBe(4); // the heading, the missing key, and both unreadable files
  });

  test('settings for the clients and the worker: plaintext by default, TLS with a CA, a pair, a server name or an API key', () => {
    expect(temporalConnectionSettings(loadConfig(address), 'a:1')).toEqual({ address: 'a:1' });
    expect(temporalConnectionSettings(loadConfig({ ...address, TEMPORAL_TLS: 'true' }), 'a:1')).toEqual({ address: 'a:1', tls: {} });
    expect(temporalConnectionSettings(loadConfig({ ...address, TEMPORAL_API_KEY: 'k' }), 'a:1')).toEqual({ address: 'a:1', tls: {}, apiKey: 'k' });
    // PEM text in the variable, with `\n` escapes as environment files carry them; or a path.
    const settings = temporalConnectionSettings(
      loadConfig({ ...address, TEMPORAL_TLS_CA: CERT.replace(/\n/g, '\\n'), TEMPORAL_TLS_CERT: write('c.pem', CERT), TEMPORAL_TLS_KEY: KEY, TEMPORAL_TLS_SERVER_NAME: 'temporal.internal' }),
      'a:1',
    );
    expect({ ...settings.tls, serverRootCACertificate: Buffer.from(settings.tls!.serverRootCACertificate!).toString(), clientCertPair: undefined }).toEqual({
      serverRootCACertificate: CERT,
      serverNameOverride: 'temporal.internal',
      clientCertPair: undefined,
    });
    expect(Buffer.from(settings.tls!.clientCertPair!.key).toString()).toBe(KEY);
    expect(Buffer.from(settings.tls!.clientCertPair!.crt).toString()).toBe(CERT);
  });
});
