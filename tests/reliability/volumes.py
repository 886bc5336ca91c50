"""Real storage faults for the audit store: a small file system we can fill or break.

Preferred: an ext4 image on a loop device, mounted `errors=remount-ro`. `fill()` writes a filler
file until the kernel answers ENOSPC (a disk-full disk); `break_read_only()` raises a real ext4
error through /sys/fs/ext4/DEV/trigger_fs_error, after which the kernel turns the file system
read-only under every open file (what a failing disk does; `mount -o remount,ro` cannot, it
refuses while the signer holds files open for writing). `repair()` is the operator's fix:
unmount, e2fsck, mount again. Fallback where loop devices or mkfs.ext4 are missing: a tiny
tmpfs, which can only be filled. Both need root (CAP_SYS_ADMIN); `available()` says why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class VolumeUnavailable(OSError):
    """This machine will not mount a test volume (not root, no CAP_SYS_ADMIN, no tmpfs)."""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


@dataclass
class Volume:
    mountpoint: Path
    kind: str  # "ext4" or "tmpfs"
    image: Path | None = None
    device: str | None = None

    @classmethod
    def create(cls, root: Path, size_mb: int = 24) -> Volume:
        """An ext4 loop volume if this machine allows it, else a tmpfs; VolumeUnavailable if
        neither can be mounted."""
        mnt = root / "volume"
        mnt.mkdir(mode=0o700)
        image = root / "volume.img"
        if shutil.which("mkfs.ext4") and shutil.which("e2fsck"):
            with open(image, "wb") as fh:
                fh.truncate(size_mb << 20)
            made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
            if made.returncode == 0:
                vol = cls(mnt, "ext4", image)
                if vol._mount_ext4():
                    return vol
            image.unlink(missing_ok=True)
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mnt))
        if done.returncode != 0:
            raise VolumeUnavailable(f"no test volume can be mounted here: {done.stderr.strip()}")
        return cls(mnt, "tmpfs")

    def _mount_ext4(self) -> bool:
        assert self.image is not None
        done = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mountpoint))
        if done.returncode != 0:
            return False
        self.mountpoint.chmod(0o700)
        source = _run("findmnt", "-n", "-o", "SOURCE", str(self.mountpoint)).stdout.strip()
        self.device = os.path.basename(source)
        return True

    @property
    def can_break_read_only(self) -> bool:
        return self.kind == "ext4" and Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").exists()

    @property
    def filler(self) -> Path:
        return self.mountpoint / "filler"

    def fill(self) -> int:
        """Write until ENOSPC; returns the bytes written. Unbuffered, so nothing is left over."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written = 0
        try:
            for size in (1 << 20, 65536, 4096, 512, 1):
                chunk = b"\0" * size
                try:
                    while True:
                        written += os.write(fd, chunk)
                except OSError as e:
                    if e.errno != 28:  # ENOSPC
                        raise
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self) -> bool:
        """True when creating a file fails with EROFS (findmnt may still say rw,emergency_ro)."""
        probe = self.mountpoint / "probe"
        try:
            probe.write_bytes(b"x")
        except OSError as e:
            return e.errno == 30  # EROFS
        probe.unlink()
        return False

    def remount(self, *, read_only: bool) -> None:
        """Remount ro/rw: the kernel allows ro only while no file on it is open for writing."""
        mode = "ro" if read_only else "rw"
        done = _run("mount", "-o", f"remount,{mode}", str(self.mountpoint))
        if done.returncode != 0:
            raise OSError(f"remount,{mode} {self.mountpoint}: {done.stderr.strip()}")

    def break_read_only(self) -> None:
        """A real ext4 error: the kernel aborts the journal and remounts read-only."""
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("reliability test\n")

    def repair(self) -> None:
        """Unmount (every user must have closed its files), e2fsck, mount again."""
        assert self.image is not None
        done = _run("umount", str(self.mountpoint))
        if done.returncode != 0:
            raise OSError(f"umount {self.mountpoint}: {done.stderr.strip()}")
        fsck = _run("e2fsck", "-fy", str(self.image))
        if fsck.returncode not in (0, 1):  # 1: errors corrected
            raise OSError(f"e2fsck exited {fsck.returncode}: {fsck.stdout[-500:]}")
        if not self._mount_ext4():
            raise OSError(f"could not mount {self.image} again")

    def close(self) -> None:
        if _run("umount", str(self.mountpoint)).returncode != 0:
            _run("umount", "-l", str(self.mountpoint))
        if self.image is not None:
            self.image.unlink(missing_ok=True)
