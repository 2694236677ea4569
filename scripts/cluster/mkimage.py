#!/usr/bin/env python3
"""Builds a one-layer container image as a docker-archive tarball, without Docker.

Used by the real-cluster suite (scripts/cluster/images.sh): `ctr images import` loads the
result into containerd. Files come as `SRC DEST` lines on stdin (DEST absolute in the image;
SRC a file, a symlink or a directory copied whole); with --ldd, the shared libraries that
`ldd` names for every ELF file are added too (with the dynamic loader), as in a distroless
"cc" image. Every file is owned by root; the image runs as --user.
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile


def ldd_libs(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            if i + 1 < len(parts) and parts[i + 1].startswith("/"):
                libs.append(parts[i + 1])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True, action="append", help="repo:tag (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="65532:65532")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--entrypoint", default="null", help="JSON list")
    ap.add_argument("--cmd", default="null", help="JSON list")
    ap.add_argument("--expose", action="append", default=[])
    ap.add_argument("--ldd", action="store_true")
    a = ap.parse_args()

    entries = {}  # dest -> src
    # The image has Debian's merged-/usr layout: /bin, /sbin, /lib, /lib64 are symlinks into
    # /usr, so paths through either spelling (ldd names /lib/..., packages /usr/lib/...) meet.
    merged = ("bin", "sbin", "lib", "lib64")

    def norm(dest):
        dest = os.path.normpath(dest)
        for top in merged:
            if dest == "/" + top:
                return None
            if dest.startswith("/" + top + "/"):
                return "/usr" + dest
        return dest

    def add(src, dest):
        dest = norm(dest)
        if dest is None or dest in entries:
            return
        if os.path.islink(src):
            entries[dest] = src
            target = os.readlink(src)
            if not target.startswith("/"):
                target = os.path.join(os.path.dirname(dest), target)
            if not os.path.isdir(src):
                add(os.path.realpath(src), target)
            return
        if os.path.isdir(src):
            entries.setdefault(dest, src)
            for name in sorted(os.listdir(src)):
                add(os.path.join(src, name), os.path.join(dest, name))
            return
        entries[dest] = src

    for line in sys.stdin:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        src, dest = line.split(None, 1)
        add(src, dest)
    if a.ldd:
        for dest, src in list(entries.items()):
            if os.path.isfile(src) and not os.path.islink(src) and is_elf(src):
                for lib in ldd_libs(src):
                    add(lib, lib)

    # Parent directories first, then everything sorted: a reproducible layer.
    dirs = set()
    for dest in entries:
        d = os.path.dirname(dest)
        while d not in ("/", ""):
            dirs.add(d)
            d = os.path.dirname(d)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top in merged:
            ti = tarfile.TarInfo(top)
            ti.type = tarfile.SYMTYPE
            ti.linkname = "usr/" + top
            tar.addfile(ti)
        for d in sorted(dirs | {"/tmp", "/usr/lib64"}):
            if d in entries:
                continue
            ti = tarfile.TarInfo(d.lstrip("/"))
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o1777 if d == "/tmp" else 0o755
            tar.addfile(ti)
        for dest in sorted(entries):
            src = entries[dest]
            ti = tar.gettarinfo(src, arcname=dest.lstrip("/"))
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mtime = 0
            if ti.isreg():
                with open(src, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": a.user,
            "Env": a.env,
            "Entrypoint": json.loads(a.entrypoint),
            "Cmd": json.loads(a.cmd),
            "ExposedPorts": {f"{p}/tcp": {} for p in a.expose},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "scripts/cluster/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": a.name, "Layers": ["layer.tar"]}]
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as out:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            out.addfile(ti, io.BytesIO(data))
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
