"""What is in the exchange, and removing it: ``ste-course exchange list`` and ``exchange purge``.

Every folder of ``inbound/`` is one of three things to :func:`~ste_course.classroom.exchange.collect`:
the **latest** submission of a student and an assignment (what collect copies), an **older**
one (a later submission superseded it), or **refused** (not a submission folder, another
user's, an assignment never published, named as submitted in the future...; the reason is
collect's own). :func:`survey` says which, by collect's own rules, so the list and collect
never disagree. :func:`purge` removes what is chosen (a student's, an assignment's, the refused,
the older) from ``inbound/``, with the feedback pages of each submission removed
(``feedback/HASH.html``, named from the submission's secret, as
:func:`~ste_course.classroom.exchange.return_feedback` named them), and with ``outbound`` an
assignment's published copy (students can no longer fetch it).

``inbound`` is the students' to write: nothing in it is followed (a link is removed as a link;
a folder is removed by :func:`shutil.rmtree`, which opens every level by descriptor and refuses
one swapped for a link). Removing another user's folder from the sticky ``inbound`` takes root.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ste_course.classroom.exchange import (SECRET_BYTES, SUBMISSION_NAME, Collected, ExchangeError, Layout,
                                           _candidates, published)
from ste_course.files import user_name
from ste_course.untrusted import open_own, read_own, shown

LATEST, OLDER, REFUSED = "latest", "older", "refused"


@dataclass
class Entry:
    """One folder (or stray file or link) of ``inbound/``."""

    name: str
    student: str  # "" when the name is not STUDENT+ASSIGNMENT+TIMESTAMP
    assignment: str
    owner: str
    state: str  # LATEST, OLDER or REFUSED
    reason: str = ""  # collect's reason, for a refused one


@dataclass
class Survey:
    """``inbound`` entry by entry, and the assignments published in ``outbound``."""

    entries: list = field(default_factory=list)
    published: list = field(default_factory=list)
    feedback_pages: int = 0


def survey(layout: Layout) -> Survey:
    """Every entry of ``layout.inbound`` classified by collect's rules (:data:`LATEST`,
    :data:`OLDER`, :data:`REFUSED` with collect's reason)."""
    seen = Collected()
    latest = {folder for _ctime, folder in _candidates(layout, None, None, seen).values()}
    reasons = {}
    for line in seen.refused:  # "<shown name>: reason" (collect's lines)
        label, _, reason = line.partition(": ")
        reasons[label] = reason
    result = Survey(published=sorted(published(layout)))
    try:
        result.feedback_pages = sum(1 for e in os.scandir(layout.feedback) if e.name.endswith(".html"))
    except FileNotFoundError:
        pass
    for entry in sorted(os.scandir(layout.inbound), key=lambda e: e.name):
        match = SUBMISSION_NAME.match(entry.name)
        student, assignment = (match.group(1), match.group(2)) if match else ("", "")
        try:
            owner = user_name(entry.stat(follow_symlinks=False).st_uid)
        except OSError:
            owner = "?"
        label = shown(entry.name, 100)
        if label in reasons:
            state, reason = REFUSED, reasons[label]
        elif entry.name in latest:
            state, reason = LATEST, ""
        else:
            state, reason = OLDER, ""
        result.entries.append(Entry(entry.name, student, assignment, owner, state, reason))
    return result


@dataclass
class Purged:
    """What :func:`purge` removed (or, with ``dry_run``, would remove)."""

    inbound: list = field(default_factory=list)  # entry names
    feedback: list = field(default_factory=list)  # feedback page names
    outbound: list = field(default_factory=list)  # assignments unpublished
    problems: list = field(default_factory=list)


def purge(layout: Layout, students=None, assignments=None, refused: bool = False, older: bool = False,
          outbound: bool = False, dry_run: bool = False) -> Purged:
    """Remove from ``inbound`` every entry of the given ``students`` or ``assignments``, and with
    ``refused``/``older`` every entry collect refuses / that a later submission superseded
    (see :func:`survey`); each removed submission's feedback pages go too. With ``outbound``,
    the published copies of ``assignments`` are removed as well. At least one choice is needed."""
    if not (students or assignments or refused or older):
        raise ExchangeError("say what to purge: --student, --assignment, --refused or --older")
    if outbound and not assignments:
        raise ExchangeError("--outbound removes the published copy of the --assignment given; none was")
    done = Purged()
    for entry in survey(layout).entries:
        chosen = ((students and entry.student in students) or (assignments and entry.assignment in assignments)
                  or (refused and entry.state == REFUSED) or (older and entry.state == OLDER))
        if not chosen:
            continue
        pages = _feedback_pages(layout, entry.name)
        done.inbound.append(entry.name)
        done.feedback.extend(pages)
        if dry_run:
            continue
        for page in pages:
            (layout.feedback / page).unlink(missing_ok=True)
        try:
            _remove(layout.inbound / entry.name)
        except OSError as err:
            done.problems.append(f"{shown(entry.name, 100)}: not removed ({err.strerror or err})")
    if outbound:
        for name in assignments:
            target = layout.outbound / name
            if "/" in name or name in (".", "..") or not (target.is_dir() and not target.is_symlink()):
                done.problems.append(f"{shown(name, 40)}: not published in {layout.outbound}")
                continue
            done.outbound.append(name)
            if not dry_run:
                shutil.rmtree(target)
    return done


def _remove(path: Path) -> None:
    """A folder removed whole without following any link in it; anything else unlinked."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)  # by descriptor; refuses a folder swapped for a link meanwhile
    else:
        path.unlink()


def _feedback_pages(layout: Layout, name: str) -> list:
    """The names in ``feedback/`` of the pages returned for the submission ``inbound/name``
    (nbgrader's hash of its secret and each notebook's name), those that exist."""
    from nbgrader.utils import notebook_hash

    try:
        secret = read_own(layout.inbound, (name, "submission_secret.txt"), SECRET_BYTES, "submission_secret.txt")
        folder = open_own(layout.inbound, (name,), folder=True)
        try:
            notebooks = [e.name[:-len(".ipynb")] for e in os.scandir(folder)
                         if e.name.endswith(".ipynb") and e.is_file(follow_symlinks=False)]
        finally:
            os.close(folder)
    except OSError:
        return []
    names = [f"{notebook_hash(secret=secret.decode('utf-8', 'replace'), notebook_id=nb)}.html" for nb in notebooks]
    return [n for n in sorted(names) if (layout.feedback / n).is_file()]
