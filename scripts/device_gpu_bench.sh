#!/usr/bin/env bash
# `make gpu-bench` on the lent GPU machine, from what `make device-bundle` carried there
# (tools/device_bundle.py: its manifest.json lists the calls and what each carries).
#
#   bash scripts/device_gpu_bench.sh --unpack-jre    # a call carrying .device/jre.tar.xz
#   bash scripts/device_gpu_bench.sh flask_torch     # a call carrying .device/{wheels,artifacts}
#   bash scripts/device_gpu_bench.sh torchserve      # the same plus .device/torchserve, on the
#                                                    # machine still warm from --unpack-jre
#   SMOKE=1 bash scripts/device_gpu_bench.sh STACKS  # instead of gpu-bench: one short CPU
#                                                    # point per stack (do the parts start?)
#
# The image has Python 3.12 and its own CUDA torch but no Flask, gunicorn, Locust or Java
# and no network: the carried wheels go into a venv that also sees the image's packages
# (its torch) behind them, and the carried Java runtime is unpacked under build/ (ignored
# by git, so it stays between calls while the machine is warm). The run's folder is
# copied under $OUT when set (the device tool brings $OUT back).
set -euo pipefail

BUNDLE=${DEVICE_BUNDLE:-.device}
JRE_DIR=${DEVICE_JRE:-build/device/jre}
VENV=${DEVICE_VENV:-/tmp/gpu-bench-venv}
PY=${PYTHON:-python3}

if [ "${1:-}" = "--unpack-jre" ]; then
    mkdir -p "$(dirname "$JRE_DIR")"
    rm -rf "$JRE_DIR"
    tar -xJf "$BUNDLE/jre.tar.xz" -C "$(dirname "$JRE_DIR")"
    "$JRE_DIR/bin/java" -version
    echo "device: Java runtime in $JRE_DIR; run the torchserve step next, while this machine is warm"
    exit 0
fi

STACKS=${1:?usage: device_gpu_bench.sh --unpack-jre | STACKS (flask_torch, torchserve, or both comma-separated)}
shift
for part in wheels artifacts; do
    [ -d "$BUNDLE/$part" ] || { echo "device: $BUNDLE/$part was not carried (make device-bundle; carry it)" >&2; exit 2; }
done
case ",$STACKS," in
    *,torchserve,*)
        [ -d "$BUNDLE/torchserve" ] || { echo "device: torchserve needs $BUNDLE/torchserve carried" >&2; exit 2; }
        [ -x "$JRE_DIR/bin/java" ] || { echo "device: torchserve needs the Java runtime: run --unpack-jre first on this warm machine (no $JRE_DIR/bin/java)" >&2; exit 2; }
        ;;
esac

# A venv whose own site-packages (the carried wheels) come first and the image's (its
# CUDA torch, numpy, matplotlib) after them, through a .pth file.
IMAGE_SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$VENV"
"$PY" -m venv --without-pip "$VENV"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$IMAGE_SITE" > "$SITE/device-image.pth"
wheels=("$BUNDLE"/wheels/*.whl)
[ -d "$BUNDLE/torchserve" ] && wheels+=("$BUNDLE"/torchserve/*.whl)
# --python: console scripts (torchserve, locust) next to the venv's python, as the
# harness looks for them, with the venv's python in their first line.
"$PY" -m pip --python "$VENV/bin/python" install --quiet --no-index --no-deps \
    --no-compile --no-cache-dir "${wheels[@]}"

[ -x "$JRE_DIR/bin/java" ] && export JAVA_HOME="$PWD/$JRE_DIR" PATH="$PWD/$JRE_DIR/bin:$PATH"
export PATH="$VENV/bin:$PATH" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Short: TorchServe's worker sockets live under the run folder (107-byte path limit).
RUN_ID=${RUN_ID:-gpu-$(date -u +%m%d-%H%M%S)}
status=0
if [ -n "${SMOKE:-}" ]; then
    for stack in ${STACKS//,/ }; do
        "$VENV/bin/python" -m loadtests.runner point --stack "$stack" --users 2 \
            --duration 3 --warmup 1 --artifacts "$BUNDLE/artifacts" \
            --run-id "$RUN_ID-${stack:0:5}" || status=$?
        [ -n "${OUT:-}" ] && mkdir -p "$OUT/results" && cp -r "results/$RUN_ID-${stack:0:5}" "$OUT/results/"
    done
    exit "$status"
fi
"$VENV/bin/python" -m loadtests.gpu_bench --stacks "$STACKS" --artifacts "$BUNDLE/artifacts" \
    --run-id "$RUN_ID" "$@" || status=$?
if [ -n "${OUT:-}" ] && [ -d "results/$RUN_ID" ]; then
    mkdir -p "$OUT/results"
    cp -r "results/$RUN_ID" "$OUT/results/"
fi
exit "$status"
