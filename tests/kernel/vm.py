"""A small QEMU VM running Debian's own kernel, for tests that need a real Linux HID stack.

- ``ensure_kernel()`` fetches ``linux-image-amd64``'s kernel package with ``apt-get download``
  and unpacks it with ``dpkg-deb -x`` (no bootloader, nothing installed), keeping only
  ``vmlinuz`` and the modules we load, under ``.cache/kernel/<version>/``.
- ``build_initramfs()`` packs busybox-static, those modules (with their dependencies, read
  from each module's own ``.modinfo`` ``depends=``, which is what depmod writes into
  modules.dep; the package ships no modules.dep) and ``init``.
- ``run_vm()`` boots it. ``init`` loads the modules, mounts the host's ``/`` read-only over
  virtio-9p, tmpfs where writes are needed, and a writable 9p share for results; chroots;
  runs ``<share>/run.sh`` as root; powers off. Nothing inside has a network but loopback.

Run ``python -m tests.kernel.vm`` to prepare the kernel and initramfs (``./scripts/test``
does), ``python -m tests.kernel.vm --shell-command 'uname -a'`` to boot one command.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
CACHE: Final = Path(os.environ.get("MAGTEK_KERNEL_CACHE", REPO / ".cache" / "kernel"))
BUSYBOX: Final = Path("/bin/busybox")  # busybox-static: no libc in the initramfs
QEMU: Final = "qemu-system-x86_64"
# Loaded in the guest, in dependency order. hid-generic is loaded explicitly: without udev
# nothing would load a driver for a new uhid device.
WANTED_MODULES: Final = ("virtio_pci", "9pnet_virtio", "9p", "virtio_rng", "uhid",
                         "hid-generic")
BOOT_TIMEOUT_S: Final = 600.0
_META_PACKAGE: Final = "linux-image-amd64"


class VmError(RuntimeError):
    """The VM could not be prepared or did not run to the end (details in the message)."""


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str
    vmlinuz: Path
    modules: list[Path]  # in load order


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True,  # type: ignore[call-overload, no-any-return]
                              **kwargs)
    except FileNotFoundError as exc:
        raise VmError(f"{cmd[0]} is missing: run ./scripts/test once (it installs it)") from exc
    except subprocess.CalledProcessError as exc:
        raise VmError(f"{' '.join(cmd)} failed ({exc.returncode}): {exc.stderr.strip()}") from exc


def _kernel_package() -> str:
    """The kernel package ``linux-image-amd64`` depends on (linux-image-6.1.0-56-amd64)."""
    for attempt in range(2):
        try:
            out = _run(["apt-cache", "depends", _META_PACKAGE]).stdout
        except VmError:
            out = ""
        match = re.search(r"Depends:\s*(linux-image-\S+)", out)
        if match:
            return match.group(1)
        if attempt == 0:
            _run(["apt-get", "update", "-qq"])
    raise VmError(f"apt-cache knows no {_META_PACKAGE}")


def _modinfo_depends(module: Path) -> list[str]:
    """``depends=`` from an ELF module's ``.modinfo`` section (stdlib ELF64 reading)."""
    data = module.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise VmError(f"{module} is not an ELF64 module")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        end = data.index(b"\x00", names_at + name)
        if data[names_at + name:end] == b".modinfo":
            for entry in data[offset:offset + size].split(b"\x00"):
                if entry.startswith(b"depends="):
                    return [d for d in entry[8:].decode().split(",") if d]
            return []
    return []


def _load_order(modules_root: Path) -> list[Path]:
    index = {p.name.removesuffix(".ko").replace("-", "_"): p
             for p in modules_root.rglob("*.ko")}
    ordered: list[Path] = []

    def visit(name: str) -> None:
        path = index.get(name.replace("-", "_"))
        if path is None:
            raise VmError(f"module {name} is not in the kernel package (built in?)")
        if path in ordered:
            return
        for dependency in _modinfo_depends(path):
            visit(dependency)
        ordered.append(path)

    for wanted in WANTED_MODULES:
        visit(wanted)
    return ordered


