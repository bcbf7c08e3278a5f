"""Markdown table of probe logs (the JSON lines of shift_probe.py / copy_probe.py --out).

  python benchmarks/probe_table.py RUN.jsonl [RUN2.jsonl ...] [--every 500]

One row per logged step (every --every steps): for each run, the clean-sample error with the
true references and each reference-use gap (error with that reference zeroed minus error with
the true references), as docs/results.md shows them.
"""
import argparse
import json
import os


def read_log(path: str) -> tuple[dict, list[dict]]:
    """(header, records) of one probe log; a log appended to by several runs keeps the last."""
    header, records = {}, []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if "header" in rec:
                header, records = rec["header"], []
            else:
                records.append(rec)
    return header, records


def table(paths, every: int = 500) -> str:
    """The markdown table of the runs in ``paths``, rows every ``every`` steps."""
    runs = [(os.path.basename(p).removesuffix(".jsonl"), *read_log(p)) for p in paths]
    cols, by_step = [], {}
    for name, _, records in runs:
        cases = list(records[0]["gap"]) if records else []
        cols.append((name, cases))
        for r in records:
            if r["step"] % every == 0:
                by_step.setdefault(r["step"], {})[name] = r
    head = ["step"] + [f"{n}: {h}" for n, cases in cols
                       for h in ["with refs"] + [f"gap {c}" for c in cases]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in sorted(by_step):
        row = [str(step)]
        for name, cases in cols:
            r = by_step[step].get(name)
            vals = [r["err"]["with_refs"]] + [r["gap"][c] for c in cases] if r else []
            row += [f"{v:.3f}" for v in vals] if r else ["" for _ in range(1 + len(cases))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", nargs="+")
    p.add_argument("--every", type=int, default=500)
    args = p.parse_args(argv)
    print(table(args.logs, args.every))


if __name__ == "__main__":
    main()
