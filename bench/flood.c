/* UDP flood generator for the datapath benchmarks (compiled at run time by bench/testbed.ts).
 *
 *   flood send --src A --dst B --dport P [--sport-base S] [--flows F] [--count N]
 *              [--duration SEC] [--rate PPS] [--size BYTES] [--threads T] [--batch K]
 *              [--dports D] [--syn 1]
 *   flood sink --port P
 *
 * --dports D: packet k goes to port P + (k / F) mod D, so F * D distinct connections.
 * --syn 1: TCP SYNs (20-byte header, no payload, valid checksum) instead of UDP; the
 * conntrack test (test/conntrack.test.ts) floods with them.
 *
 * send: IPv4/UDP packets built by hand on a raw socket (IPPROTO_RAW, so IP_HDRINCL), so
 * that one socket can vary the source port: packet k of the run belongs to flow k mod F,
 * whose source port is S + flow. sendmmsg() sends K packets per call. A datagram is
 * counted as sent only when sendmmsg() accepted it: the veth reports its own drops
 * (backlog full) as ENOBUFS, and those datagrams are retried, so `sent` is exactly what
 * reached the host-side veth. Stops after N packets, after SEC seconds, or on
 * SIGTERM/SIGINT, whichever comes first, and prints one JSON line.
 *
 * sink: binds a UDP socket on P and never reads it, so datagrams to P are dropped at the
 * socket (no ICMP port-unreachable comes back to add flows of its own).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 256
#define MAX_THREADS 16
#define MAX_PAYLOAD 1472

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

struct config {
	struct in_addr src, dst;
	unsigned dport, sport_base, flows, size, threads, batch, dports, syn;
	unsigned long long count;  /* 0: no limit */
	double duration;           /* 0: no limit */
	double rate;               /* packets/s over all threads; 0: as fast as possible */
};

struct worker {
	const struct config *cfg;
	unsigned index;
	unsigned long long quota;  /* packets this thread sends; 0: no limit */
	unsigned long long sent;
	unsigned long long enobufs;
	pthread_t thread;
	int err;                   /* errno of a fatal error, 0 if none */
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	struct timespec ts = { .tv_sec = (time_t)t, .tv_nsec = (long)((t - (time_t)t) * 1e9) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !stopping)
		;
}