def ensure_kernel(cache: Path = CACHE) -> Kernel:
    """The cached kernel, fetched and unpacked the first time."""
    package = _kernel_package()
    target = cache / package
    done = target / "ready"
    if done.exists():
        names = done.read_text().split()
        return Kernel(version=names[0], vmlinuz=target / "vmlinuz",
                      modules=[target / "modules" / n for n in names[1:]])
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        work = Path(scratch)
        os.chmod(work, 0o755)  # apt's _apt user writes the download here when it can
        try:
            _run(["apt-get", "download", "-q", package], cwd=work)
        except VmError:
            _run(["apt-get", "update", "-qq"])  # stale package lists name a removed version
            package = _kernel_package()
            target = cache / package
            _run(["apt-get", "download", "-q", package], cwd=work)
        debs = list(work.glob("*.deb"))
        if len(debs) != 1:
            raise VmError(f"apt-get download {package} gave {debs}")
        tree = work / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        version = next((tree / "lib" / "modules").iterdir()).name
        vmlinuz = next((tree / "boot").glob("vmlinuz-*"))
        order = _load_order(tree / "lib" / "modules" / version)
        shutil.rmtree(target, ignore_errors=True)
        (target / "modules").mkdir(parents=True)
        shutil.copy2(vmlinuz, target / "vmlinuz")
        for module in order:
            shutil.copy2(module, target / "modules" / module.name)
        done.write_text(" ".join([version, *(m.name for m in order)]) + "\n")
    return ensure_kernel(cache)


_INIT: Final = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot /share /keep /rw
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "init: insmod $m failed"; done
O=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o $O,ro,cache=loose hostroot /newroot || echo "init: 9p root failed"
mount -t 9p -o $O share /share || echo "init: 9p share failed"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
# The test's own files may live under /tmp or /run (a checkout in /tmp, as CI may make):
# keep those entries visible (read-only) under the writable tmpfs.
for e in $(cat /share/hidden-entries 2>/dev/null); do
  k=/keep/h$(echo $e | tr / _); mkdir -p $k; mount --bind /newroot$e $k
done
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
for e in $(cat /share/hidden-entries 2>/dev/null); do
  k=/keep/h$(echo $e | tr / _); mkdir -p /newroot$e; mount --bind $k /newroot$e
done
mkdir -p /newroot/tmp/share
mount --bind /share /newroot/tmp/share
# Host directories a non-root guest user must pass through (e.g. a 0700 /root holding the
# Python the venv uses): a 0755 tmpfs on top, every entry bound back from the original.
for d in $(cat /share/open-dirs 2>/dev/null); do
  k=/keep/$(echo $d | tr / _); mkdir -p $k; mount --bind /newroot$d $k
  mount -t tmpfs -o mode=0755 open /newroot$d
  for e in $k/* $k/.[!.]*; do
    [ -e "$e" ] || continue; n=${e##*/}
    if [ -d "$e" ]; then mkdir /newroot$d/$n; else touch /newroot$d/$n; fi
    mount --bind "$e" /newroot$d/$n
  done
