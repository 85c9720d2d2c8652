"""``hall-provision release``: a signed release bundle for the halls, and the county's release key.

A bundle is one tar file: ``manifest.json`` (the version, when it was made, the Python and
platform its wheels are for, the store schema the release migrates to, and the sha256 and size
of every file), ``manifest.sig`` (Ed25519 over the manifest's exact bytes, base64) and
``wheels/`` (the project's wheel and every wheel it needs). Devices check all of it against the
county's release public key before anything changes (appliance/update.py, docs/updates.md).
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from nacl.signing import SigningKey

from appliance.update import (
    BUNDLE_FORMAT,
    MANIFEST,
    PRIVATE_KEY_TAG,
    PROJECT,
    PUBLIC_KEY_TAG,
    SIGNATURE,
    WHEELS,
    BundleRefused,
    Target,
    format_key_file,
    key_id,
    parse_key_file,
    glibc_of,
    version_key,
    wheel_tags,
)

from .keyfiles import write_key_pair

REPO = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ReleaseError(Exception):
    """A release bundle or key could not be made; the message says why and what to do."""


class KeyFileExists(ReleaseError, FileExistsError):
    """release-keygen never overwrites a key file: devices trust the key they were given."""


# -- the county's release key --------------------------------------------------------------------


def keygen(private_out: str | Path, public_out: str | Path) -> str:
    """Make the county's release signing key pair; returns the public key's fingerprint.

    The private key is created 0600; neither file may exist already.
    """
    signing = SigningKey.generate()
    public = bytes(signing.verify_key)
    kid = key_id(public)
    private_text = format_key_file(
        PRIVATE_KEY_TAG,
        bytes(signing),
        "County release signing key (PRIVATE; hall appliance software updates, Ed25519).\n"
        "Whoever holds it can install software on every hall. Keep it offline with county IT,\n"
        "backed up; never on a hall device, a share or in e-mail.\n"
        f"Public key fingerprint: {kid}",
    )
    public_text = format_key_file(PUBLIC_KEY_TAG, public, f"County release public key: install it on every hall as /etc/hall-appliance/release.pub.\nFingerprint: {kid}")
    write_key_pair(
        Path(private_out),
        Path(public_out),
        private_text,
        public_text,
        tool="release-keygen",
        why="every hall trusts the public key it was given",
        error=ReleaseError,
        exists=KeyFileExists,
    )
    return kid


def load_signing_key(path: str | Path) -> SigningKey:
    """The county's private release key from the file release-keygen wrote."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path}: cannot read the release key ({exc})") from None
    try:
        return SigningKey(parse_key_file(text, PRIVATE_KEY_TAG, str(path)))
    except BundleRefused as exc:
        raise ReleaseError(f"{path} is not the private release key ({exc.reason}); give the file release-keygen wrote with --private-out") from None


# -- the wheelhouse --------------------------------------------------------------------------------


def build_wheelhouse(source: Path, out: Path, *, python: str = sys.executable) -> None:
    """``pip wheel`` the project at ``source`` and everything it needs into ``out``.

    The wheels are for the Python and platform running this: build on a Pi (or give
    ``--wheelhouse``) for the halls.
    """
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError(f"pip wheel failed:\n{done.stderr.strip()[-2000:]}")


def project_wheel(wheelhouse: Path) -> Path:
    """The one hall_appliance wheel in ``wheelhouse``."""
    found = sorted(wheelhouse.glob("hall_appliance-*.whl"))
    if len(found) != 1:
        raise ReleaseError(f"{wheelhouse} holds {len(found)} hall_appliance wheels; it needs exactly one (the release)")
    return found[0]


