#!/usr/bin/env bash
# Builds the firmware (release), runs it under QEMU, and prints a Markdown report:
# flash and static RAM from the ELF's section sizes, the state struct sizes and the
# stack high-water marks the firmware itself prints over semihosting, and the time each
# phase took under emulation. Then the same for the MODP-1024 build (bignum cost), and
# the largest single stack frames found in the disassembly.
#
# Usage: examples/firmware/report.sh            (from anywhere)
# Needs: the thumbv7em-none-eabihf target, qemu-system-arm, and a size tool: llvm-size
# from `rustup component add llvm-tools` (preferred), rust-size (cargo-binutils),
# llvm-size on PATH, or arm-none-eabi-size. python3 is optional (frame list).
set -euo pipefail

cd "$(dirname "$0")"
ELF=target/thumbv7em-none-eabihf/release/ipsec-firmware
LOG_DIR=target/report
mkdir -p "$LOG_DIR"

find_tool() { # $1 = llvm tool name, $2 = GNU fallback
    local t
    for t in "$(rustc --print sysroot)"/lib/rustlib/*/bin/"$1"; do
        [ -x "$t" ] && { echo "$t"; return; }
    done
    for t in "rust-${1#llvm-}" "$1" "$2"; do
        command -v "$t" >/dev/null 2>&1 && { command -v "$t"; return; }
    done
    return 1
}
SIZE=$(find_tool llvm-size arm-none-eabi-size) || {
    echo "no size tool: rustup component add llvm-tools (or install binutils-arm-none-eabi)" >&2
    exit 1
}
OBJDUMP=$(find_tool llvm-objdump arm-none-eabi-objdump || true)

# Builds one variant, keeps its ELF as $LOG_DIR/$1.elf, runs it under QEMU (the runner
# of .cargo/config.toml, called directly so that no rebuild is timed), and leaves its
# output in $LOG_DIR/$1.log and the wall time in $LOG_DIR/$1.ms.
run_variant() {
    local name=$1; shift
    cargo build --release --quiet "$@" >&2
    cp "$ELF" "$LOG_DIR/$name.elf"
    local t0 t1
    t0=$(date +%s%N)
    if ! timeout 120 qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
        -semihosting-config enable=on,target=native -kernel "$LOG_DIR/$name.elf" \
        >"$LOG_DIR/$name.log" 2>&1; then
        cat "$LOG_DIR/$name.log" >&2
        echo "firmware run ($name) FAILED" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000)) >"$LOG_DIR/$name.ms"
}

run_variant default
run_variant modp1024 --features modp1024
ELF=$LOG_DIR/default.elf

LOG=$LOG_DIR/default.log
grep -q '^RESULT: ok' "$LOG" || { cat "$LOG" >&2; exit 1; }

# Section sizes (llvm-size -A and GNU size -A print the same "name size addr" rows).
sec() { "$SIZE" -A "$ELF" | awk -v s="$1" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }'; }
VT=$(sec .vector_table); TEXT=$(sec .text); RODATA=$(sec .rodata)
DATA=$(sec .data); BSS=$(sec .bss); UNINIT=$(sec .uninit)

# "size: <name>: <bytes>" (including the DPD state rows) and "stack: <phase>: <bytes>"
# lines printed by the firmware.
val() { sed -n "s/^$1: $2: \([0-9]*\).*/\1/p" "$3" | head -n1; }
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }

