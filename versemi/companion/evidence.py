"""Where a page's numbers come from, said on the page.

A results page gets its runs from :func:`versemi.studies.study_results`: the committed multi-seed results
of a study (``results/studies/<profile>/<study>``) when the profile has them, otherwise runs trained live in
this build (the smoke profile of the tests, a user's paper-profile build); both arrive as one
:class:`~versemi.studies.StudyResults`. :func:`evidence_statement` is the box that tells the reader which,
with the seeds, the commit and machine that produced the numbers, whether the code has changed since, and
the command that regenerates them.
"""

from __future__ import annotations

from pathlib import Path

from versemi.studies import STUDIES_DIR, StudyResults


def _machine(rec: dict) -> str:
    m = rec.get("provenance", {}).get("machine", {})
    cpu = f"{m.get('cpus')} CPU cores" if m.get("cpus") else "unknown CPU"
    return f"{m.get('platform', 'unknown platform')}, {cpu}" + (f", {m['cuda']}" if m.get("cuda") else "")


def evidence_statement(results: StudyResults, prepared=None, seed: int | None = None) -> str:
    """A Markdown paragraph: whether the page's numbers are committed or live, over which seeds and runs,
    from which commit and machine, whether the current code still is the code that produced them, and
    the command that regenerates them. ``prepared`` / ``seed``: this build's prepared data of that seed,
    when there is one: the paragraph then says whether the committed runs of the seed were trained on
    exactly these data (:meth:`~versemi.studies.StudyResults.same_data`)."""
    n_runs = len({r["label"] for r in results.records})
    seeds = ", ".join(str(s) for s in results.seeds)
    if results.source == "live":
        return (f"**Computed live** by this build: {n_runs} run(s), seed {seeds}, trained (or served by the run "
                f"cache) on this machine.")
    per_run = results.seeds_per_run()
    uneven = "" if per_run.nunique() <= 1 else (f" (not every run has every seed yet: {int(per_run.min())} to "
                                                f"{int(per_run.max())} seeds per run)")
    commits = ", ".join(c[:10] for c in results.commits)
    machines = "; ".join(sorted({_machine(r) for r in results.records}))
    current = ("the training and evaluation code of this checkout is the code that produced them"
               if results.code_is_current() else
               "**the training or evaluation code has changed since**: these numbers are those of the commit named")
    missing = (f" **Not committed yet** (absent from the tables): {', '.join(results.missing)}."
               if results.missing else "")
    others = sum(results.superseded.values())
    if others:
        missing += (f" {others} committed run(s) of {len(results.superseded)} other code version(s) are not "
                    "shown: a study is one code's evidence, and the page shows the current code's runs once "
                    "they cover the study, the newest complete version until then.")
    if results.method_code_left_out:
        missing += (f" Left out because their method's code has changed since: "
                    f"{', '.join(results.method_code_left_out)} (the seeds of one run come from one method module; "
                    "the re-trained seeds are shown).")
    data = ""
    if prepared is not None and seed is not None and (Path(prepared) / "manifest.json").is_file():
        same = results.same_data(prepared, seed)
        if same is not None:
            data = (f" The runs of seed {seed} were trained on exactly the data this build prepared." if same else
                    f" **The runs of seed {seed} were trained on other data than this build prepared** (another "
                    "phantom generator or preparation): they are the committed commit's numbers.")
    return (f"**Committed results** (not recomputed by this build): {n_runs} runs x seeds {seeds}{uneven}, "
            f"trained at commit {commits} on {machines}; {current}. Regenerate them with "
            f"`{results.command()}` and commit `{STUDIES_DIR}/{results.profile}/{results.study}/`.{data}{missing}")
