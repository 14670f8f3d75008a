#!/usr/bin/env bash
# Create the virtual environment and install FaceGate with everything it runs on.
# Idempotent: make calls it only when pyproject.toml or this script changed.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup: $PYTHON not found; FaceGate needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
LOG="$VENV/setup.log"
: >"$LOG"
run_logged() {
    # pip's output goes to the log; on failure its end is shown with the log's path.
    if ! "$@" >>"$LOG" 2>&1; then
        echo "setup: failed: $*" >&2
        grep -v "^WARNING: Location" "$LOG" | tail -n 25 >&2
        echo "setup: full log: $LOG" >&2
        exit 1
    fi
}
run_logged "${PIP[@]}" install --upgrade pip

echo "setup: installing FaceGate and its dependencies (the first run takes several minutes)"
# compat mode: the repository root goes on sys.path, so every top-level package (schemas,
# producers, stream_processors, inference_worker, trainer, console) is importable as it is edited.
run_logged "${PIP[@]}" install -e '.[dev]' --config-settings editable_mode=compat

# onnxruntime and onnxruntime-openvino install into the same onnxruntime/ folder: if anything
# pulled in plain onnxruntime, remove it and reinstall the OpenVINO build over the shared files.
if "${PIP[@]}" show onnxruntime >/dev/null 2>&1; then
    echo "setup: removing plain onnxruntime (it overwrites onnxruntime-openvino)"
    run_logged "${PIP[@]}" uninstall --yes onnxruntime
    OV_VERSION=$("${PIP[@]}" show onnxruntime-openvino | awk '/^Version:/{print $2}')
    run_logged "${PIP[@]}" install --no-deps --force-reinstall "onnxruntime-openvino==$OV_VERSION"
fi
"$VENV/bin/python" - <<'PY'
import onnxruntime, sys
providers = onnxruntime.get_available_providers()
if "OpenVINOExecutionProvider" not in providers:
    sys.exit(f"setup: OpenVINOExecutionProvider missing after install: {providers}")
print(f"setup: onnxruntime {onnxruntime.__version__} with {', '.join(providers)}")
PY
# promtool validates the Prometheus files in the tests (tests/deploy), and the prometheus server
# runs `facegate stack up --with-monitoring`: both come from Debian's prometheus package, which
# only root can install. Without it those tests are skipped and --with-monitoring says how to
# install it.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's prometheus package (promtool, prometheus)"
        APT_LOG="$VENV/apt.log"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends prometheus; } >"$APT_LOG" 2>&1; then
            echo "setup: failed: apt-get install prometheus" >&2
            tail -n 15 "$APT_LOG" >&2
            exit 1
        fi
        # FaceGate starts its own Prometheus when asked; the package's system service is not used.
        if [ -d /run/systemd/system ]; then
            systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
    else
        echo "setup: note: promtool not found; as root, \`apt-get install prometheus\` adds it" \
             "(deployment tests skip without it)"
    fi
fi
# The proctor console's browser tests (tests/e2e/test_console_browser.py) drive Debian's
# chromium through Playwright; Playwright's own browser downloads are never used. Without it
# those tests are skipped.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's chromium package (browser tests of the console)"
        APT_LOG="$VENV/apt.log"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends chromium; } >"$APT_LOG" 2>&1; then
            echo "setup: failed: apt-get install chromium" >&2
            tail -n 15 "$APT_LOG" >&2
            exit 1
        fi
    else
        echo "setup: note: /usr/bin/chromium not found; as root, \`apt-get install chromium\`" \
             "adds it (the console's browser tests skip without it)"
    fi
fi
echo "setup: done; the command line is $VENV/bin/facegate"