def read_release(wheel: Path) -> tuple[str, int]:
    """The version and the store schema (its migration count) the project wheel carries.

    Read from the wheel's own source, never imported: the schema is what *that* code migrates to.
    """
    with zipfile.ZipFile(wheel) as z:
        init = z.read("appliance/__init__.py").decode("utf-8")
        store = z.read("appliance/store.py").decode("utf-8")
    m = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    if not m:
        raise ReleaseError(f"{wheel.name}: appliance/__init__.py has no __version__")
    version = m.group(1)
    version_key(version)  # a release version like 1.4.2
    for node in ast.parse(store).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "MIGRATIONS" for t in targets):
            return version, len(ast.literal_eval(node.value))
    raise ReleaseError(f"{wheel.name}: appliance/store.py has no MIGRATIONS")


def describe_target(wheels: list[Path], python: str | None = None) -> dict:
    """The Python and platform a wheelhouse is for, from its wheels' tags.

    Pure wheels fit anywhere; every binary wheel must be for one machine and, unless it uses
    the stable ABI, one Python version. ``python`` states the version when no wheel shows it.
    """
    machines, pythons, glibc = set(), set(), (0, 0)
    for wheel in wheels:
        py_tags, abi_tags, plat_tags = wheel_tags(wheel.name)
        for plat in plat_tags:
            if plat != "any":
                m = re.search(r"(x86_64|aarch64|armv7l|armv6l|i686)$", plat)
                if not m:
                    raise ReleaseError(f"{wheel.name}: platform {plat} is not one the halls run")
                machines.add(m.group(1))
                glibc = max(glibc, glibc_of(plat) or (0, 0))
        for abi in abi_tags:
            m = re.fullmatch(r"cp(\d)(\d+)", abi)
            if m:
                pythons.add(f"{m.group(1)}.{m.group(2)}")
    if len(machines) > 1:
        raise ReleaseError(f"the wheelhouse mixes machines ({', '.join(sorted(machines))}); build it on one kind of Pi")
    if len(pythons) > 1:
        raise ReleaseError(f"the wheelhouse mixes Python versions ({', '.join(sorted(pythons))}); build it with the Python the halls run")
    here = Target.this()
    version = pythons.pop() if pythons else (python or here.python)
    if python and python != version:
        raise ReleaseError(f"--python {python}, but the wheels are for Python {version}")
    machine = machines.pop() if machines else "any"
    return {
        "implementation": "cp",
        "python": version,
        "abi": f"cp{version.replace('.', '')}",
        "machine": machine,
        "platform": "any" if machine == "any" else f"linux_{machine}",
        "glibc": f"{glibc[0]}.{glibc[1]}" if glibc > (0, 0) else None,
    }


# -- the bundle -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None, mtime: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else path.stat().st_size
    info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = 0o644, 0, 0, "root", "root", mtime
    if data is not None:
        tar.addfile(info, io.BytesIO(data))
    else:
        with open(path, "rb") as f:
            tar.addfile(info, f)


