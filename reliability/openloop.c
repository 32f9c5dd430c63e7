/*
 * openloop: an open-loop HTTP/1.1 load generator in C, the independent client beside the
 * Python generator of `make overload` (reliability/openloop.py builds and drives it).
 *
 * Why it exists: at 5x a stack's capacity the Python generator's threads wait for the GIL
 * between a reply's arrival and its timestamp, so a refusal the server answered in 1 ms can
 * be timed at 6 ms. This loop is one thread on epoll with no interpreter in between.
 *
 * What it does: sends one POST per offset (seconds from the start, one per line of the
 * schedule file) at begin + offset, over keep-alive connections it opens as needed, at most
 * --max-conns at once; a request whose slot comes while every connection is busy waits for
 * the first one free (that wait is the server's: it is recorded apart). The send itself is
 * never delayed by a reply: replies are read by the same loop whenever they arrive. A timer
 * (timerfd, absolute, nanoseconds) wakes the loop at the next slot.
 *
 * Output: one line per request, in schedule order, tab-separated, times in seconds on
 * CLOCK_MONOTONIC (the clock of Python's time.monotonic() on Linux, so the records line up
 * with the server's CPU samples):
 *   index  scheduled  picked  start  end  status  kind
 * picked: when a connection was free for it (its slot, or later when all were busy);
 * start: when its bytes began to go out (on a new connection: when the connect began);
 * status: the HTTP status, 0 without one; kind: ok (2xx), http (another status), timeout,
 * reset (closed before a whole reply), refused (nothing listens), error.
 * A last line "# summary ..." says how many connections it opened and retried.
 *
 * It checks the status only, not the answer: the Python generator checks answers.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { FREE, CONNECTING, WRITING, READING, IDLE };
enum { K_NONE, K_OK, K_HTTP, K_TIMEOUT, K_RESET, K_REFUSED, K_ERROR };
static const char *KIND_NAMES[] = {"none", "ok", "http", "timeout", "reset", "refused", "error"};

typedef struct {
    double scheduled, picked, start, end;
    int status, kind;
} Record;

typedef struct {
    int fd, state, reused;
    long req;       /* the request it carries, -1 when none */
    size_t sent;    /* bytes of the request written */
    char *buf;      /* the reply so far */
    size_t len, cap;
    double free_since;
} Conn;

static Record *records;
static Conn *conns;
static int max_conns, open_conns, epfd, timer_fd;
static long *waiting; /* requests whose slot came while every connection was busy (FIFO) */
static long wait_head, wait_tail;
static char *request;
static size_t request_len;
static struct sockaddr_in address;
static double timeout_s = 5.0;
static long opened, retried, remaining;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    size_t cap = 1 << 16, n = 0;
    char *data = malloc(cap);
    size_t got;
    while ((got = fread(data + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) data = realloc(data, cap *= 2);
    }
    fclose(f);
    *len = n;
    return data;
}

static void finish(Conn *c, int kind, int status) {
    Record *r = &records[c->req];
    r->end = now();
    r->kind = kind;
    r->status = status;
    c->req = -1;
    remaining--;
}

static void close_conn(Conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        open_conns--;
    }
    c->fd = -1;
    c->state = FREE;
    c->len = 0;
    c->free_since = now();
}

static void watch(Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

/* Opens a new connection for c's request; returns 0, or -1 when the connect failed at once
 * (the request is then finished with that failure). */
static int connect_conn(Conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->reused = 0;
    c->sent = 0;
    c->len = 0;
    open_conns++;
    opened++;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        int refused = errno == ECONNREFUSED;
        close_conn(c);
        finish(c, refused ? K_REFUSED : K_ERROR, 0);
        return -1;
    }
    c->state = CONNECTING;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
    return 0;
}

static void write_request(Conn *c) {
    while (c->sent < request_len) {
        ssize_t n = send(c->fd, request + c->sent, request_len - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (c->state != WRITING) watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_MOD);
                c->state = WRITING;
                return;
            }
            /* A server that answers early (413) may close mid-body: read what it said. */
            break;
        }
        c->sent += n;
    }
    c->state = READING;
    watch(c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
}

/* Gives request `req` to connection c: a kept-alive one, or a new one. */
static void start_request(Conn *c, long req, double picked) {
    Record *r = &records[req];
    r->picked = picked;
    r->start = now();
    c->req = req;
    if (c->state == IDLE) {
        c->reused = 1;
        c->sent = 0;
        c->len = 0;
        c->state = READING; /* so write_request's MOD applies */
        write_request(c);
    } else if (connect_conn(c) == 0) {
        /* written once the connect completes */
    }
}

static Conn *free_conn(void) {
    Conn *spare = NULL;
    for (int i = 0; i < max_conns; i++) {
        if (conns[i].state == IDLE && conns[i].req < 0) return &conns[i];
        if (!spare && conns[i].state == FREE) spare = &conns[i];
    }
    return spare;
}

/* Parses a whole HTTP/1.1 reply in c->buf; returns its status when complete, 0 when more is
 * needed, -1 when it is malformed. Sets *close_after when the server will close. */
