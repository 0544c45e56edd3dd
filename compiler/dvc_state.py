"""`g4g recover`: set aside DVC's own state files that a killed `dvc repro` left half-written.

DVC writes `.dvc/tmp/rwlock` and `dvc.lock` in place, so a SIGKILL or power cut during one of
those writes leaves a file DVC then refuses to read; a lock whose holders were all killed is
removed too (DVC would release it entry by entry, and a rerun once failed right after that) ("Unable to read RWLock-file", "dvc.lock
validation failed"). Neither holds any of the build: the lock only guards a running DVC, and
without a usable `dvc.lock` every stage reruns and reuses its items from the item cache, giving
the same bytes. A torn `dvc.lock` is moved to `dvc.lock.torn` (kept for a look), never deleted.
"""

from __future__ import annotations

from pathlib import Path

from base.files import loads_json

RWLOCK = Path(".dvc/tmp/rwlock")
LOCKFILE = Path("dvc.lock")


def torn_rwlock(root: Path) -> bool:
    """True when DVC's read/write lock exists but is not the JSON DVC would read."""
    try:
        loads_json((root / RWLOCK).read_text())
    except FileNotFoundError:
        return False
    except ValueError:
        return True
    return False


def stale_rwlock(root: Path) -> bool:
    """True when DVC's lock names processes and every one of them has exited: a killed run's
    leftovers, which DVC would otherwise release entry by entry on the next run."""
    import psutil

    try:
        lock = loads_json((root / RWLOCK).read_text())
    except (FileNotFoundError, ValueError):
        return False
    holders = [info for mode in ("read", "write") for infos in (lock.get(mode) or {}).values()
               for info in (infos if isinstance(infos, list) else [infos])]
    pids = [info.get("pid") for info in holders if isinstance(info, dict)]
    return bool(pids) and not any(isinstance(pid, int) and psutil.pid_exists(pid) for pid in pids)


def lockfile_problem(root: Path) -> str | None:
    """Why DVC would refuse `dvc.lock` (checked with DVC's own loader and schema), or None."""
    from dvc.exceptions import DvcException
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.strictyaml import load

    path = root / LOCKFILE
    if not path.is_file():
        return None
    try:
        load(str(path), COMPILED_LOCKFILE_SCHEMA)
    except DvcException as error:
        return str(error).splitlines()[0]
    return None


def recover(root: Path) -> list[str]:
    """Set aside every torn DVC state file under `root`; one line per file recovered."""
    done = []
    if torn_rwlock(root):
        (root / RWLOCK).unlink()
        done.append(f"removed the half-written {RWLOCK} (DVC's lock of a killed run)")
    elif stale_rwlock(root):
        (root / RWLOCK).unlink()
        done.append(f"removed {RWLOCK}: every process it names has exited (a killed run's lock)")
    problem = lockfile_problem(root)
    if problem is not None:
        aside = root / f"{LOCKFILE}.torn"
        (root / LOCKFILE).replace(aside)
        done.append(f"moved the unreadable {LOCKFILE} to {aside.name} ({problem}); "
                    "the next `dvc repro` reruns every stage from the item cache")
    return done
