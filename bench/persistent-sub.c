/*
 * persistent-sub: the persistent-session subscriber of the benchmark (durable-qos1, and the
 * counting subscriber at HQ of uplink-drain), run as its own process.
 *
 *   gcc -O2 -Wall -o persistent-sub persistent-sub.c
 *
 *   persistent-sub --port P --expected N [--host ADDR] [--client-id ID] [--filter F]
 *                  [--timeout S] [--keepalive S]
 *
 * Why C: mqttbench (the shared load generator) always connects with clean session 1, so it cannot
 * be the subscriber whose messages a broker has to keep durably. The first version of this client
 * was Node; it took 3-5 µs of CPU per message, on the same two cores as the brokers it measured.
 * This one is a small MQTT 3.1.1 client on a blocking socket: CONNECT with clean session 0 and a
 * fixed client id, SUBSCRIBE at QoS 1 on every CONNACK (idempotent for a resumed session), PUBACK
 * every QoS 1 PUBLISH (the PUBACKs of one read go out in one write). It reads mqttbench's 32-byte
 * payload header (run id, publisher, sequence number, topic index, send time on CLOCK_MONOTONIC)
 * and counts unique messages, duplicates and redeliveries per mqttbench run, and the monotonic
 * times of the first and last message received.
 *
 * stdout: {"ready":true,...} once the SUBACK arrived, then one JSON line with the result when
 * --expected unique messages of one mqttbench run arrived (then DISCONNECT, exit 0), at the
 * timeout (exit 3), when the broker closes the connection (exit 3) or on SIGTERM (exit 3).
 * Usage errors: exit 1. Connection problems: exit 4.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR_LEN 32
#define MAX_RUNS 64

typedef struct {
    uint32_t run_id;
    uint64_t received, unique, duplicates, redelivered;
    int64_t first_send, first_rx, last_rx; /* ns, CLOCK_MONOTONIC; -1 = none */
    uint8_t **seen;                        /* per publisher: bitmap over sequence numbers */
    size_t *seen_len;
    uint32_t npubs;
} run_t;

static run_t g_runs[MAX_RUNS];
static int g_nruns;
static uint64_t g_foreign, g_proto_errors, g_overflow_runs;
static int g_session_present = -1;
static const char *g_client_id = "bench-durable-sub";
static const char *g_filter = "bench/#";
static uint64_t g_expected;
static int64_t g_t0;
static volatile sig_atomic_t g_term;
static int g_fd = -1;

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "persistent-sub: out of memory (%zu bytes)\n", n);
        exit(4);
    }
    return q;
}

