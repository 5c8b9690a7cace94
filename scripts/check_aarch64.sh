#!/usr/bin/env bash
# The device path, end to end, on an emulated aarch64 Debian userland (a Raspberry-Pi-5-class Cortex-A76):
#   qemu-user-static + debootstrap arm64 rootfs -> base install from this repository's wheel (+ run-onnx)
#   -> edgepack-agent info, edgepack inspect/check/run/bench of a tflite-int8 + onnx-int8 bundle packed on the host
#   -> parity of every target recomputed with the ARM kernels (`check --on-device`; qemu executes their integer
#      arithmetic faithfully, its timings mean nothing) -> host -> agent bench over loopback (HTTPS, the agent's
#      certificate pinned by the fingerprint it printed), parity included.
#
# Needs root (debootstrap, chroot, binfmt_misc, a private mount namespace), Debian's mirror and PyPI.
# Not in CI; ~10-20 min the first time (the rootfs is kept), CPU-heavy (everything arm64 runs under TCG).
# Re-runnable: the rootfs, the host-side bundle and the pip cache are kept in $WORK; the venv in the
# rootfs is rebuilt from a fresh wheel every run.
#
#   sudo scripts/check_aarch64.sh                    # packs the built-in MiniLM to tflite-int8,onnx-int8 with .venv
#   sudo BUNDLE=out/my-bundle scripts/check_aarch64.sh
#
# Known trap: ai-edge-litert and onnxruntime crash (SIGSEGV/SIGILL) under qemu-user when the chroot sees the
# host's x86 /proc/cpuinfo (their CPU-feature probes read it). The checks run in a private mount namespace
# where the chroot's /proc/cpuinfo is an ARM one (bind-mounted), with QEMU_CPU=cortex-a76.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/var/tmp/edgepack-aarch64}
ROOTFS=$WORK/rootfs
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PORT=${PORT:-18765}
export QEMU_CPU=${QEMU_CPU:-cortex-a76}
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
INSIDE=/opt/edgepack-check   # in the rootfs

