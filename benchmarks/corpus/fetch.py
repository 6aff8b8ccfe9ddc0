"""Download packages by name with their ordinary clients, record their sha256, unpack them once.

Layout under the cache: downloads/{deb,pypi,npm}/<package file>, downloads/apt-dumpavail.txt, and
unpacked/<package file>/ (with a .sha256 stamp naming the archive it came from). A download is
skipped when its file is there; an unpack is skipped when its stamp matches the archive's hash.
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
from dataclasses import dataclass
from pathlib import Path

from cis_stream.format.files import sha256_file


@dataclass(frozen=True)
class Package:
    spec: str       # as in the source table, e.g. 'deb:ghc-doc'
    archive: Path   # the downloaded file
    sha256: str
    root: Path      # where it is unpacked


class FetchError(RuntimeError):
    """A package could not be downloaded: the message says which and how to retry."""


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f'{" ".join(cmd)} failed in {cwd} (exit {result.returncode}):\n{result.stderr[-2000:]}\n'
                         'check the package name and that the registry is reachable, then rerun')


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

    def download(self, spec: str) -> Path:
        kind, _, name = spec.partition(':')
        folder = self.downloads / kind
        folder.mkdir(parents=True, exist_ok=True)
        if kind == 'deb':
            pattern = f'{name}_*.deb'
            if not self._find(folder, pattern):
                if not self._apt_updated:
                    _run(['apt-get', 'update', '-qq'], folder)
                    self._apt_updated = True
                _run(['apt-get', 'download', '-q', name], folder)
        elif kind == 'pypi':
            dist, _, version = name.partition('==')
            if not self._find_dist(folder, dist, version):
                _run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '-d', str(folder), name], folder)
            path = self._find_dist(folder, dist, version)
            if path is None:
                raise FetchError(f'{spec}: pip download ran, but no {dist}-{version} file is in {folder}')
            return path
        elif kind == 'npm':
            dist, _, version = name.rpartition('@')
            pattern = f'{dist}-{version}.tgz'
            if not self._find(folder, pattern):
                _run(['npm', 'pack', '--silent', name], folder)
        elif spec == 'apt:dumpavail':
            path = self.downloads / 'apt-dumpavail.txt'
            if not path.exists():
                if not self._apt_updated:
                    _run(['apt-get', 'update', '-qq'], self.downloads)
                    self._apt_updated = True
                with open(str(path) + '.tmp', 'w') as handle:
                    subprocess.run(['apt-cache', 'dumpavail'], stdout=handle, check=True)
                os.replace(str(path) + '.tmp', path)
            return path
        else:
            raise ValueError(f'unknown package kind in {spec!r}: use deb:, pypi:, npm: or apt:dumpavail')
        path = self._find(folder, pattern)
        if path is None:
            raise FetchError(f'{spec}: downloaded, but no file matching {pattern} in {folder}')
        return path

    def fetch(self, spec: str) -> Package:
        """Download (if needed), hash and unpack (if needed) one package."""
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
        return Package(spec, archive, sha, root)

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
