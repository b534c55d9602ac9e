"""C-level proof of the shared-memory ring (native/ring.c), no Python inside the programs.

Builds the pure-C programs in native/tests/ with gcc in three flavours and runs them with
bounded sizes:

* ``ring_unit``   single-process unit tests (wrap/padding, exactly full, max record, ETOOBIG,
  attach error codes, re-init with a new generation, stats, read vs read_flat
  vs read_gather, doorbell flag protocol, positions crossing 2^64, the documented header
  layout);
* ``ring_stress`` two processes (fork) or two threads, a ring each way, millions of
  checksummed records with every write/read API mixed, real eventfd doorbells, and a watchdog
  that turns a lost wake-up (a hang) into a failure; ``--wakeups`` ping-pongs with random
  delays so the consumers really sleep; ``--litmus`` the store-buffer litmus test of the
  doorbell handshake (catches a missing seq_cst fence deterministically enough to rely on);
* ``ring_fuzz``   the reader (ring_read, ring_read_flat, ring_read_gather), attach and writer
  paths against garbage in the shared region (ASan/UBSan standalone generator, plus libFuzzer
  when clang is installed);
* ``frame_unit``  the event framing checks of native/frame.c, under ASan/UBSan;
* ``h1_unit``     the request-head fast path of native/h1.c (plain and ASan/UBSan); its
  agreement with the Python parser is tests/http/test_h1_speedups.py's job.

Flavours: plain ``-O2``; ``-fsanitize=address,undefined -fno-sanitize-recover=all``;
``-fsanitize=thread`` (threads mode only: TSan does not follow fork).  gcc 12 warns (-Wtsan)
that TSan does not instrument ``atomic_thread_fence``; that warning is disabled for the TSan
build, so TSan checks the data accesses and acquire/release pairs while the fence-based
doorbell protocol is proven by the wake-up stress runs (a lost wake-up hangs -> watchdog).

Binaries are cached in build/native-tests/ under a hash of compiler, flags and sources.
Regression tests for ring.c bugs this suite found (FIXED_* below) run the repro of each bug.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"
CSRC = NATIVE / "tests"
BUILD = ROOT / "build" / "native-tests"

BASE_FLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-g", f"-I{NATIVE}"]
FLAVOURS = {
    "plain": [],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
    "tsan": ["-fsanitize=thread", "-Wno-tsan", "-DRING_STRESS_THREADS"],
}
SAN_ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=86",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "TSAN_OPTIONS": "halt_on_error=1:exitcode=66:second_deadlock_stack=1",
}

FIXED_UNALIGNED = (
    "fixed ring.c bug: ring_attach accepts a tail/head that is not a multiple of 8; a producer "
    "attached to such a region writes the 8-byte PADDING header past the end of the data area "
    "(reserve(): to_end < 8 -> put_header(r->data + index, to_end - 8, ...) overflows)"
)
FIXED_HEAD_CACHE = (
    "fixed ring.c bug: ring_free_space()/ring_producer_prepare_wait() copy the shared head into "
    "head_cache without the range check reserve() applies; a head ahead of the tail gives "
    "free space > capacity and the next write trusts it"
)
FIXED_TAIL_VS_HEAD = (
    "fixed ring.c bug: next_record() checks a newly loaded tail against the read position instead of "
    "the released head; a consumer holding views can be handed more than a ring's worth of "
    "records (overlapping views) instead of RING_ECORRUPT"
)
FIXED_ALIGNMENT = (
    "fixed ring.c bug: struct ring_shared has _Alignas(128) members but ring_init/ring_attach accept "
    "8-byte aligned regions: UB (UBSan: misaligned address for type 'struct ring_shared')"
)

_compiler_ids: dict[str, str] = {}


# ------------------------------------------------------------------------------------------
# build helpers


@pytest.fixture(scope="session")
def gcc() -> str:
    path = shutil.which("gcc")
    if not path:
        pytest.fail("gcc is required to build the C ring tests (not found on PATH)")
    if not (NATIVE / "ring.c").exists():
        pytest.fail("native/ring.c does not exist")
    return path


@pytest.fixture(scope="session")
def clang() -> str:
    path = shutil.which("clang")
    if not path:
        pytest.skip("clang not installed: libFuzzer variant skipped (gcc ASan fuzz still runs)")
    return path


def _compiler_id(cc: str) -> str:
    if cc not in _compiler_ids:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
        _compiler_ids[cc] = out.stdout.splitlines()[0] if out.stdout else cc
    return _compiler_ids[cc]


def build(cc: str, prog: str, flavour: str, extra: list[str] | None = None) -> Path:
    """Compile native/tests/<prog>.c + native/ring.c (+ native/frame.c for frame_* and h1_*,
    native/h1.c and native/events.c for h1_*); cached by a hash of everything."""
    sources = [CSRC / f"{prog}.c", NATIVE / "ring.c"]
    if prog.startswith("frame") or prog.startswith("h1"):
        sources.append(NATIVE / "frame.c")
    if prog.startswith("h1"):
        sources += [NATIVE / "h1.c", NATIVE / "events.c"]
    flags = BASE_FLAGS + FLAVOURS.get(flavour, []) + (extra or []) + ["-pthread"]
    h = hashlib.sha256()
    h.update(_compiler_id(cc).encode())
    h.update("\0".join(flags).encode())
    for f in sources + [NATIVE / "ring.h", NATIVE / "frame.h", NATIVE / "h1.h",
                        NATIVE / "events.h", CSRC / "unit.h"]:
        h.update(f.read_bytes())
    stem = f"{prog}-{flavour}"
    out = BUILD / f"{stem}-{h.hexdigest()[:16]}"
    if out.exists():
        return out
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    cmd = [cc, *flags, *map(str, sources), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        pytest.fail(f"compile failed ({' '.join(cmd)}):\n{proc.stderr}")
    os.replace(tmp, out)
    for old in BUILD.glob(f"{stem}-*"):  # drop stale builds of the same program/flavour
        if old != out and ".tmp" not in old.name and len(old.name) == len(out.name):
            old.unlink(missing_ok=True)
    return out


def run(binary: Path, *args: str, timeout: float = 150, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **SAN_ENV, **(env or {})}
    try:
        return subprocess.run([str(binary), *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as e:  # the programs have their own watchdogs; belt and braces
        pytest.fail(f"{binary.name} {' '.join(args)} timed out after {timeout}s\n"
                    f"stdout: {e.stdout}\nstderr: {e.stderr}")


def summary(proc: subprocess.CompletedProcess, prefix: str) -> dict[str, str]:
    """Assert success and parse the key=value pairs of the summary line."""
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, detail
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(prefix)]
    assert lines, f"no summary line starting with {prefix!r}\n{detail}"
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


def num(fields: dict[str, str], key: str) -> float:
    return float(re.match(r"[0-9.]+", fields[key]).group(0))


# ------------------------------------------------------------------------------------------
# unit tests


@pytest.mark.parametrize("flavour", ["plain", "asan"])
def test_unit(gcc, flavour):
    exe = build(gcc, "ring_unit", flavour)
    proc = run(exe, timeout=120)
    detail = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail
    m = re.search(r"ring_unit: (\d+) passed, 0 failed", proc.stdout)
    assert m, detail
    assert int(m.group(1)) >= 29, detail  # incl. the regression_* tests


def test_frame_unit_asan(gcc):
    """native/frame.c (event framing checks): encodings table, then random and mutated bytes
    in exactly-sized buffers under ASan/UBSan."""
    exe = build(gcc, "frame_unit", "asan")
    f = summary(run(exe, "--iterations", "200000", timeout=120), "frame_unit OK")
    assert int(f["cases"]) >= 30 and int(f["values"]) > 20000


@pytest.mark.parametrize("flavour", ["plain", "asan"])
def test_h1_unit(gcc, flavour):
    """native/h1.c (the request-head fast path): a table of heads and their facts, every
    prefix, the limits at their boundaries, then random and mutated heads in exactly-sized
    buffers, every accepted head's spans and fields checked against its bytes."""
    exe = build(gcc, "h1_unit", flavour)
    f = summary(run(exe, "--iterations", "300000", timeout=120), "h1_unit OK")
    assert int(f["cases"]) >= 50 and int(f["accepted"]) > 10000