echo "## ipsec firmware on Cortex-M4 (thumbv7em-none-eabihf, opt-level s, LTO)"
echo
echo "Measured by \`examples/firmware/report.sh\` on $(date -u +%Y-%m-%d);"
echo "$(rustc --version), $(qemu-system-arm --version | head -n1)."
echo
echo "| item | bytes | |"
echo "|---|---:|---|"
echo "| **flash**: .text + .rodata | $((TEXT + RODATA)) | $(kib $((TEXT + RODATA))) (.text $TEXT, .rodata $RODATA; + .vector_table $VT, .data image $DATA) |"
echo "| **static RAM**: .data + .bss | $((DATA + BSS)) | $(kib $((DATA + BSS))) (.data $DATA, .bss $BSS, .uninit $UNINIT): both gateways, network, buffers |"
sed -n 's/^size: \(.*\): \([0-9][0-9]*\)$/\1|\2/p' "$LOG" | while IFS='|' read -r name bytes; do
    echo "| \`$name\` | $bytes | $(kib "$bytes") |"
done
for phase in "setup" "IKE handshake" "ESP path" "DPD"; do
    b=$(val stack "$phase" "$LOG")
    echo "| **stack high-water**, $phase | $b | $(kib "$b") |"
done
PEAK=$(val stack peak "$LOG")
echo "| **stack high-water**, whole run | $PEAK | $(kib "$PEAK") (of $(val stack capacity "$LOG") available) |"
echo "| **RAM needed**: static RAM + stack high-water | $((DATA + BSS + UNINIT + PEAK)) | $(kib $((DATA + BSS + UNINIT + PEAK))) |"
echo
echo "Stack: painted at boot and after each phase, so each row is that phase's own peak"
echo "measured from the top of the stack (it includes \`main\`'s frames)."
echo
echo "### Time under QEMU (host wall clock, semihosting SYS_CLOCK, 10 ms resolution)"
echo
echo "| phase | MODP group 14 (default) | MODP group 2 (\`--features modp1024\`) |"
echo "|---|---:|---:|"
for phase in "setup" "IKE handshake" "ESP path" "DPD" "total"; do
    echo "| $phase | $(val time "$phase" "$LOG") ms | $(val time "$phase" "$LOG_DIR/modp1024.log") ms |"
done
echo "| IKE handshake stack high-water | $(val stack "IKE handshake" "$LOG") B | $(val stack "IKE handshake" "$LOG_DIR/modp1024.log") B |"
echo "| whole QEMU process (start-up, run, exit) | $(cat "$LOG_DIR/default.ms") ms | $(cat "$LOG_DIR/modp1024.ms") ms |"

if [ -n "$OBJDUMP" ] && command -v python3 >/dev/null 2>&1; then
    echo
    echo "### Largest stack frames (from the disassembly: push + vpush + sub sp)"
    echo
    echo "| frame bytes | function |"
    echo "|---:|---|"
    "$OBJDUMP" -d -C --no-show-raw-insn "$ELF" | python3 -c '
import re, sys
fn, frame = None, {}
for line in sys.stdin:
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        if not m.group(1).startswith("$"):   # $t / $d are mapping symbols
            fn = m.group(1); frame[fn] = 0
        continue
    if fn is None:
        continue
    m = re.search(r"\tv?push(\.w)?\s+\{([^}]*)\}", line)
    if m:
        regs = m.group(2).replace(" ", "").split(",")
        n = 0
        for r in regs:
            a, _, b = r.partition("-")
            n += int(b[1:]) - int(a[1:]) + 1 if b else 1
        frame[fn] += n * (8 if regs[0].startswith("d") else 4)
    m = re.search(r"\tsubw?(\.w)?\s+sp,\s*(sp,\s*)?#(0x[0-9a-f]+|\d+)", line)
    if m:
        frame[fn] += int(m.group(3), 0)
def short(n):
    n = re.sub(r"::h[0-9a-f]{16}$", "", n)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$RF$", "&"), ("..", "::")):
        n = n.replace(a, b)
    return n
seen = {}
for f, v in frame.items():
    s = short(f)
    seen.setdefault(s, []).append(v)
rows = sorted(((max(v), s, len(v)) for s, v in seen.items()), reverse=True)[:15]
for v, s, k in rows:
    more = " (%d instances, largest shown)" % k if k > 1 else ""
    print("| %d | `%s`%s |" % (v, s, more))
'
fi
