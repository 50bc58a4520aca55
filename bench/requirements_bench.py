"""Coverage of the rule-based requirement parser on the public prompt sets.

    python bench/requirements_bench.py [--data ../shared/data/prompts]

GenEval: share of prompts whose objects (class, count, colour) and relation match the set's own
metadata exactly, per tag. T2I-CompBench (val splits): share of prompts with at least one object,
and for spatial prompts the share with exactly two objects and one relation; for numeracy, the
share where every object got a count. Prints a table, or JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def geneval(path: Path):
    from agent.requirements import parse_checklist

    ok, n = defaultdict(int), defaultdict(int)
    for line in (path / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        cl = parse_checklist(row["prompt"])
        got = [(r.noun, r.count, tuple(r.attributes)) for r in cl.objects()]
        want = [(o["class"], o["count"], (o["color"],) if "color" in o else ()) for o in row["include"]]
        rel = [r.relation for r in cl.requirements if r.kind == "relation"]
        want_rel = [o["position"][0] for o in row["include"] if "position" in o]
        if want_rel:
            want = want[::-1]
        n[row["tag"]] += 1
        ok[row["tag"]] += int(got == want and rel == want_rel)
    return {t: (ok[t] / n[t], n[t]) for t in n}


def compbench(path: Path):
    from agent.requirements import parse_checklist

    out = {}
    for cat in ("color", "shape", "texture", "spatial", "non_spatial", "complex", "3d_spatial", "numeracy"):
        lines = [x.strip() for x in (path / "t2i-compbench" / f"{cat}_val.txt").read_text().splitlines() if x.strip()]
        objs = rel2 = counted = 0
        for p in lines:
            cl = parse_checklist(p)
            o = cl.objects()
            objs += bool(o)
            rel2 += int(len(o) == 2 and sum(r.kind == "relation" for r in cl.requirements) == 1)
            counted += int(bool(o) and all(r.count is not None for r in o))
        row = {"objects": objs / len(lines), "n": len(lines)}
        if cat in ("spatial", "3d_spatial"):
            row["two_objects_one_relation"] = rel2 / len(lines)
        if cat == "numeracy":
            row["every_object_counted"] = counted / len(lines)
        out[cat] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    data = Path(a.data)
    t0 = time.perf_counter()
    g, c = geneval(data), compbench(data)
    if a.json:
        print(json.dumps({"geneval_exact": g, "t2i_compbench": c}, indent=1))
        return 0
    print("GenEval: objects, counts, colours and relation exactly as in the metadata")
    for tag, (share, n) in g.items():
        print(f"  {tag:<14}{share:6.3f}  (n={n})")
    total = sum(s * n for s, n in g.values()) / sum(n for _, n in g.values())
    print(f"  {'overall':<14}{total:6.3f}")
    print("T2I-CompBench val: share with >=1 object (spatial: 2 objects + 1 relation; numeracy: all counted)")
    for cat, row in c.items():
        extra = "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("objects", "n"))
        print(f"  {cat:<14}{row['objects']:6.3f}  {extra}  (n={row['n']})")
    print(f"{(time.perf_counter() - t0) * 1000:.0f} ms for {sum(n for _, n in g.values()) + sum(r['n'] for r in c.values())} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
