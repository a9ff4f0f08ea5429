#!/bin/sh
# Runs this crate's tests (or its benchmark) in a small KVM guest whose kernel has AF_ALG,
# for hosts whose kernel lacks it (CONFIG_CRYPTO_USER_API_* not set: socket(AF_ALG)
# fails with EAFNOSUPPORT, and the host tests then pass vacuously).
#
#   ports/af-alg/vm/run.sh            # cargo test binaries, IPSEC_AF_ALG_REQUIRE=1
#   ports/af-alg/vm/run.sh --bench    # the af_alg_vs_soft benchmark (built by cargo bench)
#
# Needs: qemu-system-x86_64 (KVM optional, see ACCEL below); busybox (static); a Debian kernel package
# unpacked into $KDIR (default /tmp/afvm/kimg):
#   apt-get download linux-image-6.1.0-57-amd64 && dpkg -x linux-image-*.deb $KDIR
# The guest is an initramfs: busybox, the needed crypto modules, the test binaries with
# their shared libraries, and the JSON test data at the paths the binaries expect.
set -eu

MODE=test
[ "${1:-}" = "--bench" ] && MODE=bench
KDIR=${KDIR:-/tmp/afvm/kimg}
WS=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d /tmp/af-alg-vm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

KVER=$(ls "$KDIR/lib/modules" | head -n1)
KERNEL="$KDIR/boot/vmlinuz-$KVER"
MODS="$KDIR/lib/modules/$KVER/kernel"
[ -f "$KERNEL" ] || { echo "no kernel in $KDIR (see the header of $0)" >&2; exit 2; }

cd "$WS"
if [ "$MODE" = test ]; then
    BINS=$(cargo test -p ipsec-af-alg --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
else
    BINS=$(cargo bench -p ipsec-af-alg --bench af_alg_vs_soft --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
fi
[ -n "$BINS" ] || { echo "cargo built no executables" >&2; exit 2; }

R="$WORK/root"
mkdir -p "$R/bin" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$R/mods" "$R/tests" \
    "$R$WS/ports/af-alg" "$R$WS/ipsec-core/tests/data" "$R$WS/ports/soft-crypto/tests/data"
cp "$(command -v busybox)" "$R/bin/busybox"
for a in sh mount insmod poweroff cat echo; do ln -s busybox "$R/bin/$a"; done
cp "$WS"/ipsec-core/tests/data/*.json "$R$WS/ipsec-core/tests/data/"
cp "$WS"/ports/soft-crypto/tests/data/*.json "$R$WS/ports/soft-crypto/tests/data/"

# Crypto modules in dependency order; the templates are loaded up front because the guest
# has no modprobe for the kernel to call.
ORDER="crypto/af_alg crypto/algif_skcipher crypto/algif_hash crypto/algif_aead
 crypto/cryptd crypto/crypto_simd arch/x86/crypto/aesni-intel lib/crypto/libdes
 crypto/des_generic arch/x86/crypto/des3_ede-x86_64 crypto/gf128mul crypto/ghash-generic
 arch/x86/crypto/ghash-clmulni-intel crypto/ctr crypto/gcm arch/x86/crypto/sha1-ssse3
 arch/x86/crypto/sha256-ssse3"
: > "$R/mods/order"
for m in $ORDER; do
    f="$MODS/$m.ko"
    [ -f "$f" ] || continue
    b=$(basename "$m").ko
    cp "$f" "$R/mods/$b"
    echo "$b" >> "$R/mods/order"
done

for b in $BINS; do
    cp "$b" "$R/tests/"
    for lib in $(ldd "$b" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do
        mkdir -p "$R$(dirname "$lib")"
        cp -L "$lib" "$R$lib"
    done
done

cat > "$R/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
export IPSEC_AF_ALG_REQUIRE=1 RUST_BACKTRACE=1
for t in /tests/*; do
    echo "=== RUN $t"
    if [ "$(cat /mode)" = bench ]; then "$t" --bench; else "$t" --test-threads=1 --nocapture; fi
    echo "=== RC $? $t"
done
poweroff -f
INIT
chmod +x "$R/init"
echo "$MODE" > "$R/mode"

(cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$WORK/initrd.gz"
# TCG by default: nested KVM guests hang at boot on some hosts (Firecracker). With a
# working /dev/kvm, ACCEL="-enable-kvm -cpu host" gives representative benchmark numbers.
ACCEL=${ACCEL:-"-accel tcg -cpu max"}
# shellcheck disable=SC2086
timeout 1800 qemu-system-x86_64 $ACCEL -smp 1 -m 1024 -nographic -no-reboot \
    -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 edd=off" | tee "$WORK/log" | tr -d '\r'

echo "---- guest kernel: $KVER"
if grep -q "=== RC [^0]" "$WORK/log" || ! grep -q "=== RC 0" "$WORK/log"; then
    echo "---- FAILED in the guest" >&2
    exit 1
fi
echo "---- all guest runs exited 0"
