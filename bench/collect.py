"""Collect the benchmarks' results (bench/results/<name>.md, written by each `make bench-<name>`)
into one report, bench/results/REPORT.md, with the published and peer numbers of
../shared/REFERENCES.md beside each, and write it into the README's Results section (between
its `results:begin` / `results:end` markers).

    make bench-results        # collect only (what was measured, as it was measured)
    make bench-all            # run every benchmark, then collect

Each result keeps the commit and date it was measured at, and beside it (<name>.code.json,
bench/report_io.py) the blob id of every repository file its bench process imported or read and
the prepared data's dvc.lock md5: it is current while all of those are the same in the checkout,
else stale (re-run its bench), naming what changed. Of params.yaml only what the bench reads
counts (BENCHES: its profile, resolved, and its stages' sections, plus every key outside the
stage sections): trimming the default profile where the bench profile sets its own value, or
another stage's section, stales nothing. A result without that record, or whose bench
runs code in child processes it cannot see (the record says "coarse"), is judged coarsely: stale
when anything in bench.report_io.CODE (src, flows, params, pins) or the bench modules it runs
differs between its commit and the checkout. A benchmark with no result yet is listed as not
measured. Nothing is copied from elsewhere: the numbers are the files' own.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.report_io import CODE, DURING, ON_DISK, PREPARED, RESULTS, current, machine

REPO = RESULTS.parent.parent
REFERENCES = REPO.parent / "shared" / "REFERENCES.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
STAGE = "common"  # bench/common.py runs the stage benches' stages (run_stage, bench_params)

# the stage sections of params.yaml (the rest, e.g. data, seed, device, counts for every bench)
SECTIONS = ("ae", "pretrain", "transfer", "source", "features", "finetune", "da", "gan", "seq")
TRANSFER = ("transfer", "source", "features", "finetune")

# (result name pattern, the bench modules its numbers come from, title, REFERENCES.md sections,
#  the params it reads: (the profile it forces, None: the file's own `profile:`; the stage
#  sections its stages read — their own and their StageSpec.shared_params, which the pipeline's
#  cache key counts too; the trainer bench's: what it builds from), or None: all of params.yaml)
BENCHES = (
    (
        "pretrain",
        ("pretrain_sweep", STAGE),
        "Greedy layer-wise pretraining",
        ("Greedy layer-wise pretraining",),
        (None, ("pretrain",)),
    ),
    (
        "transfer",
        ("transfer_sweep", STAGE),
        "Transfer: feature extraction vs fine-tuning",
        (),
        ("bench", TRANSFER),
    ),
    (
        "da*",
        ("da_sweep", STAGE),
        "Domain adaptation",
        ("Domain adaptation, digits", "A peer library measured here", "Embedded pairs"),
        ("bench", ("da", "transfer")),
    ),
    ("gan", ("gan_sweep", STAGE), "GANs", ("GAN",), ("bench", ("gan",))),
    ("seq", ("seq_sweep", STAGE), "Sequence models", ("MNIST-1D",), ("bench", ("seq",))),
    ("ae", ("ae_sweep", STAGE), "Autoencoders", ("Autoencoders / VAE",), ("bench", ("ae",))),
    (
        "trainer",
        ("trainer_overhead",),
        "Trainer efficiency",
        (),
        ("default", ("ae", "da", *TRANSFER)),
    ),
    (
        "pipeline",
        ("pipeline_overhead", "trainer_overhead"),  # its goal rule is the trainer bench's verdict
        "Orchestration overhead, cache, memory, scaling",
        (),
        None,
    ),
)
HEADER = re.compile(
    r"<!-- bench: (?P<name>[^;]+); commit: (?P<commit>[^;]+); date: (?P<date>[^;>]+?)"
    r"(?:; machine: (?P<machine>[^>]+?))? -->"
)


@dataclass
class Result:
    name: str
    commit: str
    date: str
    machine: str  # "not recorded" in results from before the header named it
    body: str
    state: str  # "current" | why it is not


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def freshness(
    commit: str, modules: tuple[str, ...], code: dict | None = None, reads: tuple | None = None
) -> str:
    """'current' when the code behind a result is the same as in the checkout, else why not.

    With its code record's `files` (`code`, read from <name>.code.json): each recorded file's
    blob id and the prepared data's md5, now; params.yaml by what the bench `reads` of it when
    given (see params_view). Without one (or a "coarse" one): CODE and bench/<module>.py of
    `modules` at its commit and in the checkout."""
    sha = commit.split()[0]
    if "uncommitted" in commit:
        return "measured with uncommitted changes"
    if DURING in commit:
        return "stale: its code or data changed while it ran (re-run it)"
    if code is not None and "files" in code:
        return _recorded(code["files"], sha, reads)
    paths = [*CODE, *(f"bench/{m}.py" for m in modules)]
    if _git("cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
        return f"commit {sha} is not in this repository"
    changed = _git("diff", "--name-only", sha, "HEAD", "--", *paths).stdout.split()
    if changed:
        return _stale(changed, sha)
    if _git("status", "--porcelain", "--", *paths).stdout.strip():  # untracked files too
        return "stale: the checkout has uncommitted changes to the code"
    return "current"


def _recorded(files: dict[str, str | None], sha: str, reads: tuple | None = None) -> str:
    """'current' when every entry of a code record is the same in the checkout, else which not.
    params.yaml, when the bench `reads` only part of it, counts as changed only if that part is
    different (the recorded version is read back from git by its blob id)."""
    changed = []
    for entry, recorded in files.items():
        now = current(entry, REPO)
        if now == recorded:
            continue
        if entry == "params.yaml" and reads and recorded and now and _same_params(recorded, reads):
            continue
        if entry == PREPARED:
            changed.append("the prepared data (dvc.lock)")
        elif entry == ON_DISK:
            changed.append("the prepared data on disk (data/prepared, `make data`)")
        else:
            changed.append(entry + (" (deleted)" if now is None else ""))
    return _stale(changed, sha) if changed else "current"


def params_view(text: str, profile: str | None, sections: tuple[str, ...]) -> str | None:
    """What a bench reads of params.yaml `text`: the params resolved for its `profile` (None:
    the file's own) by the current code, without the profiles table and the stage sections not
    in `sections`, as JSON in the file's key order (the order of e.g. backbones or pairs decides
    what runs first or at all). None when the text does not resolve (it counts as changed)."""
    import yaml

    from adaptflow.config import build_params, parse_overrides

    try:
        forced = [] if profile is None else [f"profile={profile}"]
        params = build_params(yaml.safe_load(text), parse_overrides(forced))
    except Exception:  # noqa: BLE001 - any text that no longer resolves is a change
        return None
    view = params.model_dump(mode="json")
    view.pop("profiles", None)
    for section in set(SECTIONS) - set(sections):
        view.pop(section, None)
    return json.dumps(view)


def _same_params(blob: str, reads: tuple) -> bool:
    """The recorded params.yaml (git blob `blob`) and the checkout's give `reads` the same view."""
    old = _git("cat-file", "blob", blob)
    if old.returncode != 0:  # not in this repository: cannot tell, so changed
        return False
    now = params_view((REPO / "params.yaml").read_text(), *reads)
    return now is not None and params_view(old.stdout, *reads) == now


