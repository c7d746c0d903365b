/**
 * `/docs` over HTTP: Swagger UI from the swagger-ui-dist package, served by the app itself (no
 * CDN, so it works offline), started by a script file of ours under a CSP without inline code.
 */
import { serveOffline } from './offline-app';

let served: Awaited<ReturnType<typeof serveOffline>>;
beforeAll(async () => {
  served = await serveOffline();
});
afterAll(() => served?.close());

test('/docs is an HTML page whose scripts and styles all come from this server', async () => {
  const res = await fetch(`${served.url}/docs`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/html/);
  const html = await res.text();
  expect(html).toMatch(/^<!doctype html>/i);
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)];
  expect(scripts.map((s) => /src="([^"]+)"/.exec(s[1]!)?.[1])).toEqual(['/docs/assets/swagger-ui-bundle.js', '/docs/initializer.js']);
  expect(scripts.every((s) => s[2]!.trim() === '')).toBe(true);
  expect(html).not.toMatch(/<style|\son\w+=/i);

  const urls = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  expect(urls).toEqual(expect.arrayContaining(['/docs/assets/swagger-ui.css', '/docs/assets/swagger-ui-bundle.js', '/docs/initializer.js']));
  for (const url of urls) {
    expect(url.startsWith('/')).toBe(true); // nothing from another origin
    const asset = await fetch(`${served.url}${url}`);
    expect({ url, status: asset.status }).toEqual({ url, status: 200 });
    const type = asset.headers.get('content-type') ?? '';
    if (url.endsWith('.js')) expect(type).toMatch(/javascript/);
    if (url.endsWith('.css')) expect(type).toMatch(/^text\/css/);
    await asset.arrayBuffer();
  }
});

test('the initializer loads this server\'s own document, with no validator and no ?url= override', async () => {
  const script = await fetch(`${served.url}/docs/initializer.js`).then((r) => r.text());
  expect(script).toContain("url: '/openapi.json'");
  expect(script).toContain('validatorUrl: null');
  expect(script).toContain('queryConfigEnabled: false');
  const bundle = await fetch(`${served.url}/docs/assets/swagger-ui-bundle.js`).then((r) => r.text());
  expect(bundle).toContain('SwaggerUIBundle');
});

test('/docs has a strict CSP: scripts, styles and fetches from this origin only', async () => {
  const res = await fetch(`${served.url}/docs`);
  await res.text();
  const csp = res.headers.get('content-security-policy') ?? '';
  const directives = Object.fromEntries(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([name, ...values]) => [name, values.join(' ')]));
  expect(directives).toMatchObject({
    'default-src': "'none'",
    'script-src': "'self'",
    'style-src': "'self'",
    'connect-src': "'self'",
    'img-src': "'self' data:",
    'frame-ancestors': "'none'",
  });
  expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
});

test("only the files /docs uses are served from swagger-ui-dist (not its demo page or its Petstore initializer)", async () => {
  for (const url of ['/docs/assets/index.html', '/docs/assets/swagger-initializer.js', '/docs/assets/', '/docs/assets/../package.json', '/docs/assets/nothing.js']) {
    const res = await fetch(`${served.url}${url}`);
    const body = await res.text();
    expect({ url, status: res.status }).toEqual({ url, status: 404 });
    expect(body).not.toContain('petstore');
  }
});
