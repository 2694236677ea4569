#!/usr/bin/env bash
# Builds the images the real-cluster suite runs, without Docker, as docker-archive tarballs in
# $GAVEL_CACHE/images (scripts/cluster/mkimage.py), and prints their paths:
#
# - Gavel's bid-api and operator, from the release binaries (target/release). What goes into
#   each image is read from the Dockerfile's runtime stage of the same name (COPY --from=builder
#   /out/<binary>, USER, ENV, EXPOSE, ENTRYPOINT), so the two cannot drift; the base is what the
#   Dockerfile's distroless "cc" base holds: glibc and the libraries `ldd` names, CA
#   certificates, /etc/passwd with the non-root user 65532.
# - The dev datastores the chart runs with values-dev.yaml, tagged with the names the chart
#   uses (docker.io/library/redis:7.4, docker.io/library/postgres:17) but built from Debian's
#   packages installed on this machine (redis-server, postgresql): the content is Debian's
#   Redis and PostgreSQL versions. The PostgreSQL image has an entrypoint that, like the
#   official one, creates $POSTGRES_USER/$POSTGRES_DB with $POSTGRES_PASSWORD on first start.
# - The pod sandbox ("pause") image, from Kubernetes' own pause.c (gcc -static).
# - metrics-server, its static binary from kube-build.sh's cache alone in the image.
# `--no-gavel` builds only the last three kinds (they do not need target/release).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/versions.sh
OUT="$GAVEL_CACHE/images"
mkdir -p "$OUT"
MK=scripts/cluster/mkimage.py
PREFIX=${IMAGE_PREFIX:-ghcr.io/gavel-dev}
TAG=${IMAGE_TAG:-dev}
log() { echo "images: $*" >&2; }

common_files() {
  printf '%s %s\n' /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
  printf '%s %s\n' "$ETC/passwd" /etc/passwd "$ETC/group" /etc/group
}
ETC=$(mktemp -d)
trap 'rm -rf "$ETC"' EXIT
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$ETC/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ETC/group"

# --- Gavel: the Dockerfile's runtime stage <target> ---------------------------------------
gavel_image() {
  local target=$1 image=$2 in=0 line files=() args=()
  while IFS= read -r line; do
    if [[ $line =~ ^FROM\ .*\ AS\ (.*)$ ]]; then
      [[ ${BASH_REMATCH[1]} == "$target" ]] && in=1 || in=0
      continue
    fi
    ((in)) || continue
    case $line in
      "COPY --from=builder /out/"*)
        read -r _ _ src dest <<<"$line"
        files+=("${GAVEL_RELEASE_DIR:-target/release}/${src#/out/} $dest") ;;
      "USER "*) args+=(--user "${line#USER }") ;;
      "ENV "*) args+=(--env "${line#ENV }") ;;
      "EXPOSE "*) args+=(--expose "${line#EXPOSE }") ;;
      "ENTRYPOINT "*) args+=(--entrypoint "${line#ENTRYPOINT }") ;;
    esac
  done < Dockerfile
  ((${#files[@]})) || { log "no runtime stage '$target' in the Dockerfile"; exit 1; }
  for f in "${files[@]}"; do
    [[ -x ${f%% *} ]] || { log "${f%% *} missing: cargo build --release -p gavel-$target first"; exit 1; }
  done
  { printf '%s\n' "${files[@]}"; common_files; } |
    python3 "$MK" --ldd --name "$PREFIX/$image:$TAG" --out "$OUT/$image.tar" "${args[@]}"
  echo "$OUT/$image.tar"
}
if [[ ${1:-} != --no-gavel ]]; then
  gavel_image bid-api gavel-bid-api
  gavel_image operator gavel-operator
fi

# --- Dev datastores and the sandbox image (cached: they depend on the machine's packages) ---
pkg_files() { dpkg -L "$@" | while read -r f; do [[ ! -d $f && ( -f $f || -L $f ) ]] && printf '%s %s\n' "$f" "$f"; done; }
busybox_sh() {
  local b
  b=$(command -v busybox) || { log "busybox (Debian busybox-static) is needed"; exit 1; }
  printf '%s /bin/busybox\n' "$b"
  for t in sh cat rm mkdir echo sleep; do printf '%s /bin/%s\n' "$b" "$t"; done
}

if [[ ! -s $OUT/redis.tar ]]; then
  log "redis (Debian's redis-server)"
  { pkg_files redis-server redis-tools; common_files; } |
    python3 "$MK" --ldd --name docker.io/library/redis:7.4 --out "$OUT/redis.tar" \
      --env PATH=/usr/local/bin:/usr/bin:/bin --cmd '["redis-server"]' --expose 6379
fi
echo "$OUT/redis.tar"

if [[ ! -s $OUT/postgres.tar ]]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgver=$(basename "$(dirname "$pgbin")")
  log "postgres (Debian's postgresql-$pgver)"
  ep=$ETC/docker-entrypoint.sh
  cat > "$ep" <<'SH'
#!/bin/sh
# First start: create the cluster, the user and the database from the environment, as the
# official postgres image does; then run the server in the foreground.
set -e
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  echo "$POSTGRES_PASSWORD" > /tmp/pwfile
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql
SH
  chmod 0755 "$ep"
  # Without the LLVM JIT (libLLVM alone is ~100 MB), documentation and translations.
  { pkg_files "postgresql-$pgver" "postgresql-client-$pgver" | grep -vE 'llvmjit|/usr/share/(doc|man|locale)/'; busybox_sh
    printf '%s /usr/local/bin/docker-entrypoint.sh\n' "$ep"
    printf '/usr/share/zoneinfo/Etc/UTC /usr/share/zoneinfo/Etc/UTC\n/usr/share/zoneinfo/UTC /usr/share/zoneinfo/UTC\n'
    common_files; } |
    python3 "$MK" --ldd --name docker.io/library/postgres:17 --out "$OUT/postgres.tar" \
      --env "PATH=$pgbin:/usr/local/bin:/usr/bin:/bin" --env TZ=UTC --env LANG=C \
      --entrypoint '["/usr/local/bin/docker-entrypoint.sh"]' --expose 5432
fi
echo "$OUT/postgres.tar"

if [[ ! -s $OUT/pause.tar ]]; then
  log "pause (Kubernetes' pause.c)"
  kdir=$(cd /tmp && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  gcc -Os -static -o "$ETC/pause" "$kdir/build/pause/linux/pause.c"
  printf '%s /pause\n' "$ETC/pause" |
    python3 "$MK" --name "$PAUSE_IMAGE" --out "$OUT/pause.tar" --entrypoint '["/pause"]'
fi
echo "$OUT/pause.tar"

# metrics-server: the static binary kube-build.sh caches, alone FROM scratch (non-root).
ms_bin=$KUBE_CACHE/bin/metrics-server ms=$OUT/metrics-server-$METRICS_SERVER_VERSION.tar
if [[ ! -s $ms || $ms_bin -nt $ms ]]; then
  [[ -x $ms_bin ]] || { log "$ms_bin missing: scripts/cluster/kube-build.sh metrics-server"; exit 1; }
  log "metrics-server $METRICS_SERVER_VERSION"
  printf '%s /metrics-server\n' "$ms_bin" |
    python3 "$MK" --name "$METRICS_SERVER_IMAGE" --out "$ms" --entrypoint '["/metrics-server"]' --expose 4443
fi
echo "$ms"