def _stale(changed: list[str], sha: str) -> str:
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return f"stale: {', '.join(changed[:3])}{more} changed since {sha}"


def read_code(path: Path) -> dict | None:
    """The code record beside result `path` (<name>.code.json), None when there is none."""
    sidecar = path.with_name(path.stem + ".code.json")
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{sidecar}: not a code record ({e}); re-run its bench") from None


def read_result(path: Path, modules: tuple[str, ...], reads: tuple | None = None) -> Result:
    text = path.read_text()
    m = HEADER.search(text)
    if m is None:
        raise SystemExit(f"{path}: no bench header (written by bench.report_io.save_result?)")
    body = text[m.end() :].strip()
    state = freshness(m["commit"], modules, read_code(path), reads)
    where = (m["machine"] or "not recorded").strip()
    return Result(m["name"], m["commit"].strip(), m["date"].strip(), where, body, state)


def demote(markdown: str, top: int = 4) -> str:
    """Shift the headings so the body's highest becomes level `top` (at most 6): the report
    nests each result under its bench's own heading. Lines in code fences are left alone."""
    lines, fenced, levels = markdown.splitlines(), False, []
    for line in lines:
        fenced = not fenced if line.startswith("```") else fenced
        if not fenced and (m := re.match(r"(#{1,6}) ", line)):
            levels.append(len(m[1]))
    shift = top - min(levels) if levels else 0
    out, fenced = [], False
    for line in lines:
        fenced = not fenced if line.startswith("```") else fenced
        if not fenced and (m := re.match(r"(#{1,6}) ", line)):
            line = "#" * min(6, len(m[1]) + shift) + line[len(m[1]) :]
        out.append(line)
    return "\n".join(out)


def relink(markdown: str, base: str) -> str:
    """Relative image/file links of a result (e.g. scaling.png) made relative to `base`."""
    return re.sub(r"(!?\[[^\]]*\]\()(?!https?:|/|#)([^)]+\))", rf"\g<1>{base}\g<2>", markdown)


