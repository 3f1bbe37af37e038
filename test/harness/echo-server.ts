// The echo server the datapath tests run in a pod's netns, as a `node -e` program: dual
// stack, TCP echoes every connection, UDP echoes every datagram and reports it on stdout
// ({"udp":port,"from":address}), so a test can tell a datagram that arrived unanswered
// (the reply dropped) from one that never arrived. Prints {"ready":true} once every port
// is bound. Argument: JSON {"tcp":[ports],"udp":[ports]}.
export const ECHO_SERVER_JS = `const net = require("net"), dgram = require("dgram");
const { tcp, udp } = JSON.parse(process.argv[1]);
let pending = tcp.length + udp.length;
const ready = () => { if (--pending === 0) console.log(JSON.stringify({ ready: true })); };
for (const port of tcp) net.createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen({ port, host: "::" }, ready);
for (const port of udp) {
  const s = dgram.createSocket({ type: "udp6", ipv6Only: false });
  s.on("message", (m, r) => {
    console.log(JSON.stringify({ udp: port, from: r.address.replace(/^::ffff:/, "") }));
    s.send(m, r.port, r.address, () => {});
  });
  s.bind(port, "::", ready);
}`;
