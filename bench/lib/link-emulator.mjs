// A link emulator: a TCP proxy on 127.0.0.1 in front of an upstream (the registry) that gives
// every connection the round-trip time and the shared downstream bandwidth of a network link.
// Each direction's data is held back by half the RTT; the downstream (upstream -> client) bytes of
// all connections share one bandwidth budget. It counts bytes sent to clients and connections, and
// (for plain HTTP) the requests seen, so a bench can say what a tool fetched.
//
//   const link = await startLinkEmulator('127.0.0.1:5000', { bytesPerSecond: 10e6, rttMs: 20 });
//   ... point clients at link.address ...
//   link.stats  // { bytes, connections, requests }
//   await link.close();
import net from 'node:net';

export async function startLinkEmulator(upstream, { bytesPerSecond, rttMs }) {
  const [host, port] = [
    upstream.slice(0, upstream.lastIndexOf(':')),
    Number(upstream.slice(upstream.lastIndexOf(':') + 1)),
  ];
  const oneWayMs = rttMs / 2;
  const stats = { bytes: 0, connections: 0, requests: 0 };
  // Time at which the shared downstream link is next free: concurrent responses split the bandwidth.
  let linkFreeAt = 0;
  const sockets = new Set();

  /** Forwards `from` -> `to` delayed by the one-way latency, and (downstream) paced by bandwidth. */
  const pipeDelayed = (from, to, downstream) => {
    let lastDue = 0;
    from.on('data', (chunk) => {
      const now = performance.now();
      let due = now + oneWayMs;
      if (downstream) {
        const start = Math.max(now, linkFreeAt);
        linkFreeAt = start + (chunk.length / bytesPerSecond) * 1000;
        due = linkFreeAt + oneWayMs;
        stats.bytes += chunk.length;
      } else {
        // A request line starts with a method; counting them is good enough for HTTP/1.1 clients.
        stats.requests += (
          chunk.toString('latin1').match(/^(GET|HEAD|POST|PUT|PATCH|DELETE) \S+ HTTP\/1\.[01]\r\n/gm) ?? []
        ).length;
      }
      due = Math.max(due, lastDue);
      lastDue = due;
      // Backpressure: stop reading while the delayed writes are queued far ahead.
      if (due - now > 1000) from.pause();
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk);
        if (from.isPaused() && lastDue - performance.now() < 500) from.resume();
      }, due - now);
    });
    from.on('end', () => setTimeout(() => to.end(), Math.max(0, lastDue - performance.now())));
    from.on('error', () => to.destroy());
  };

  const server = net.createServer((client) => {
    stats.connections++;
    const remote = net.connect(port, host);
    sockets.add(client);
    sockets.add(remote);
    client.on('close', () => {
      sockets.delete(client);
      remote.destroy();
    });
    remote.on('close', () => {
      sockets.delete(remote);
      client.destroy();
    });
    pipeDelayed(client, remote, false);
    pipeDelayed(remote, client, true);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${server.address().port}`;
  return {
    address,
    stats,
    reset() {
      stats.bytes = 0;
      stats.connections = 0;
      stats.requests = 0;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
