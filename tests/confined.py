"""Helpers of the hostile-input tests: a tiny root that commands can run in, a static
program that tries to break out of it, and a snapshot of what is outside a root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# A static program (no libraries: it runs in any root) that does what a hostile package's
# finalizer would: the classic chroot escape (chroot into a subfolder while the working
# directory stays outside it, climb up, chroot there) then write the file it is given; mount
# a tmpfs (only ever run confined: on the host it would hide a folder); or connect to a TCP
# address.
ESCAPE_GO = r'''
package main

import (
	"net"
	"os"
	"syscall"
	"time"
)

func main() {
	switch os.Args[1] {
	case "chroot":
		os.Mkdir("/.escape", 0o755)
		if err := syscall.Chroot("/.escape"); err != nil {
			os.Stderr.WriteString("chroot: " + err.Error() + "\n")
		}
		for i := 0; i < 64; i++ {
			syscall.Chdir("..")
		}
		syscall.Chroot(".")
		if err := os.WriteFile(os.Args[2], []byte("escaped\n"), 0o644); err != nil {
			os.Stderr.WriteString("write: " + err.Error() + "\n")
			os.Exit(1)
		}
	case "mount":   // never run outside a sandbox: it would mount over the host's folder
		if err := syscall.Mount("none", os.Args[2], "tmpfs", 0, ""); err != nil {
			os.Stderr.WriteString("mount: " + err.Error() + "\n")
			os.Exit(1)
		}
	case "dial":
		conn, err := net.DialTimeout("tcp", os.Args[2], 2*time.Second)
		if err != nil {
			os.Stderr.WriteString("dial: " + err.Error() + "\n")
			os.Exit(1)
		}
		conn.Write([]byte("reached\n"))
		conn.Close()
	}
}
'''


def build_escape(folder: Path) -> Path:
    """The escape program, built with Go (CGO_ENABLED=0: a static binary)."""
    source = folder / "escape.go"
    source.write_text(ESCAPE_GO)
    out = folder / "escape"
    env = {**os.environ, "CGO_ENABLED": "0", "GO111MODULE": "off",
           "GOCACHE": os.environ.get("GOCACHE", str(Path.home() / ".cache/go-build"))}
    subprocess.run(["go", "build", "-o", str(out), str(source)], check=True, env=env,
                   cwd=folder, capture_output=True)
    return out


def small_root(root: Path, programs: tuple[str, ...] = ("sh", "cat", "touch")) -> Path:
    """A root with the host's dash as /bin/sh, cat and touch, and their libraries (ldd)."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    for name in programs:
        exe = Path(shutil.which(name)).resolve()
        shutil.copy2(exe, root / "bin" / name)
        listing = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            words = [w for w in line.split() if w.startswith("/")]
            if words:
                lib = root / words[0].lstrip("/")
                lib.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(os.path.realpath(words[0]), lib)
    return root


def outside(folder: Path, root: Path) -> dict[str, tuple]:
    """What `folder` holds except `root` (inside it): path -> (type, mode, content)."""
    out = {}
    for here, dirs, files in os.walk(folder):
        if Path(here) == root or root in Path(here).parents:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = Path(here) / name
            if path == root:
                continue
            st = os.lstat(path)
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else \
                os.readlink(path) if path.is_symlink() else None
            out[str(path.relative_to(folder))] = (st.st_mode, st.st_nlink, content)
    return out