@pytest.mark.parametrize("name", [
    "attach_rejects_unaligned_positions",      # FIXED_UNALIGNED
    "producer_rejects_impossible_head",        # FIXED_HEAD_CACHE
    "reader_checks_tail_against_released_head",  # FIXED_TAIL_VS_HEAD
    "header_alignment",  # FIXED_ALIGNMENT; only the UBSan build can tell: hence asan
])
def test_unit_regression(gcc, name):
    exe = build(gcc, "ring_unit", "asan")
    proc = run(exe, "--regressions", "-k", name, timeout=60,
               env={"ASAN_OPTIONS": "halt_on_error=1:detect_leaks=0:exitcode=86"})
    assert "1 passed, 0 failed" in proc.stdout, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------
# stress: two sides, both directions, eventfd doorbells, watchdog


def _check_stream(f: dict[str, str], records: int) -> None:
    assert int(f["records"]) == 2 * records
    # the interesting layout cases really happened
    for key in ("paddings", "exact_fits", "many_partial", "full"):
        assert int(f[key]) > 0, f"{key} never happened: {f}"


def test_stress_fork(gcc):
    exe = build(gcc, "ring_stress", "plain")
    n = 3_000_000
    f = summary(run(exe, str(n), "--fork", "--timeout", "120"), "ring_stress OK")
    _check_stream(f, n)
    assert f["mode"] == "fork"
    print(f"stress fork: {num(f, 'rate'):.2f} Mrec/s, {num(f, 'throughput'):.2f} GB/s, "
          f"{f['wakeups']} wake-ups, {f['elapsed']}")


def test_stress_threads(gcc):
    exe = build(gcc, "ring_stress", "plain")
    n = 1_000_000
    f = summary(run(exe, str(n), "--threads", "--timeout", "120"), "ring_stress OK")
    _check_stream(f, n)
    assert f["mode"] == "threads"