static uint32_t rd32le(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64le(const uint8_t *p) { return (uint64_t)rd32le(p) | (uint64_t)rd32le(p + 4) << 32; }

static run_t *run_for(uint32_t id) {
    for (int i = 0; i < g_nruns; i++)
        if (g_runs[i].run_id == id) return &g_runs[i];
    if (g_nruns == MAX_RUNS) {
        g_overflow_runs++;
        return NULL;
    }
    run_t *r = &g_runs[g_nruns++];
    memset(r, 0, sizeof *r);
    r->run_id = id;
    r->first_send = r->first_rx = -1;
    return r;
}

/* Marks (pub, seq) as seen; 0 when it was seen before. */
static int mark_seen(run_t *r, uint32_t pub, uint32_t seq) {
    if (pub >= r->npubs) {
        uint32_t n = pub + 1 > r->npubs * 2 ? pub + 1 : r->npubs * 2;
        r->seen = xrealloc(r->seen, n * sizeof *r->seen);
        r->seen_len = xrealloc(r->seen_len, n * sizeof *r->seen_len);
        for (uint32_t i = r->npubs; i < n; i++) {
            r->seen[i] = NULL;
            r->seen_len[i] = 0;
        }
        r->npubs = n;
    }
    size_t byte = seq >> 3;
    if (byte >= r->seen_len[pub]) {
        size_t n = r->seen_len[pub] * 2;
        if (n < byte + 1) n = byte + 1;
        if (n < 1024) n = 1024;
        r->seen[pub] = xrealloc(r->seen[pub], n);
        memset(r->seen[pub] + r->seen_len[pub], 0, n - r->seen_len[pub]);
        r->seen_len[pub] = n;
    }
    uint8_t mask = (uint8_t)(1u << (seq & 7));
    if (r->seen[pub][byte] & mask) return 0;
    r->seen[pub][byte] |= mask;
    return 1;
}

/* The run the result is about: the one with most unique messages. */
static run_t *main_run(void) {
    run_t *best = NULL;
    for (int i = 0; i < g_nruns; i++)
        if (!best || g_runs[i].unique > best->unique) best = &g_runs[i];
    return best;
}

static void json_escape(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void finish(int code, const char *error) {
    run_t *s = main_run();
    double wall = (double)(mono_ns() - g_t0) / 1e9;
    double cpu = cpu_s();
    double dur = s && s->first_send >= 0 && s->last_rx > s->first_send ? (double)(s->last_rx - s->first_send) / 1e9 : 0;
    uint64_t other = 0;
    for (int i = 0; i < g_nruns; i++)
        if (&g_runs[i] != s) other += g_runs[i].received;
    FILE *f = stdout;
    fprintf(f, "{\"driver\":\"persistent-sub\",\"client_id\":");
    json_escape(f, g_client_id);
    fprintf(f, ",\"clean_session\":false,\"session_present\":%s",
            g_session_present < 0 ? "null" : g_session_present ? "true" : "false");
    if (s) fprintf(f, ",\"run_id\":%u", s->run_id);
    else fprintf(f, ",\"run_id\":null");
    uint64_t unique = s ? s->unique : 0;
    fprintf(f, ",\"expected\":%llu,\"received\":%llu,\"unique\":%llu,\"lost\":%lld,\"duplicates\":%llu,\"redelivered\":%llu",
            (unsigned long long)g_expected, (unsigned long long)(s ? s->received : 0), (unsigned long long)unique,
            (long long)g_expected - (long long)unique, (unsigned long long)(s ? s->duplicates : 0),
            (unsigned long long)(s ? s->redelivered : 0));
    fprintf(f, ",\"other_runs\":%llu,\"foreign\":%llu,\"proto_errors\":%llu,\"overflow_runs\":%llu",
            (unsigned long long)other, (unsigned long long)g_foreign, (unsigned long long)g_proto_errors,
            (unsigned long long)g_overflow_runs);
    fprintf(f, ",\"duration_s\":%.4f,\"throughput\":%.1f", dur, dur > 0 && s ? (double)s->received / dur : 0.0);
    if (s && s->first_rx >= 0) fprintf(f, ",\"first_rx_us\":%lld", (long long)(s->first_rx / 1000));
    else fprintf(f, ",\"first_rx_us\":null");
    if (s && s->last_rx > 0) fprintf(f, ",\"last_rx_us\":%lld", (long long)(s->last_rx / 1000));
    else fprintf(f, ",\"last_rx_us\":null");
    fprintf(f, ",\"loader_cpu_s\":%.3f,\"loader_cpu_pct\":%.1f", cpu, wall > 0 ? 100 * cpu / wall : 0.0);
    if (error) {
        fprintf(f, ",\"error\":");
        json_escape(f, error);
    }
    fprintf(f, "}\n");
    fflush(f);
    exit(code);
}

/* ---- output: one buffer, written whole */
static uint8_t *g_out;
static size_t g_out_len, g_out_cap;

static void out_bytes(const void *p, size_t n) {
    if (g_out_len + n > g_out_cap) {
        g_out_cap = (g_out_len + n) * 2;
        g_out = xrealloc(g_out, g_out_cap);
    }
    memcpy(g_out + g_out_len, p, n);
    g_out_len += n;
}

static void out_u8(uint8_t b) { out_bytes(&b, 1); }

static void out_str(const char *s) {
    size_t n = strlen(s);
    uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    out_bytes(len, 2);
    out_bytes(s, n);
}

static void out_remaining_length(size_t n) {
    do {
        uint8_t b = n % 128;
        n /= 128;
        if (n > 0) b |= 0x80;
        out_u8(b);
    } while (n > 0);
}

static void flush_out(void) {
    size_t off = 0;
    while (off < g_out_len) {
        ssize_t w = send(g_fd, g_out + off, g_out_len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            char msg[128];
            snprintf(msg, sizeof msg, "socket: %s", strerror(errno));
            finish(4, msg);
        }
        off += (size_t)w;
    }
    g_out_len = 0;
}

static void put_connect(int keepalive) {
    size_t body = 2 + 4 + 1 + 1 + 2 + 2 + strlen(g_client_id);
    out_u8(0x10);
    out_remaining_length(body);
    out_str("MQTT");
    out_u8(4);    /* protocol level: MQTT 3.1.1 */
    out_u8(0x00); /* clean session 0, no will, no credentials */
    out_u8((uint8_t)(keepalive >> 8));
    out_u8((uint8_t)keepalive);
    out_str(g_client_id);
}

static void put_subscribe(void) {
    out_u8(0x82);
    out_remaining_length(2 + 2 + strlen(g_filter) + 1);
    out_u8(0);
    out_u8(1);
    out_str(g_filter);
    out_u8(1);
}

static void on_publish(uint8_t flags, const uint8_t *b, size_t len, int64_t now) {
    int qos = (flags >> 1) & 3;
    if (len < 2) {
        g_proto_errors++;
        return;
    }
    size_t off = 2 + ((size_t)b[0] << 8 | b[1]);
    if (qos > 0) {
        if (off + 2 > len) {
            g_proto_errors++;
            return;
        }
        if (qos == 1) {
            uint8_t ack[4] = {0x40, 2, b[off], b[off + 1]};
            out_bytes(ack, 4);
        } else {
            g_proto_errors++; /* subscribed at QoS 1: QoS 2 never arrives */
        }
        off += 2;
    }
    if (off > len || len - off < HDR_LEN) {
        g_foreign++;
        return;
    }
    const uint8_t *h = b + off;
    run_t *r = run_for(rd32le(h));
    if (!r) return;
    uint32_t pub = rd32le(h + 4), seq = rd32le(h + 8);
    int64_t sent = (int64_t)rd64le(h + 16);
    r->received++;
    if (r->first_rx < 0) r->first_rx = now;
    r->last_rx = now;
    if (r->first_send < 0 || sent < r->first_send) r->first_send = sent;
    if (flags & 0x08) r->redelivered++;
    if (mark_seen(r, pub, seq)) r->unique++;
    else r->duplicates++;
}

static void on_term(int sig) {
    (void)sig;
    g_term = 1;
}

static void usage(void) {
    fprintf(stderr, "usage: persistent-sub --port P --expected N [--host ADDR] [--client-id ID] [--filter F] [--timeout S] [--keepalive S]\n");
    exit(1);
}

static int connect_to(const char *host, const char *port) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "resolving %s: %s", host, gai_strerror(rc));
        finish(4, msg);
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "socket: connecting to %s:%s: %s", host, port, strerror(err));
        finish(4, msg);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *port = NULL;
    double timeout_s = 300;
    int keepalive = 60;
    long long expected = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = v;
        else if (!strcmp(a, "--expected")) expected = atoll(v);
        else if (!strcmp(a, "--client-id")) g_client_id = v;
        else if (!strcmp(a, "--filter")) g_filter = v;
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--keepalive")) keepalive = atoi(v);
        else usage();
    }
    if (!port || atoi(port) <= 0 || expected <= 0 || !(timeout_s > 0) || keepalive <= 0 || keepalive > 65535) usage();
    g_expected = (uint64_t)expected;
    g_t0 = mono_ns();

    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    g_fd = connect_to(host, port);
    put_connect(keepalive);
    flush_out();

    size_t cap = 1 << 20, start = 0, end = 0;
    uint8_t *buf = xrealloc(NULL, cap);
    int64_t deadline = g_t0 + (int64_t)(timeout_s * 1e9);
    int64_t ping_every = (int64_t)keepalive * 1000000000LL / 2, next_ping = g_t0 + ping_every;
    struct pollfd pfd = {.fd = g_fd, .events = POLLIN};
    for (;;) {
        if (g_term) finish(3, "stopped by the harness before all messages arrived");
        int64_t now = mono_ns();
        if (now >= deadline) finish(3, "timeout");
        if (now >= next_ping) {
            out_u8(0xc0);
            out_u8(0);
            flush_out();
            next_ping = now + ping_every;
        }
        int64_t wait = (deadline < next_ping ? deadline : next_ping) - now;
        int pr = poll(&pfd, 1, (int)(wait / 1000000 + 1));
        if (pr < 0 && errno != EINTR) finish(4, "poll failed");
        if (pr <= 0) continue;
        if (end == cap) {
            if (start > 0) {
                memmove(buf, buf + start, end - start);
                end -= start;
                start = 0;
            } else {
                cap *= 2;
                buf = xrealloc(buf, cap);
            }
        }
        ssize_t n = recv(g_fd, buf + end, cap - end, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            char msg[128];
            snprintf(msg, sizeof msg, "socket: %s", strerror(errno));
            finish(4, msg);
        }
        if (n == 0) finish(3, "connection closed by the broker");
        end += (size_t)n;
        now = mono_ns();
        while (end - start >= 2) {
            /* fixed header: type/flags byte, remaining length (1-4 bytes, 7 bits each) */
            size_t len = 0, mult = 1, i = start + 1;
            int complete = 0;
            for (; i < end && i < start + 5; i++) {
                len += (buf[i] & 0x7f) * mult;
                mult *= 128;
                if (!(buf[i] & 0x80)) {
                    complete = 1;
                    i++;
                    break;
                }
            }
            if (!complete && i >= start + 5) finish(4, "malformed remaining length from the broker");
            if (!complete || len > end - i) break;
            uint8_t first = buf[start];
            const uint8_t *body = buf + i;
            switch (first >> 4) {
            case 3:
                on_publish(first & 0x0f, body, len, now);
                break;
            case 2: /* CONNACK */
                if (len < 2 || body[1] != 0) {
                    char msg[64];
                    snprintf(msg, sizeof msg, "CONNACK return code %d", len < 2 ? 255 : body[1]);
                    fprintf(stderr, "%s\n", msg);
                    finish(4, msg);
                }
                g_session_present = body[0] & 1;
                /* Subscribe on every connect: idempotent for a resumed session, needed for a new one. */
                put_subscribe();
                break;
            case 9: { /* SUBACK */
                int granted = len >= 3 ? body[2] : 0x80;
                if (granted == 0x80) finish(4, "SUBACK refused the filter");
                printf("{\"ready\":true,\"session_present\":%s,\"granted\":%d}\n", g_session_present == 1 ? "true" : "false", granted);
                fflush(stdout);
                break;
            }
            case 13: /* PINGRESP */
                break;
            default:
                g_proto_errors++;
            }
            start = i + len;
        }
        if (start == end) start = end = 0;
        int done = 0;
        for (int r = 0; r < g_nruns; r++)
            if (g_runs[r].unique >= g_expected) done = 1;
        if (done) {
            /* PUBACKs first (same socket, in order), then a clean DISCONNECT: the session stays. */
            out_u8(0xe0);
            out_u8(0);
            flush_out();
            shutdown(g_fd, SHUT_WR);
            /* Read until the broker closes: closing with unread data would send a RST, which can
             * overtake the DISCONNECT and the last PUBACKs. */
            int64_t until = mono_ns() + 2000000000LL;
            for (;;) {
                int64_t left = until - mono_ns();
                if (left <= 0 || poll(&pfd, 1, (int)(left / 1000000 + 1)) <= 0) break;
                if (recv(g_fd, buf, cap, 0) <= 0) break;
            }
            finish(0, NULL);
        }
        if (g_out_len > 0) flush_out();
    }
}
