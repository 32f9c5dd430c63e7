"""gunicorn settings for the Flask + TorchScript stack (option names checked against
gunicorn 27.0.1's gunicorn/config.py).

    gunicorn -c services/flask_torch/gunicorn.conf.py "services.flask_torch.app:create_app()"

Run from the repository root (the Docker image's WORKDIR): gunicorn puts its working
directory on sys.path before reading this file, which is how the import below resolves.
Only numbers are derived here; the app's own settings live in settings.py.
"""

import os
import shutil
import tempfile
import time
from pathlib import Path

from digitnet.spec import AdmissionPolicy, ServingLimits
from services.flask_torch.connections import OPEN
from services.flask_torch.http_timing import TIMER
from services.flask_torch.settings import (
    BIND_ENV,
    DEFAULT_BIND,
    DEFAULT_WORKER_CONNECTIONS,
    TORCH_THREADS_ENV,
    WORKER_CONNECTIONS_ENV,
    env_int,
    env_str,
    parallelism_from_env,
)
from services.guard import NGINX, NginxFront, guard_from_env, guard_inflight

# The cores this process may run on: taskset and `docker run --cpuset-cpus` narrow it.
# A CPU quota (`docker run --cpus`) does not show here; under one, set FLASK_TORCH_WORKERS
# and FLASK_TORCH_THREADS explicitly.
_cores = len(os.sched_getaffinity(0))
_split = parallelism_from_env(_cores)

# Loopback by default so a local run is never reachable from the network; the Docker image
# sets FLASK_TORCH_BIND=0.0.0.0:8000 because the container's own network is the boundary.
# With DIGITNET_GUARD=nginx (services/guard.py) nginx takes that address and gunicorn a
# private unix socket behind it.
_public_bind = env_str(BIND_ENV, DEFAULT_BIND)
_guard = guard_from_env()
_guard_dir = Path(tempfile.mkdtemp(prefix="digitnet-guard-")) if _guard == NGINX else None
if _guard_dir is not None:
    # nginx's workers run as another user when the master is root (the image's is not):
    # they may pass through the directory to the socket, not list or write it.
    _guard_dir.chmod(0o711)
bind = [f"unix:{_guard_dir / 'app.sock'}"] if _guard_dir else [_public_bind]

# One process per torch thread group, workers x torch threads <= cores (settings.py):
# processes sidestep the GIL for the Python half of a request (JSON parse and encode).
workers = _split.workers
# Each worker's create_app() reads its torch thread count from this variable; gunicorn sets
# it in the master's environment before forking, so every worker sees the derived value.
raw_env = [f"{TORCH_THREADS_ENV}={_split.threads}"]
# Behind the nginx front, the front admits: a second bound in Python would refuse in Python
# again, at the cost the front exists to avoid (measured, `make overload`, flask_torch at 2x
# capacity: goodput 54% of capacity with both, 89% with the front's alone). The workers
# still take what they are given in arrival order (DIGITNET_ADMIT_ORDER).
if _guard_dir is not None:
    raw_env.append("DIGITNET_ADMISSION=off")

# gevent: every connection is a greenlet, so connections that trickle their body in (slow
# clients, the "slow POST" attack) cost a socket each, not a thread. With gthread, 32 such
# connections held all 2 x 4 threads and other clients timed out; with gevent they were
# answered in milliseconds (reliability/slow_clients.py, `make faults`).
# Requests are CPU-bound and run one at a time per worker either way (the GIL, and the
# forward-pass lock in predictor.py); processes, not greenlets, give the parallelism.
worker_class = "gevent"
# Open connections per worker, slow ones included; beyond it the worker stops accepting
# (the kernel queues further connections). A buffering proxy in front is the defence
# against more slow connections than this. This is not the request bound: the app's
# admission control (app.py, digitnet.spec.AdmissionPolicy) lets a worker hold about
# objective / service time predict requests and answers the rest 503 at once, so under
# overload connections stay cheap to hold and a refusal needs no queue slot.
worker_connections = env_int(WORKER_CONNECTIONS_ENV) or DEFAULT_WORKER_CONNECTIONS