def make_bundle(wheelhouse: Path, signing_key: SigningKey, out_dir: Path, *, python: str | None = None, created: datetime | None = None) -> tuple[Path, dict]:
    """Sign the wheelhouse into ``out_dir/hall-appliance-<version>.tar``; returns it and its manifest."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    version, schema = read_release(project_wheel(wheelhouse))
    created = created or datetime.now(timezone.utc)
    manifest = {
        "format": BUNDLE_FORMAT,
        "project": PROJECT,
        "version": version,
        "created": created.isoformat(timespec="seconds"),
        # The store schema this release migrates the database to (len(store.MIGRATIONS)): a
        # device whose store is newer refuses the release, one whose store is older knows the
        # new release migrates it (and backs it up first).
        "store_schema": schema,
        "target": describe_target(wheels, python),
        "key_id": key_id(bytes(signing_key.verify_key)),
        "files": {f"{WHEELS}/{w.name}": {"sha256": _sha256(w), "size": w.stat().st_size} for w in wheels},
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    signature = base64.b64encode(signing_key.sign(manifest_bytes).signature) + b"\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = out_dir / f"{PROJECT}-{version}.tar"
    if bundle.exists():
        raise ReleaseError(f"{bundle} exists; remove it or choose another --out")
    mtime = int(created.timestamp())
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{bundle.name}.")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, manifest_bytes, mtime=mtime)
            _add(tar, SIGNATURE, signature, mtime=mtime)
            for w in wheels:
                _add(tar, f"{WHEELS}/{w.name}", path=w, mtime=mtime)
        os.chmod(tmp, 0o644)
        os.replace(tmp, bundle)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return bundle, manifest


# -- the command line -----------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Signed software releases for the hall appliances (docs/updates.md).")
    sub = parser.add_subparsers(dest="tool", metavar="{release,release-keygen}")
    kg = sub.add_parser("release-keygen", help="make the county's release signing key pair", description="Make the county's release signing key pair (Ed25519). Never overwrites a file.")
    kg.add_argument("--private-out", required=True, metavar="PATH", help="the private key (created 0600; keep it offline with county IT)")
    kg.add_argument("--public-out", required=True, metavar="PATH", help="the public key (install it on every hall as /etc/hall-appliance/release.pub)")
    rel = sub.add_parser(
        "release",
        help="build a signed release bundle",
        description="Build hall-appliance-<version>.tar: the project's wheel and every wheel it needs, a manifest, and its signature.",
        epilog="Without --wheelhouse the wheels are built here with `pip wheel` for this machine's Python and platform; for the halls, build the wheelhouse on a Pi (pip wheel -w DIR .) and give it.",
    )
    rel.add_argument("--key", required=True, metavar="PATH", help="the county's private release key (release-keygen --private-out)")
    rel.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the bundle")
    rel.add_argument("--wheelhouse", type=Path, metavar="DIR", help="a wheelhouse built for the halls (one hall_appliance wheel and its dependencies)")
    rel.add_argument("--source", type=Path, default=REPO, metavar="DIR", help="the checkout to build without --wheelhouse (default: this one)")
    rel.add_argument("--python", metavar="X.Y", help="the halls' Python version, when no wheel in the wheelhouse shows it")
    return parser


def main(argv: list[str] | None = None, prog: str = "hall-provision") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.tool == "release-keygen":
            kid = keygen(args.private_out, args.public_out)
            print(f"private key: {args.private_out} (mode 0600) — keep it offline with county IT; never on a hall")
            print(f"public key:  {args.public_out} — install it on every hall as /etc/hall-appliance/release.pub")
            print(f"fingerprint: {kid}")
            return EXIT_OK
        if args.tool == "release":
            key = load_signing_key(args.key)
            if args.wheelhouse:
                if not args.wheelhouse.is_dir():
                    raise ReleaseError(f"{args.wheelhouse} is not a directory")
                bundle, manifest = make_bundle(args.wheelhouse, key, args.out, python=args.python)
            else:
                with tempfile.TemporaryDirectory(prefix="hall-wheels-") as tmp:
                    print(f"building the wheels from {args.source} for Python {Target.this().python} on {Target.this().machine} …", file=sys.stderr)
                    build_wheelhouse(args.source, Path(tmp))
                    bundle, manifest = make_bundle(Path(tmp), key, args.out, python=args.python)
            digest, size = _sha256(bundle), bundle.stat().st_size
            t = manifest["target"]
            print(f"{bundle}: release {manifest['version']}, {len(manifest['files'])} wheels, Python {t['python']} on {t['machine']}, store schema {manifest['store_schema']}")
            print(f"size {size} bytes, sha256 {digest}")
            print("announce it with cmd/update.install: " + json.dumps({"command_id": "…", "args": {"url": f"https://…/{bundle.name}", "sha256": digest, "size": size, "version": manifest["version"]}}, ensure_ascii=False))
            return EXIT_OK
    except (ReleaseError, OSError, ValueError) as exc:
        print(f"{prog} {args.tool}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    parser.print_help()
    return EXIT_OK