def references(titles: tuple[str, ...]) -> str | None:
    """The sections of REFERENCES.md whose heading starts with one of `titles`, verbatim."""
    if not titles:
        return None
    if not REFERENCES.is_file():
        return "(../shared/REFERENCES.md is absent beside this checkout: no published numbers)"
    sections = re.split(r"(?m)^## ", REFERENCES.read_text())[1:]
    picked = [s for s in sections if s.startswith(titles)]
    return "\n\n".join("##### " + s.strip() for s in picked) or None


def _command(r: Result, name: str) -> str:
    """The result's body, its first line naming the command that reruns it: a part of a bench
    (`make bench-da PAIRS=a,b` saves da-a-b) is headed `make bench-da-a-b`, not a make target."""
    if r.name == name:
        return r.body
    pairs = ",".join(r.name[len(name) + 1 :].split("-"))
    return r.body.replace(f"`make bench-{r.name}`", f"`make bench-{name} PAIRS={pairs}`", 1)


def same_machine(recorded: str, here: str) -> bool:
    """The same CPU model, CPU count and GPU (the thread count is the bench's own choice); a
    result from before the header named its machine cannot be told apart: not flagged."""
    if recorded == "not recorded":
        return True

    def host(where: str) -> str:
        return re.sub(r", \d+ threads?", "", where).strip()

    return host(recorded) == host(here)


def overlaps(stems: list[str], name: str) -> dict[str, str]:
    """Results of one bench split by PAIRS= (`name`-a-b, ...) that measure a pair twice, or a
    whole run (`name`) beside parts: stem -> what it shares with which (keep one of them)."""
    covers = {s: {"all"} if s == name else set(s[len(name) + 1 :].split("-")) for s in stems}
    out = {}
    for s in stems:
        for other in stems:
            if other == s:
                continue
            shared = covers[s] & covers[other] or (covers[s] | covers[other]) & {"all"}
            if shared:
                what = "every pair" if "all" in shared else ", ".join(sorted(shared))
                out[s] = f"overlaps {other} ({what} in both: keep one, git rm the other)"
    return out


def report(base: str) -> str:
    head = _git("rev-parse", "--short", "HEAD").stdout.strip()
    lines = [
        f"Collected by `make bench-results` at commit {head}. Every result says the commit and "
        "date it was measured at. A result is current while the code behind it is unchanged "
        "in this checkout: the files its bench process imported or read (params and pins "
        "included) and the prepared data, as recorded beside it (`<name>.code.json`), or, for "
        "a result without that record or whose bench runs code in child processes, everything "
        "in src, flows, params, pins and its bench modules since its commit. "
        "Published and peer numbers (`../shared/REFERENCES.md`) are beside each, with their "
        "own protocols (most published digit numbers use all 60,000 MNIST images; ours the "
        "5,000-image subset). The numbers also depend on the machine (its CPU and thread "
        "count): compare results measured on the same one.",
        "",
        "| benchmark | measured | commit | machine | state |",
        "|---|---|---|---|---|",
    ]
    sections = []
    here = machine()
    for pattern, modules, title, refs, reads in BENCHES:
        paths = sorted(RESULTS.glob(f"{pattern}.md"))
        name = pattern.rstrip("*")
        if not paths:
            lines.append(f"| {title} | not yet | – | – | run `make bench-{name}` |")
            continue
        parts = []
        clashes = overlaps([p.stem for p in paths], name)
        for path in paths:
            r = read_result(path, modules, reads)
            if path.stem in clashes:
                r.state = f"{clashes[path.stem]}; {r.state}"
            if r.state == "current" and not same_machine(r.machine, here):
                r.state = f"current code, measured on another machine (this one: {here})"
            label = title if r.name == name else f"{title} ({r.name})"
            lines.append(f"| {label} | {r.date} | {r.commit} | {r.machine} | {r.state} |")
            warn = "" if r.state == "current" else f"**Not this code's numbers: {r.state}.**\n\n"
            parts.append(warn + relink(demote(_command(r, name)), base))
        ref = references(refs)
        beside = f"\n\n**Published and peer numbers**\n\n{ref}" if ref else ""
        sections.append(f"### {title}\n\n" + "\n\n".join(parts) + beside)
    return "\n".join(lines) + "\n\n" + "\n\n".join(sections) + "\n"


def into_readme(readme: Path, text: str) -> None:
    old = readme.read_text()
    if BEGIN not in old or END not in old:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers for the Results section")
    start, end = old.index(BEGIN) + len(BEGIN), old.index(END)
    readme.write_text(old[:start] + "\n" + text + old[end:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    full = report(base="")
    (RESULTS / "REPORT.md").write_text("# adaptflow benchmark results\n\n" + full)
    into_readme(args.readme, report(base="bench/results/"))
    print(f"written: {RESULTS / 'REPORT.md'} and the Results section of {args.readme}")


if __name__ == "__main__":
    main()