done
# Writable account files, so a test can add the service's user and group.
for f in passwd group; do cp /newroot/etc/$f /rw/$f; mount --bind /rw/$f /newroot/etc/$f; done
ip link set lo up
hostname magtek-vm
echo "init: running /tmp/share/run.sh"
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/chroot /newroot /bin/sh /tmp/share/run.sh > /share/guest.log 2>&1
echo $? > /share/exit-code
sync
echo "init: done"
poweroff -f
"""


def build_initramfs(kernel: Kernel, out: Path) -> Path:
    """An uncompressed-cpio-in-gzip initramfs: busybox, the modules and ``init``."""
    if not BUSYBOX.exists():
        raise VmError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "bin").mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        (root / "modules").mkdir()
        for module in kernel.modules:
            shutil.copy2(module, root / "modules" / module.name)
        (root / "modules" / "order").write_text("\n".join(m.name for m in kernel.modules))
        init = root / "init"
        init.write_text(_INIT)
        init.chmod(0o755)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        try:
            archive = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root,
                                     input=("\n".join(files) + "\n").encode(),
                                     capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise VmError(f"cpio failed (apt-get install cpio): {exc}") from exc
        out.write_bytes(gzip.compress(archive, compresslevel=1))
    return out


def _locked_ancestors(paths: list[Path]) -> list[str]:
    """Directories on these paths that other users may not pass through (outermost first)."""
    found: list[str] = []
    for path in paths:
        for parent in reversed(path.parents):
            text = str(parent)
            if text == "/" or text in found:
                continue
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                found.append(text)
    return found


def _under_tmpfs(paths: list[Path]) -> list[str]:
    """Top-level entries of /tmp and /run that these paths need: the guest mounts a tmpfs
    on both, which would hide them."""
    found: list[str] = []
    for path in paths:
        for candidate in (path, path.resolve()):
            parts = candidate.parts
            if len(parts) >= 3 and parts[1] in ("tmp", "run"):
                entry = f"/{parts[1]}/{parts[2]}"
                if entry not in found and entry != "/tmp/share":
                    found.append(entry)
    return found


def accel() -> list[str]:
    """KVM only with real hardware virtualisation; this machine's /dev/kvm is a paravirtual
    flavour that cannot run a stock kernel (it hangs in the decompressor), so TCG there."""
    flags = Path("/proc/cpuinfo").read_text()
    if re.search(r"\b(vmx|svm)\b", flags) and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "max"]


@dataclass(frozen=True, slots=True)
class VmRun:
    exit_code: int | None  # of run.sh; None when it never finished
    console: str
    guest_log: str
    share: Path
    seconds: float


def run_vm(script: str, share: Path, *, timeout: float = BOOT_TIMEOUT_S,
           readable: list[Path] | None = None, memory_mb: int = 1024, cpus: int = 2) -> VmRun:
    """Boot, run ``script`` (sh, as root, cwd /) inside, and return what it left in ``share``."""
    if shutil.which(QEMU) is None:
        raise VmError(f"{QEMU} is missing: apt-get install qemu-system-x86")
    kernel = ensure_kernel()
    initramfs = CACHE / f"initramfs-{kernel.version}.cpio.gz"
    if not initramfs.exists() or initramfs.stat().st_mtime < Path(__file__).stat().st_mtime:
        build_initramfs(kernel, initramfs)
    share.mkdir(parents=True, exist_ok=True)
    os.chmod(share, 0o777)
    (share / "run.sh").write_text(script)
    (share / "open-dirs").write_text("\n".join(_locked_ancestors(readable or [])) + "\n")
    (share / "hidden-entries").write_text("\n".join(_under_tmpfs(readable or [])) + "\n")
    console = share / "console.log"
    cmd = [
        QEMU, *accel(), "-m", str(memory_mb), "-smp", str(cpus),
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
        "-append", "console=ttyS0 quiet loglevel=4 panic=-1 random.trust_cpu=on",
        "-nographic", "-no-reboot", "-nic", "none", "-monitor", "none",
        "-serial", f"file:{console}",
        "-device", "virtio-rng-pci",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={share},mount_tag=share,security_model=none",
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        raise VmError(f"VM did not power off within {timeout:.0f} s; console:\n"
                      f"{_tail(console)}") from exc
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise VmError(f"qemu exited {proc.returncode}: {proc.stderr.strip()}\n{_tail(console)}")
    code_file = share / "exit-code"
    code = int(code_file.read_text()) if code_file.exists() else None
    guest_log = share / "guest.log"
    return VmRun(exit_code=code, console=_tail(console),
                 guest_log=guest_log.read_text(errors="replace") if guest_log.exists() else "",
                 share=share, seconds=seconds)


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no console log)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shell-command", help="boot and run this sh command as root")
    args = parser.parse_args()
    kernel = ensure_kernel()
    print(f"kernel {kernel.version}: {kernel.vmlinuz}")
    if args.shell_command:
        with tempfile.TemporaryDirectory() as share:
            result = run_vm(args.shell_command + "\n", Path(share))
            print(result.guest_log, end="")
            print(f"exit {result.exit_code} after {result.seconds:.1f} s")
            return 0 if result.exit_code == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