@pytest.mark.parametrize("mode,pings", [("--fork", 100_000), ("--threads", 30_000)])
def test_stress_wakeups(gcc, mode, pings):
    exe = build(gcc, "ring_stress", "plain")
    f = summary(run(exe, "--wakeups", str(pings), mode, "--timeout", "120"), "ring_stress OK")
    assert int(f["pings"]) == pings
    # the consumers really went to sleep and were woken, over and over; producers waited too
    assert int(f["consumer_sleeps"]) >= pings // 4, f
    assert int(f["consumer_wakeups"]) >= pings // 4, f
    assert int(f["producer_waits"]) > 0 and int(f["producer_wakeups"]) > 0, f
    print(f"wakeups {mode}: sleeps={f['consumer_sleeps']} wakeups={f['wakeups']} rtt={f['rtt']}")


def test_stress_asan(gcc):
    exe = build(gcc, "ring_stress", "asan")
    n = 400_000
    f = summary(run(exe, str(n), "--fork", "--stall", "30", "--timeout", "120"), "ring_stress OK")
    _check_stream(f, n)
    f = summary(run(exe, "--wakeups", "20000", "--fork", "--stall", "30", "--timeout", "120"),
                "ring_stress OK")
    assert int(f["consumer_wakeups"]) > 0


def test_stress_tsan(gcc):
    exe = build(gcc, "ring_stress", "tsan")
    n = 100_000
    f = summary(run(exe, str(n), "--threads", "--stall", "30", "--timeout", "120"),
                "ring_stress OK")
    _check_stream(f, n)
    f = summary(run(exe, "--wakeups", "10000", "--threads", "--stall", "30", "--timeout", "120"),
                "ring_stress OK")
    assert int(f["consumer_wakeups"]) > 0 and int(f["producer_wakeups"]) > 0


@pytest.mark.parametrize("mode", ["--fork", "--threads"])
def test_doorbell_litmus(gcc, mode):
    """Store-buffer litmus of the sleep/wake handshake: decisions compared round by round.

    Removing any one of the three seq_cst fences in ring.c makes this fail within the run
    (hundreds to thousands of lost wake-ups per 300k rounds on x86)."""
    exe = build(gcc, "ring_stress", "plain")
    f = summary(run(exe, "--litmus", "300000", mode, "--stall", "30", "--timeout", "120"),
                "ring_stress OK")
    assert int(f["rounds"]) == 300_000
    assert f["lost_data"] == "0" and f["lost_space"] == "0", f
    # the two sides really met inside the window (both flags seen) in both directions
    assert int(f["close_data"]) > 1000 and int(f["close_space"]) > 1000, f


@pytest.mark.parametrize("mode", ["--fork", "--threads"])
def test_watchdog_catches_a_lost_wakeup(gcc, mode):
    """The harness itself: never ringing the doorbells must be reported as a hang."""
    exe = build(gcc, "ring_stress", "plain")
    proc = run(exe, "--wakeups", "1000", mode, "--drop-doorbells", "--stall", "2", timeout=60)
    assert proc.returncode in (1, 3), proc.stdout + proc.stderr
    assert "WATCHDOG" in proc.stderr and "lost wake-up" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------
# fuzz


def test_fuzz_asan(gcc):
    exe = build(gcc, "ring_fuzz", "asan")
    f = summary(run(exe, "--iterations", "1000000", "--seconds", "20", "--seed", "1",
                    timeout=120), "ring_fuzz OK")
    # every path was reached: records read, corruption detected, every attach error code
    for key in ("records", "corrupt", "drains_empty", "attach_ok", "emagic", "eversion",
                "egeneration", "ecapacity", "ecorrupt_attach", "einval", "writes_ok",
                "writes_again", "writes_corrupt"):
        assert int(f[key]) > 0, f"fuzzer never reached {key}: {f}"


def test_fuzz_regression_unaligned_overflow(gcc):
    exe = build(gcc, "ring_fuzz", "asan")
    proc = run(exe, "--repro-unaligned", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fuzz_corpus_replays(gcc):
    """Inputs the fuzzers once failed on (native/tests/ring_fuzz_corpus/) replay cleanly."""
    exe = build(gcc, "ring_fuzz", "asan")
    files = sorted((CSRC / "ring_fuzz_corpus").glob("*.bin"))
    assert files, "no corpus files"
    proc = run(exe, *map(str, files), timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ring_fuzz OK: {len(files)} file(s)" in proc.stdout, proc.stdout


def test_fuzz_libfuzzer(clang, tmp_path):
    exe = build(clang, "ring_fuzz", "libfuzzer",
                ["-O1", "-DRING_FUZZ_LIBFUZZER",
                 "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all"])
    proc = run(exe, "-max_total_time=6", "-seed=1", "-timeout=10", "-rss_limit_mb=2048",
               f"-artifact_prefix={tmp_path}/", timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert re.search(r"Done \d+ runs", proc.stderr), proc.stderr[-3000:]
