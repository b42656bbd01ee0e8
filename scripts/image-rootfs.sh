#!/usr/bin/env bash
# image-rootfs.sh BIN_DIR OUT_DIR: lay out the product image's root filesystem without a Docker
# engine, matching the Dockerfile's final stage (gcr.io/distroless/cc-debian12:nonroot):
#   /usr/local/bin/hyperion-vault-{api,controller}   stripped copies of BIN_DIR's binaries
#   the shared libraries they load (glibc, libgcc_s) from this Debian 12 host, the same
#   packages distroless/cc-debian12 is made of
#   /etc/passwd, /etc/group with root and nonroot (65532), /etc/nsswitch.conf,
#   /etc/ssl/certs/ca-certificates.crt (AWS KMS over HTTPS), /tmp (1777), /home/nonroot (65532)
# OUT_DIR is replaced. The user, entrypoint and ports are image config, set by the caller
# (scripts/image.sh), and compared with the Dockerfile by scripts/image-check.py.
set -euo pipefail
bin=${1:?usage: image-rootfs.sh BIN_DIR OUT_DIR}
out=${2:?usage: image-rootfs.sh BIN_DIR OUT_DIR}
binaries=(hyperion-vault-api hyperion-vault-controller)

rm -rf "$out"
mkdir -p "$out"/{usr/local/bin,etc/ssl/certs,tmp,home/nonroot}
for b in "${binaries[@]}"; do
  [[ -x $bin/$b ]] || { echo "image-rootfs: $bin/$b missing (build it first)" >&2; exit 1; }
  strip -o "$out/usr/local/bin/$b" "$bin/$b"
done

# Every shared object the binaries load, copied to the same path (the dynamic loader included).
libs=$(for b in "${binaries[@]}"; do ldd "$out/usr/local/bin/$b"; done \
  | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for l in $libs; do
  real=$(readlink -f "$l")
  mkdir -p "$out$(dirname "$l")"
  cp "$real" "$out$l"
done

cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
cat >"$out/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$out/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
echo 'hosts: files dns' >"$out/etc/nsswitch.conf"
chmod 1777 "$out/tmp"
chown 65532:65532 "$out/home/nonroot" 2>/dev/null || true
echo "$out"
