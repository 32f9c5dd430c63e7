#!/usr/bin/env bash
# Installs the measurement tools the load runs calibrate and cross-check with:
#   wrk         (Debian `wrk`)            an independent C load client beside Locust
#   nginx       (Debian `nginx-light`)    the null server that measures the generator's floor
#   h2load      (Debian `nghttp2-client`) a second C client for tail checks
#   cc          (Debian `gcc`, `libc6-dev`) builds reliability/openloop.c, the independent
#                                         open-loop client of `make overload`
# Installs with apt-get only where the machine allows it (root or passwordless sudo, and
# apt-get present); otherwise says which tool is missing and how to get it. Always exits 0:
# a missing tool marks a run uncalibrated, it does not stop the build, but it is never
# silent. Quick and idempotent when everything is present (no apt-get call at all).
set -uo pipefail

# tool binary -> Debian packages that ship it (space-separated)
declare -A PACKAGE_OF=(
  [wrk]=wrk
  [nginx]=nginx-light
  [h2load]=nghttp2-client
  [cc]="gcc libc6-dev"
)
TOOLS=(wrk nginx h2load cc)

have() {
  # nginx lives in /usr/sbin, which a non-root PATH may lack.
  command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]
}

missing_packages() {
  local tool
  for tool in "${TOOLS[@]}"; do
    # Unquoted on purpose: one line per package.
    # shellcheck disable=SC2086
    have "$tool" || printf '%s\n' ${PACKAGE_OF[$tool]}
  done
}

mapfile -t missing < <(missing_packages)
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_tools: wrk, nginx, h2load and cc are present"
  exit 0
fi

# How we may call apt-get: directly as root, or through passwordless sudo.
as_root=()
can_install=false
if command -v apt-get >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]]; then
    can_install=true
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
    can_install=true
  fi
fi

apt_install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "$@"
}

if $can_install; then
  echo "install_tools: installing ${missing[*]} with apt-get"
  # Update the package lists only when the install fails: a fresh list costs a minute and
  # is usually not needed on a machine that was set up recently.
  if ! apt_install "${missing[@]}"; then
    echo "install_tools: install failed; running apt-get update and trying again"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update \
      && apt_install "${missing[@]}" \
      || echo "install_tools: apt-get could not install ${missing[*]}"
  fi
fi

# Say what is still missing, whatever happened above.
status=present
for tool in "${TOOLS[@]}"; do
  if have "$tool"; then
    echo "install_tools: $tool: present"
  else
    status=missing
    echo "install_tools: $tool: MISSING; install the Debian package(s) ${PACKAGE_OF[$tool]}" \
      "(sudo apt-get install ${PACKAGE_OF[$tool]}) or rerun scripts/install_tools.sh as root"
  fi
done
if [[ $status == missing ]]; then
  echo "install_tools: runs without these tools are marked uncalibrated / without the" \
    "independent-client column"
fi
exit 0
