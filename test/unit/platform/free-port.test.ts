import net from 'node:net';
import { freePorts } from '../../../src/platform/free-port';

test("a stack's ports are distinct, and each can be listened on", async () => {
  const ports = await freePorts(40);
  expect(new Set(ports).size).toBe(40);
  const servers = await Promise.all(
    ports.map(
      (port) =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer();
          server.once('error', reject);
          server.listen(port, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  await Promise.all(servers.map((server) => new Promise<void>((closed) => server.close(() => closed()))));
});

test('ports chosen earlier and not yet listened on are not handed out again', async () => {
  const earlier = await freePorts(20);
  const later = await freePorts(20, { except: earlier });
  expect(later).toHaveLength(20);
  expect(new Set(later).size).toBe(20);
  expect(later.filter((port) => earlier.includes(port))).toEqual([]);
});