/* The TCP checksum over the IPv4 pseudo-header and a 20-byte header without payload. */
static uint16_t tcp_checksum(const struct iphdr *ip, const struct tcphdr *tcp)
{
	uint32_t sum = 0;
	const uint16_t *p = (const uint16_t *)tcp;

	sum += (ip->saddr >> 16) + (ip->saddr & 0xffff) + (ip->daddr >> 16) + (ip->daddr & 0xffff);
	sum += htons(IPPROTO_TCP) + htons(sizeof(*tcp));
	for (unsigned i = 0; i < sizeof(*tcp) / 2; i++)
		sum += p[i];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void *send_loop(void *arg)
{
	struct worker *w = arg;
	const struct config *c = w->cfg;
	size_t len = c->syn ? sizeof(struct iphdr) + sizeof(struct tcphdr)
			    : sizeof(struct iphdr) + sizeof(struct udphdr) + c->size;
	unsigned char (*bufs)[sizeof(struct iphdr) + sizeof(struct udphdr) + MAX_PAYLOAD];
	struct iovec iov[MAX_BATCH];
	struct mmsghdr msgs[MAX_BATCH];
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr = c->dst };
	double start, per_batch, deadline;
	unsigned long long k = w->index; /* packet number over all threads: flow = k mod F */
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);

	bufs = calloc(MAX_BATCH, sizeof(*bufs));
	if (fd < 0 || !bufs) {
		w->err = fd < 0 ? errno : ENOMEM;
		free(bufs);
		return NULL;
	}
	memset(msgs, 0, sizeof(msgs));
	for (unsigned i = 0; i < c->batch; i++) {
		struct iphdr *ip = (struct iphdr *)bufs[i];
		struct udphdr *udp = (struct udphdr *)(ip + 1);

		memset(bufs[i], 0, len);
		/* The kernel fills in tot_len, id and the header checksum for IP_HDRINCL. */
		ip->version = 4;
		ip->ihl = 5;
		ip->ttl = 64;
		ip->protocol = c->syn ? IPPROTO_TCP : IPPROTO_UDP;
		ip->saddr = c->src.s_addr;
		ip->daddr = c->dst.s_addr;
		if (c->syn) {
			struct tcphdr *tcp = (struct tcphdr *)(ip + 1);

			tcp->seq = htonl(0x5eed0000u + i);
			tcp->doff = 5;
			tcp->syn = 1;
			tcp->window = htons(64240);
		} else {
			udp->dest = htons(c->dport);
			udp->len = htons(sizeof(*udp) + c->size);
			udp->check = 0; /* "no checksum", valid for UDP over IPv4 */
		}
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sizeof(to);
	}

	start = now_s();
	per_batch = c->rate > 0 ? c->batch * c->threads / c->rate : 0;
	deadline = start;
	while (!stopping && (w->quota == 0 || w->sent < w->quota)) {
		unsigned n = c->batch, done = 0;

		if (w->quota && w->quota - w->sent < n)
			n = (unsigned)(w->quota - w->sent);
		if (c->duration > 0 && now_s() - start >= c->duration)
			break;
		for (unsigned i = 0; i < n; i++, k += c->threads) {
			struct iphdr *ip = (struct iphdr *)bufs[i];
			uint16_t sport = htons((uint16_t)(c->sport_base + k % c->flows));
			uint16_t dport = htons((uint16_t)(c->dport + (k / c->flows) % c->dports));

			if (c->syn) {
				struct tcphdr *tcp = (struct tcphdr *)(ip + 1);

				tcp->source = sport;
				tcp->dest = dport;
				tcp->check = 0;
				tcp->check = tcp_checksum(ip, tcp);
			} else {
				struct udphdr *udp = (struct udphdr *)(ip + 1);

				udp->source = sport;
				udp->dest = dport;
			}
		}
		while (done < n && !stopping) {
			int r = sendmmsg(fd, msgs + done, n - done, 0);

			if (r > 0) {
				done += r;
				continue;
			}
			if (r < 0 && (errno == ENOBUFS || errno == EAGAIN)) {
				w->enobufs++;
				sched_yield();
				continue;
			}
			if (r < 0 && errno == EINTR)
				continue;
			w->err = errno;
			stopping = 1;
		}
		/* done < n only when stopping: the rest of the batch was never sent. */
		w->sent += done;
		if (per_batch > 0) {
			deadline += per_batch;
			if (deadline > now_s())
				sleep_until(deadline);
		}
	}
	close(fd);
	free(bufs);
	return NULL;
}

static int parse_u(const char *flag, const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || end == s || v > max) {
		fprintf(stderr, "flood: %s: \"%s\" is not a whole number in 0..%llu\n", flag, s, max);
		return -1;
	}
	*out = v;
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: flood send --src A --dst B --dport P [--sport-base S] [--flows F] [--count N]\n"
		"                  [--duration SEC] [--rate PPS] [--size BYTES] [--threads T] [--batch K]\n"
		"                  [--dports D] [--syn 1]\n"
		"       flood sink --port P\n");
	return 2;
}