say() { printf '\n=== %s\n' "$*"; }
die() { echo "check_aarch64: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, binfmt_misc, mount namespaces)"
[ -x "$HOST_PY" ] || die "$HOST_PY not found: run scripts/setup.sh first (the host packs the bundle and drives the agent)"
mkdir -p "$WORK"

say "host prerequisites: qemu-user-static, debootstrap, binfmt_misc"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  # F: the interpreter is opened now, so it works inside the chroot without a copy there
  printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:OCF' \
    > /proc/sys/fs/binfmt_misc/register
fi
qemu-aarch64-static --version | sed -n 1p

say "arm64 Debian $SUITE rootfs in $ROOTFS"
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  rm -rf "$ROOTFS"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
fi
echo "$(chroot "$ROOTFS" /usr/bin/python3 --version) on $(chroot "$ROOTFS" /usr/bin/uname -m)"

say "the wheel, built from this checkout"
rm -rf "$WORK/dist"
(cd "$REPO" && "$HOST_PY" -m pip wheel -q --no-deps -w "$WORK/dist" . 2>&1 | grep -v '^WARNING: Location' || true)
WHEEL=$(ls "$WORK"/dist/edgepack-*.whl)
ls -l "$WHEEL"

say "a tflite-int8 + onnx-int8 bundle, packed on the host"
if [ -n "${BUNDLE:-}" ]; then
  HOST_BUNDLE=$(cd "$BUNDLE" && pwd)
else
  HOST_BUNDLE=$WORK/minilm
  if [ ! -f "$HOST_BUNDLE/manifest.json" ]; then
    "$REPO/.venv/bin/edgepack" pack --targets tflite-int8,onnx-int8 -o "$HOST_BUNDLE" --force > "$WORK/pack.log" 2>&1 \
      || { tail -5 "$WORK/pack.log"; die "packing the bundle failed"; }
  fi
fi
"$REPO/.venv/bin/edgepack" inspect "$HOST_BUNDLE" | sed -n 1,2p
echo "packed on: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(grep -m1 -o -w 'avx512_vnni\|avx2' /proc/cpuinfo | tail -1))"
"$REPO/.venv/bin/python" - "$HOST_BUNDLE" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
for t in m["targets"]:
    fb = t["details"].get("precision_fallback")
    print(f"  {t['name']}: {t['status']}, pack-time mean_cosine {t['parity']['mean_cosine']:.4f}"
          + (f"; precision fallback kept {', '.join(fb['float_groups'])} in float" if fb and fb["passed"] else ""))
PY

rm -rf "$ROOTFS$INSIDE"
mkdir -p "$ROOTFS$INSIDE" "$WORK/pip-cache"
cp "$WHEEL" "$ROOTFS$INSIDE/"
cp -r "$HOST_BUNDLE" "$ROOTFS$INSIDE/bundle"
# the host's trust store: pip in the chroot then works behind the same TLS proxy as the host
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS$INSIDE/host-ca.crt"
cat > "$WORK/cpuinfo" <<'EOF'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

processor	: 1
BogoMIPS	: 108.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x4
CPU part	: 0xd0b
CPU revision	: 1

Model		: Emulated Cortex-A76 (qemu-user, edgepack check_aarch64.sh)
EOF

cat > "$ROOTFS$INSIDE/inside.sh" <<'EOF'
#!/bin/bash
# Runs in the arm64 chroot: what a user does on the board.
set -euo pipefail
cd /opt/edgepack-check
export PIP_CERT=/opt/edgepack-check/host-ca.crt SSL_CERT_FILE=/opt/edgepack-check/host-ca.crt
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CACHE_DIR=/opt/pip-cache TF_CPP_MIN_LOG_LEVEL=2 HOME=/root
say() { printf '\n=== [arm64] %s\n' "$*"; }
say "base install: python3 -m venv + pip install ./edgepack-*.whl[run-onnx] (no torch)"
rm -rf /opt/venv
python3 -m venv /opt/venv
start=$(date +%s)
/opt/venv/bin/pip install -q "$(ls ./edgepack-*.whl)[run-onnx]"
echo "pip install: $(( $(date +%s) - start )) s"
echo "venv size: $(du -sh /opt/venv | cut -f1)"
echo "wheels installed (name version tag):"
for w in /opt/venv/lib/python3*/site-packages/*.dist-info/WHEEL; do
  d=$(dirname "$w"); n=$(basename "$d" .dist-info)
  printf '  %-40s %s\n' "$n" "$(grep -m1 '^Tag:' "$w" | cut -d' ' -f2)"
done
/opt/venv/bin/python -c "import torch" 2>/dev/null && { echo "torch is installed: not a base install"; exit 1; } || echo "torch: not installed (as intended)"
/opt/venv/bin/python -c "import transformers" 2>/dev/null && { echo "transformers is installed"; exit 1; } || echo "transformers: not installed (as intended)"
export PATH=/opt/venv/bin:$PATH
say "edgepack-agent info"
edgepack-agent info
say "edgepack --help"
edgepack --help | tail -14
say "edgepack inspect bundle"
edgepack inspect bundle | tail -3
say "edgepack check bundle --runtime tflite-int8=ai-edge-litert>=2.3"
edgepack check bundle --runtime 'tflite-int8=ai-edge-litert>=2.3'
say "edgepack check bundle --on-device: every target's parity recomputed with the ARM kernels"
set +e; edgepack check bundle --on-device --strict --json > /tmp/parity.json; parity_rc=$?; set -e
python3 - <<'PY'
import json
d = json.load(open("/tmp/parity.json"))
fp = d["fingerprint"]
print(f"device: {fp['cpu_model']} | {fp['machine']} | ISA {' '.join(fp['isa'])} | runtimes "
      + ", ".join(v for v in fp["runtimes"].values() if v))
print(f"{'target':<14}{'length':>8}{'texts':>7}{'mean cos':>10}{'min cos':>9}  pack mean cos  verdict")
for r in d["results"]:
    p = r["device_parity"]
    if p is None:
        print(f"{r['target']:<14} {r['status']}: {r['error']}")
        continue
    pack = p["pack_metrics"].get("mean_cosine")
    print(f"{r['target']:<14}{'calib':>8}{p['n_samples']:>7}{p['metrics']['mean_cosine']:>10.4f}"
          f"{p['metrics']['min_cosine']:>9.4f}  {pack:>13.4f}  {'ok' if p['passed'] else 'BELOW GATE'}")
    for row in p["by_length"]:
        print(f"{'':<14}{row['length']:>8}{row['n_samples']:>7}{row['mean_cosine']:>10.4f}{row['min_cosine']:>9.4f}"
              f"  {'':>13}  {'ok' if row['passed'] else 'below'}")
    for s in p["shortfalls"]:
        print(f"{'':<14}- {s}")
PY
echo "check --on-device --strict: exit $parity_rc"
say "edgepack pack (needs the pack extra: one line, exit 2)"
set +e; edgepack pack -o /tmp/x; echo "exit status $?"; set -e
say "edgepack run bundle TEXT... (the bundle's tokenizer, the artifact it picks)"
edgepack run bundle "The kettle clicked off just as the phone started ringing." "Which museums are open late on Thursday evenings?"
edgepack run bundle "Which museums are open late on Thursday evenings?" --json > /tmp/run.json
python3 -c "import json; d=json.load(open('/tmp/run.json')); r=d['results'][0]; print('run --json:', d['target'], len(r['embedding']), 'dims, first', [round(v, 4) for v in r['embedding'][:3]])"
say "edgepack bench bundle (local, on the emulated board)"
edgepack bench bundle --targets tflite-int8 --runs 5 --min-seconds 0 --warmup 1 --json --out /tmp/local-bench.json > /dev/null
python3 - <<'PY'
import json
r = json.load(open("/tmp/local-bench.json"))
for x in r["results"]:
    print(x["target"], x["status"], "p50 %.1f ms" % x["latency_ms"]["p50"] if x.get("latency_ms") else x.get("error"),
          "peak RSS %.1f MB" % x["peak_rss_mb"] if x.get("peak_rss_mb") else "",
          "| parity here:", "ok" if (x.get("device_parity") or {}).get("passed") else x.get("device_parity"))
print("machine", r["fingerprint"]["machine"], "|", r["fingerprint"]["cpu_model"], "| runtimes", r["fingerprint"]["runtimes"])
PY
EOF
chmod +x "$ROOTFS$INSIDE/inside.sh"

say "in a private mount namespace: ARM /proc/cpuinfo for the chroot, QEMU_CPU=$QEMU_CPU"
export WORK ROOTFS INSIDE PORT HOST_BUNDLE REPO
unshare --mount --propagation private bash -euo pipefail -c '
  mount -t proc proc "$ROOTFS/proc"
  mount --bind "$WORK/cpuinfo" "$ROOTFS/proc/cpuinfo"
  mount --rbind /sys "$ROOTFS/sys"   # as on a board (cpufreq, thermal); with it, the x86 cpuinfo segfaults LiteRT
  mount --bind /dev "$ROOTFS/dev"
  mkdir -p "$ROOTFS/opt/pip-cache" && mount --bind "$WORK/pip-cache" "$ROOTFS/opt/pip-cache"
  mkdir -p "$ROOTFS/etc" && cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/bin:/bin QEMU_CPU="$QEMU_CPU" /bin/bash "$INSIDE/inside.sh"

  printf "\n=== host -> agent (arm64, in the chroot) on loopback :%s\n" "$PORT"
  chroot "$ROOTFS" /usr/bin/env -i PATH=/opt/venv/bin:/usr/bin:/bin QEMU_CPU="$QEMU_CPU" HOME=/root TF_CPP_MIN_LOG_LEVEL=2 \
    /opt/venv/bin/edgepack-agent serve --host 127.0.0.1 --port "$PORT" --workdir /tmp/agent --idle-seconds 0.2 \
    > "$WORK/agent.log" 2>&1 &
  agent=$!
  trap "kill $agent 2>/dev/null || true" EXIT
  for _ in $(seq 1 240); do grep -q "listening on" "$WORK/agent.log" && break; sleep 1; done
  grep -m1 "listening on" "$WORK/agent.log"
  # TLS by default: the agent made its certificate on first start and printed its fingerprint; the host pins it
  fp=$(sed -n "s/^certificate SHA-256 fingerprint: \([0-9A-F:]*\).*/\1/p" "$WORK/agent.log" | head -1)
  [ -n "$fp" ] || { cat "$WORK/agent.log"; echo "check_aarch64: the agent printed no certificate fingerprint" >&2; exit 1; }
  echo "pinned certificate fingerprint: $fp"
  "$REPO/.venv/bin/edgepack" bench "$HOST_BUNDLE" --device "https://127.0.0.1:$PORT" --fingerprint "$fp" --runs 5 \
    --min-seconds 0 --warmup 1 --json --out "$WORK/remote-bench.json" > /dev/null
  "$REPO/.venv/bin/python" - "$WORK/remote-bench.json" "$PORT" "$fp" <<"PY"
import json, sys
from device_bench.client import AgentClient
r = json.load(open(sys.argv[1]))
for x in r["results"]:
    p = x.get("device_parity") or {}
    print("remote:", x["target"], x["status"], "p50 %.1f ms" % x["latency_ms"]["p50"] if x.get("latency_ms") else x.get("error"),
          "| parity on the agent:", ("ok, mean_cosine %.4f" % p["metrics"]["mean_cosine"]) if p.get("passed")
          else "BELOW GATE: " + str(p.get("error") or p.get("shortfalls")))
print("remote machine:", r["fingerprint"]["machine"], "|", r["fingerprint"]["cpu_model"], "| edgepack", r["fingerprint"]["edgepack"])
info = AgentClient(f"https://127.0.0.1:{sys.argv[2]}", fingerprint=sys.argv[3]).info()  # pinned, as the bench
agent = info.get("agent", info)
print("agent:", {k: agent.get(k) for k in ("version", "rss_mb", "forbidden_modules_loaded")},
      "(rss_mb: the qemu-user process, emulator included)")
PY
'
say "done: the device path works on arm64 (under qemu-user; timings are emulated, not a board's)"