static int parse_reply(Conn *c, int *close_after) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = end - c->buf + 4;
    int status = 0, minor = 1;
    if (sscanf(c->buf, "HTTP/1.%d %d", &minor, &status) != 2 || status < 100) return -1;
    long length = -1;
    int chunked = 0;
    *close_after = minor == 0;
    for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
        if (!strncasecmp(line, "content-length:", 15)) length = strtol(line + 15, NULL, 10);
        else if (!strncasecmp(line, "transfer-encoding:", 18) && strcasestr(line, "chunked") &&
                 strcasestr(line, "chunked") < strstr(line, "\r\n"))
            chunked = 1;
        else if (!strncasecmp(line, "connection:", 11)) {
            char *eol = strstr(line, "\r\n");
            char *cl = strcasestr(line, "close");
            if (cl && cl < eol) *close_after = 1;
        }
    }
    if (chunked) {
        size_t at = head;
        for (;;) {
            char *eol = memmem(c->buf + at, c->len - at, "\r\n", 2);
            if (!eol) return 0;
            long size = strtol(c->buf + at, NULL, 16);
            size_t next = (eol - c->buf) + 2 + size + 2;
            if (size == 0) /* the last chunk: no trailers expected */
                return c->len >= (size_t)(eol - c->buf) + 4 ? status : 0;
            if (c->len < next) return 0;
            at = next;
        }
    }
    if (length < 0) {
        *close_after = 1; /* the body ends when the server closes */
        return 0;
    }
    return c->len >= head + (size_t)length ? status : 0;
}

static void on_readable(Conn *c) {
    for (;;) {
        if (c->cap - c->len < 4096) c->buf = realloc(c->buf, c->cap = c->cap * 2 + 8192);
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n > 0) {
            c->len += n;
            c->buf[c->len] = 0;
            continue;
        }
        if (n < 0 && errno == EAGAIN) break;
        /* closed (n == 0) or reset */
        if (c->req < 0) { /* an idle connection the server let go */
            close_conn(c);
            return;
        }
        int close_after = 0;
        int status = c->len ? parse_reply(c, &close_after) : 0;
        if (status == 0 && c->len && close_after) /* body delimited by the close */
            status = atoi(c->buf + 9);
        if (status > 0) {
            long req = c->req;
            close_conn(c);
            c->req = req;
            finish(c, status < 300 ? K_OK : K_HTTP, status);
        } else if (c->reused && c->len == 0) {
            /* A kept-alive connection the server had closed as we reused it: once more on a
             * new one, the request's times unchanged. */
            long req = c->req;
            close_conn(c);
            c->req = req;
            retried++;
            connect_conn(c);
        } else {
            long req = c->req;
            close_conn(c);
            c->req = req;
            finish(c, K_RESET, 0);
        }
        return;
    }
    if (c->req < 0) {
        c->len = 0; /* unasked-for bytes on an idle connection: ignore */
        return;
    }
    int close_after = 0;
    int status = parse_reply(c, &close_after);
    if (status == 0) return;
    if (status < 0) {
        close_conn(c);
        finish(c, K_ERROR, 0);
        return;
    }
    finish(c, status < 300 ? K_OK : K_HTTP, status);
    if (close_after) {
        close_conn(c);
    } else {
        c->state = IDLE;
        c->len = 0;
        c->free_since = now();
        watch(c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
    }
}

static void on_event(Conn *c, uint32_t events) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            long req = c->req;
            close_conn(c);
            c->req = req;
            finish(c, err == ECONNREFUSED ? K_REFUSED : K_ERROR, 0);
            return;
        }
        c->state = READING;
        write_request(c);
        return;
    }
    if (c->state == WRITING && (events & EPOLLOUT)) write_request(c);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
}

static void arm(double at) {
    struct itimerspec spec = {0};
    spec.it_value.tv_sec = (time_t)at;
    spec.it_value.tv_nsec = (long)((at - (double)(time_t)at) * 1e9);
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) < 0) die("timerfd_settime");
}

