import net from 'node:net';

/**
 * Distinct free TCP ports on loopback: tests, benchmarks and scripts run their servers side by
 * side. All of them are held open until every one is chosen: chosen one after the other, a port
 * just released can be handed out again, and two servers of one stack then collide.
 */
export async function freePorts<N extends number>(count: N, options: { except?: readonly number[] } = {}): Promise<Ports<N>> {
  // Ports chosen earlier but not yet listened on are free again, and the kernel may hand one out
  // once more. Opening one extra socket per excluded port, all held at once, leaves `count`
  // distinct ports that are not excluded.
  const except = new Set(options.except ?? []);
  const opened = await Promise.allSettled(Array.from({ length: count + except.size }, () => listeningOnAnyPort()));
  const servers = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const ports = servers.map((server) => (server.address() as net.AddressInfo).port).filter((port) => !except.has(port));
  // Closed whether or not every one opened: a failed call leaves no socket behind.
  await Promise.all(servers.map((server) => new Promise<void>((closed) => server.close(() => closed()))));
  const failed = opened.find((result) => result.status === 'rejected');
  if (failed) throw failed.reason;
  return ports.slice(0, count) as Ports<N>;
}

/** `count` ports as a tuple when `count` is a literal (`freePorts(3)`: three numbers), else an array. */
export type Ports<N extends number, Acc extends number[] = []> = number extends N ? number[] : Acc['length'] extends N ? Acc : Ports<N, [...Acc, number]>;

/** One free TCP port on loopback (see {@link freePorts} for a stack's several). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port;
}

function listeningOnAnyPort(): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}