static int run_sink(int argc, char **argv)
{
	unsigned long long port = 0;
	struct sockaddr_in addr = { .sin_family = AF_INET };
	int fd;

	for (int i = 2; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--port") == 0) {
			if (parse_u("--port", argv[i + 1], 65535, &port))
				return 2;
		} else {
			return usage();
		}
	}
	if (!port)
		return usage();
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	addr.sin_port = htons((uint16_t)port);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		fprintf(stderr, "flood sink: bind udp port %llu: %s\n", port, strerror(errno));
		return 1;
	}
	printf("{\"listening\":%llu}\n", port);
	fflush(stdout);
	while (!stopping)
		pause();
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct config c = { .flows = 1, .size = 18, .threads = 1, .batch = 64, .sport_base = 10000, .dports = 1 };
	struct worker w[MAX_THREADS];
	struct sigaction sa = { .sa_handler = on_signal };
	unsigned long long v, sent = 0, enobufs = 0;
	int have_src = 0, have_dst = 0, err = 0;
	double start, elapsed;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (argc < 2)
		return usage();
	if (strcmp(argv[1], "sink") == 0)
		return run_sink(argc, argv);
	if (strcmp(argv[1], "send") != 0)
		return usage();
	for (int i = 2; i < argc; i += 2) {
		const char *f = argv[i], *a = i + 1 < argc ? argv[i + 1] : NULL;

		if (!a)
			return usage();
		if (strcmp(f, "--src") == 0) {
			have_src = inet_pton(AF_INET, a, &c.src) == 1;
		} else if (strcmp(f, "--dst") == 0) {
			have_dst = inet_pton(AF_INET, a, &c.dst) == 1;
		} else if (strcmp(f, "--dport") == 0) {
			if (parse_u(f, a, 65535, &v)) return 2;
			c.dport = (unsigned)v;
		} else if (strcmp(f, "--sport-base") == 0) {
			if (parse_u(f, a, 65535, &v)) return 2;
			c.sport_base = (unsigned)v;
		} else if (strcmp(f, "--flows") == 0) {
			if (parse_u(f, a, 65536, &v)) return 2;
			c.flows = (unsigned)v;
		} else if (strcmp(f, "--count") == 0) {
			if (parse_u(f, a, ~0ULL, &v)) return 2;
			c.count = v;
		} else if (strcmp(f, "--duration") == 0) {
			c.duration = atof(a);
		} else if (strcmp(f, "--rate") == 0) {
			c.rate = atof(a);
		} else if (strcmp(f, "--size") == 0) {
			if (parse_u(f, a, MAX_PAYLOAD, &v)) return 2;
			c.size = (unsigned)v;
		} else if (strcmp(f, "--threads") == 0) {
			if (parse_u(f, a, MAX_THREADS, &v)) return 2;
			c.threads = (unsigned)v;
		} else if (strcmp(f, "--dports") == 0) {
			if (parse_u(f, a, 65535, &v)) return 2;
			c.dports = (unsigned)v;
		} else if (strcmp(f, "--syn") == 0) {
			if (parse_u(f, a, 1, &v)) return 2;
			c.syn = (unsigned)v;
		} else if (strcmp(f, "--batch") == 0) {
			if (parse_u(f, a, MAX_BATCH, &v)) return 2;
			c.batch = (unsigned)v;
		} else {
			return usage();
		}
	}
	if (!have_src || !have_dst || !c.dport || !c.flows || !c.threads || !c.batch || !c.dports
	    || c.sport_base + c.flows - 1 > 65535 || c.dport + c.dports - 1 > 65535) {
		fprintf(stderr, "flood send: --src and --dst (IPv4), --dport, and flows, threads, batch >= 1 "
			"with sport-base + flows - 1 <= 65535 are required\n");
		return 2;
	}

	start = now_s();
	for (unsigned t = 0; t < c.threads; t++) {
		w[t] = (struct worker){ .cfg = &c, .index = t };
		if (c.count)
			w[t].quota = c.count / c.threads + (t < c.count % c.threads);
		if (c.count && !w[t].quota)
			continue;
		if (pthread_create(&w[t].thread, NULL, send_loop, &w[t])) {
			fprintf(stderr, "flood send: pthread_create failed\n");
			return 1;
		}
	}
	for (unsigned t = 0; t < c.threads; t++) {
		if (c.count && !w[t].quota)
			continue;
		pthread_join(w[t].thread, NULL);
		sent += w[t].sent;
		enobufs += w[t].enobufs;
		if (w[t].err)
			err = w[t].err;
	}
	elapsed = now_s() - start;
	printf("{\"sent\":%llu,\"seconds\":%.6f,\"pps\":%.0f,\"enobufs\":%llu,\"error\":\"%s\"}\n",
	       sent, elapsed, elapsed > 0 ? sent / elapsed : 0.0, enobufs, err ? strerror(err) : "");
	return err ? 1 : 0;
}
