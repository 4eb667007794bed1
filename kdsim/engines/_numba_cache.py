"""Stale numba caches: numba keys a cached kernel by its own source file, not by the modules whose
functions it inlines or calls, so a kernel cached before a change to one of those would keep running
the old code (measured: ``_kernels_layered`` kept ``_kernels_ls``'s earlier fast-math flags, and ran
1.7× slower, after ``_kernels_ls.py`` changed). ``forget_if_stale`` deletes a kernel module's cache files
when the sources it depends on differ from those its cache was written with (a digest beside them)."""
from __future__ import annotations

import glob
import hashlib
import inspect
import os


def _cache_dir(py_func):
    """Where numba caches the functions of ``py_func``'s module (its own locators, in its order)."""
    from numba.core import caching
    source = inspect.getfile(py_func)
    for cls in (caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, caching.UserWideCacheLocator):
        locator = cls.from_function(py_func, source)
        if locator is not None:
            return locator.get_cache_path(), source
    return None, source


def forget_if_stale(py_func, dependencies):
    """Delete the numba cache files of ``py_func``'s module when it or one of ``dependencies`` (source files
    it inlines or calls into) changed since they were written; never raises (a cache is an optimisation)."""
    try:
        cache_dir, source = _cache_dir(py_func)
        if cache_dir is None:
            return
        digest = hashlib.sha256()
        for path in (source, *dependencies):
            with open(path, "rb") as fh:
                digest.update(fh.read())
        digest = digest.hexdigest()
        name = os.path.splitext(os.path.basename(source))[0]
        stamp = os.path.join(cache_dir, f"{name}.kdsim-sources")
        try:
            with open(stamp) as fh:
                if fh.read().strip() == digest:
                    return
        except OSError:
            pass
        for path in glob.glob(os.path.join(cache_dir, f"{name}.*.nbi")) + glob.glob(os.path.join(cache_dir, f"{name}.*.nbc")):
            try:
                os.remove(path)
            except OSError:
                pass
        os.makedirs(cache_dir, exist_ok=True)
        with open(stamp, "w") as fh:
            fh.write(digest)
    except Exception:  # noqa: BLE001 - an unreadable or read-only cache only costs a compilation
        return