static void usage(void) {
    fprintf(stderr,
            "usage: openloop --port P --path /p --body FILE --schedule FILE --out FILE\n"
            "                [--host 127.0.0.1] [-H 'Name: value']... [--max-conns 1024]\n"
            "                [--timeout-ms 5000] [--start-delay-ms 200]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *path = NULL, *body_path = NULL, *schedule_path = NULL,
               *out_path = NULL;
    int port = 0;
    double start_delay_s = 0.2;
    char headers[8192] = "";
    max_conns = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--body")) body_path = v;
        else if (!strcmp(a, "--schedule")) schedule_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--max-conns")) max_conns = atoi(v);
        else if (!strcmp(a, "--timeout-ms")) timeout_s = atof(v) / 1000.0;
        else if (!strcmp(a, "--start-delay-ms")) start_delay_s = atof(v) / 1000.0;
        else if (!strcmp(a, "-H")) {
            if (strlen(headers) + strlen(v) + 3 >= sizeof headers) usage();
            strcat(headers, v);
            strcat(headers, "\r\n");
        } else usage();
        i++;
    }
    if (!port || !path || !body_path || !schedule_path || !out_path || max_conns < 1) usage();
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
        fprintf(stderr, "openloop: --host must be an IPv4 address, got %s\n", host);
        return 2;
    }

    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    size_t body_len;
    char *body = read_file(body_path, &body_len);
    request = malloc(body_len + strlen(path) + strlen(headers) + 256);
    request_len = sprintf(request,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Length: %zu\r\n\r\n",
                          path, host, port, headers, body_len);
    memcpy(request + request_len, body, body_len);
    request_len += body_len;

    size_t schedule_len;
    char *schedule = read_file(schedule_path, &schedule_len);
    schedule = realloc(schedule, schedule_len + 1);
    schedule[schedule_len] = 0;
    long n = 0, cap = 1024;
    double *offsets = malloc(cap * sizeof *offsets);
    for (char *p = schedule, *e; *p; p = e) {
        double v = strtod(p, &e);
        if (e == p) {
            if (*p == '\n' || *p == ' ' || *p == '\r') { e = p + 1; continue; }
            fprintf(stderr, "openloop: bad schedule near: %.20s\n", p);
            return 2;
        }
        if (n == cap) offsets = realloc(offsets, (cap *= 2) * sizeof *offsets);
        if (n && v < offsets[n - 1]) {
            fprintf(stderr, "openloop: the schedule must not go back in time\n");
            return 2;
        }
        offsets[n++] = v;
    }
    if (n == 0) {
        fprintf(stderr, "openloop: empty schedule\n");
        return 2;
    }

    records = calloc(n, sizeof *records);
    waiting = malloc(n * sizeof *waiting);
    conns = calloc(max_conns, sizeof *conns);
    for (int i = 0; i < max_conns; i++) conns[i] = (Conn){.fd = -1, .req = -1, .state = FREE};
    epfd = epoll_create1(EPOLL_CLOEXEC);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epfd < 0 || timer_fd < 0) die("epoll/timerfd");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &tev);

    double begin = now() + start_delay_s;
    /* Nothing here may run unbounded: the last slot, every timeout, and a margin. */
    double hard_end = begin + offsets[n - 1] + timeout_s * 2 + 5.0;
    long next = 0;
    remaining = n;
    struct epoll_event events[256];
    double next_sweep = 0;
    while (remaining > 0) {
        double t = now();
        while (next < n && begin + offsets[next] <= t) {
            records[next].scheduled = begin + offsets[next];
            waiting[wait_tail++] = next++;
        }
        while (wait_head < wait_tail) {
            Conn *c = free_conn();
            if (!c) break;
            long req = waiting[wait_head++];
            double sched = records[req].scheduled;
            double since = c->free_since;
            start_request(c, req, since > sched ? since : sched);
        }
        if (t >= next_sweep) { /* timeouts, every 10 ms */
            for (int i = 0; i < max_conns; i++) {
                Conn *c = &conns[i];
                if (c->req >= 0 && t - records[c->req].start > timeout_s) {
                    long req = c->req;
                    close_conn(c);
                    c->req = req;
                    finish(c, K_TIMEOUT, 0);
                }
            }
            /* A slot still waiting for a connection after the timeout (every connection
             * held by the server) is given up as a timeout, never sent, as a client with
             * a deadline would; the oldest wait at the head. Without this a server that
             * holds every connection leaves them queued past the hard end. */
            while (wait_head < wait_tail && t - records[waiting[wait_head]].scheduled > timeout_s) {
                Record *r = &records[waiting[wait_head++]];
                r->picked = r->end = t;
                r->start = r->scheduled;
                r->kind = K_TIMEOUT;
                r->status = 0;
                remaining--;
            }
            next_sweep = t + 0.01;
        }
        if (t > hard_end) {
            fprintf(stderr, "openloop: past the hard end with %ld requests open\n", remaining);
            break;
        }
        double wake = next_sweep;
        if (next < n && begin + offsets[next] < wake) wake = begin + offsets[next];
        arm(wake);
        int got = epoll_wait(epfd, events, 256, -1);
        if (got < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < got; i++) {
            if (!events[i].data.ptr) {
                uint64_t ticks;
                if (read(timer_fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN) die("timerfd");
                continue;
            }
            on_event(events[i].data.ptr, events[i].events);
        }
    }

    FILE *out = fopen(out_path, "w");
    if (!out) die(out_path);
    for (long i = 0; i < n; i++) {
        Record *r = &records[i];
        fprintf(out, "%ld\t%.7f\t%.7f\t%.7f\t%.7f\t%d\t%s\n", i, r->scheduled, r->picked,
                r->start, r->end, r->status, KIND_NAMES[r->kind]);
    }
    fprintf(out, "# summary\topened=%ld\tretried=%ld\tunfinished=%ld\n", opened, retried,
            remaining);
    fclose(out);
    return remaining ? 1 : 0;
}