# The master kills a worker silent for this long. gevent workers heartbeat from their hub
# loop, so this bounds a worker stuck in CPU work (a hung forward pass), not a slow
# client; 30 s leaves room for a slow first model load on a busy machine.
timeout = 30
# On SIGTERM, in-flight requests get this long to finish before workers are killed; short,
# because a request takes milliseconds and `docker stop` waits only 10 s by default.
graceful_timeout = 10
# Seconds an idle keep-alive connection stays open: load generators and a proxy in front
# reuse connections, and 5 s is longer than their gap between requests.
keepalive = 5

# Request-line and header limits well under gunicorn's defaults: the API's longest URL is
# /v1/models/<name>:predict and clients send a handful of headers. The body is limited by
# Flask's MAX_CONTENT_LENGTH (413 JSON), which gunicorn has no equivalent for.
limit_request_line = 1024
limit_request_fields = 32
limit_request_field_size = 4096

# Never import the app (and with it torch) in the master: a forward pass in the master starts
# OpenMP's thread pool, and a forked worker inherits the pool's state without its threads,
# so its first parallel region deadlocks. The model file is small; each worker loads its own.
preload_app = False

# The worker heartbeat file is touched constantly; tmpfs keeps it off overlay/disk
# filesystems where the write can stall (gunicorn's documented Docker advice) and works on a
# read-only root filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Logs go to the process's stdout/stderr (the container log or the run_dir log file).
# Access logging is off unless asked for: a line per request costs throughput under load.
errorlog = "-"
accesslog = env_str("FLASK_TORCH_ACCESS_LOG", "") or None
loglevel = "info"

# gunicorn >= 25.1 otherwise opens a control socket under $XDG_RUNTIME_DIR or
# ~/.gunicorn/, which fails on a read-only root filesystem and for a user without a home.
control_socket_disable = True



# A 413 leaves the oversized body unread, and gunicorn drains it before the next request
# on the connection: 1 KiB per read, never yielding while the client keeps sending, so one
# client sending bodies over the limit back to back starved every other request on its
# worker (measured: normal clients timed out at 5 s; reliability/floods.py, big phase).
# Closing at once is no better: the client, still sending, gets a reset instead of the
# 413 about half the time. So, as nginx's lingering close: the body is read and dropped
# in large chunks, the worker's other requests run between chunks, and past this many
# bytes or seconds the connection is closed instead.
UNREAD_DRAIN_CHUNK = 64 * 1024
UNREAD_DRAIN_MAX_BYTES = 16 * 1024 * 1024
UNREAD_DRAIN_S = 2.0


def post_worker_init(worker):
    # The HTTP server's own stages in every reply (http_timing.py): each connection's
    # socket stamps when the kernel received a request and when its reply went out.
    TIMER.attach(worker)
    # The worker's open connections, counted for the admission gate's fast turn (app.py).
    OPEN.attach(worker)


def post_request(worker, req, environ, resp):
    TIMER.written(environ)
    # The worker's other connections get read before this one's next request.
    OPEN.take_turns()
    if resp is None or resp.status_code != 413:
        return
    sock = environ.get("gunicorn.socket")
    prior = sock.gettimeout() if sock is not None else None
    deadline = time.monotonic() + UNREAD_DRAIN_S
    drained = 0
    try:
        while drained <= UNREAD_DRAIN_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if sock is not None:
                sock.settimeout(remaining)
            data = req.body.read(UNREAD_DRAIN_CHUNK)
            if not data:
                return  # all of it read: the connection stays alive
            drained += len(data)
            time.sleep(0)  # under gevent, a turn for the worker's other greenlets
    except OSError:  # the socket timed out or the client went away
        pass
    finally:
        if sock is not None:
            try:
                sock.settimeout(prior)
            except OSError:
                pass
    req.force_close()


def on_starting(server):
    """Starts the nginx front (DIGITNET_GUARD=nginx) as this master's child, so stopping
    the process tree stops it too."""
    if _guard_dir is not None:
        policy = AdmissionPolicy.from_env()
        inflight = guard_inflight(policy, workers)
        server.digitnet_front = NginxFront.start(
            _public_bind, f"unix:{_guard_dir / 'app.sock'}", inflight, policy,
            ServingLimits.from_env(), _guard_dir)
        server.log.info("nginx front on %s: at most %d predict requests in flight, the "
                        "rest refused with 503", _public_bind, inflight)


def on_exit(server):
    front = getattr(server, "digitnet_front", None)
    if front is not None:
        front.stop()
    if _guard_dir is not None:
        shutil.rmtree(_guard_dir, ignore_errors=True)
