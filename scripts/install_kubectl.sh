#!/usr/bin/env bash
# Installs a pinned kubectl without root: the official release binary from dl.k8s.io,
# checked against its published sha256 before it is installed.
#   bash scripts/install_kubectl.sh [DIR]        # DIR defaults to ~/.local/bin
# `make k8s-kubectl` runs it with DIR=.venv/bin (k8s/validate.py looks there too) when no
# kubectl is on PATH. Debian has no `kubectl` package (its `kubernetes-client` is far too
# old for kustomize v5), hence this script.
#
# Settings (environment):
#   KUBECTL_VERSION   the release to install (default below: the kubectl these checks were
#                     written with); any v1.27+ renders the overlays (kustomize v5)
#   KUBECTL_BASE_URL  where releases live (default https://dl.k8s.io/release); a mirror, or
#                     file:///dir holding <version>/bin/<os>/<arch>/kubectl{,.sha256}
#                     copied from a machine that can reach dl.k8s.io
# Exit status: 0 installed (or already that version), 1 checksum mismatch (nothing
# installed), 2 download failed or bad arguments.
set -euo pipefail

KUBECTL_VERSION="${KUBECTL_VERSION:-v1.32.4}"
KUBECTL_BASE_URL="${KUBECTL_BASE_URL:-https://dl.k8s.io/release}"
DEST="${1:-$HOME/.local/bin}"

case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "install_kubectl: no kubectl release for $(uname -m)" >&2; exit 2 ;;
esac
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
url="${KUBECTL_BASE_URL%/}/${KUBECTL_VERSION}/bin/${os}/${arch}/kubectl"

installed_version() {
  "$1" version --client 2>/dev/null | sed -n 's/^Client Version: \(v[0-9.]*\).*/\1/p'
}

if [[ -x "$DEST/kubectl" && "$(installed_version "$DEST/kubectl")" == "$KUBECTL_VERSION" ]]; then
  echo "install_kubectl: $DEST/kubectl is already $KUBECTL_VERSION"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch URL FILE: curl (file:// and http(s)), else wget (http(s) only)
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --retry 2 --connect-timeout 20 \
      --output "$2" "$1"
  elif command -v wget >/dev/null 2>&1 && [[ "$1" != file://* ]]; then
    wget --quiet --tries=2 --timeout=20 --output-document="$2" "$1"
  else
    echo "no curl (or wget for http) to download with" >&2
    return 1
  fi
}

echo "install_kubectl: downloading kubectl $KUBECTL_VERSION ($os/$arch) from $url"
if ! fetch "$url" "$tmp/kubectl" || ! fetch "$url.sha256" "$tmp/kubectl.sha256"; then
  cat >&2 <<MSG
install_kubectl: could not download $url (or its .sha256).
  This machine may not reach ${KUBECTL_BASE_URL}. On a machine that can, download
    $url
    $url.sha256
  copy both into a folder here as <folder>/${KUBECTL_VERSION}/bin/${os}/${arch}/, and run
    KUBECTL_BASE_URL=file://<folder> bash scripts/install_kubectl.sh $DEST
  (the checksum is still verified). Nothing was installed.
MSG
  exit 2
fi

# The .sha256 file holds the hex digest alone (some mirrors add the file name after it).
want="$(awk '{print $1; exit}' "$tmp/kubectl.sha256")"
got="$(sha256sum "$tmp/kubectl" | awk '{print $1}')"
if [[ ! "$want" =~ ^[0-9a-f]{64}$ || "$got" != "$want" ]]; then
  echo "install_kubectl: REFUSED: sha256 of the download is $got, the release says" \
    "'$want' ($url.sha256). Nothing was installed." >&2
  exit 1
fi

chmod 0755 "$tmp/kubectl"
mkdir -p "$DEST"
mv "$tmp/kubectl" "$DEST/kubectl"
echo "install_kubectl: installed $DEST/kubectl ($KUBECTL_VERSION, sha256 $got)"
case ":$PATH:" in
  *":$DEST:"*) ;;
  *) echo "install_kubectl: $DEST is not on PATH: add it, or use KUBECTL=$DEST/kubectl" ;;
esac
