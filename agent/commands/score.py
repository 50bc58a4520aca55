"""Score images against a text with CLIP.

  imagent score a.png b.png --text "two red circles"
  imagent score a.png --text "a cat" --text "a dog" --text "two red circles"    rank captions

With one --text every image is scored against it; with several, every image is scored against
every text (a table; the best text per image is marked). The score is CLIPScore =
2.5 x max(cos, 0) (Hessel et al. 2021) unless --formula says otherwise; the output names it.
The CLIP model is --clip PATH_OR_HUB_ID, else $IMAGENT_CLIP, else the demo world's CLIP.
"""
from __future__ import annotations


from agent.commands.common import emit, note, settings_from
from agent.session import Session
from tools.score import FORMULAS, Scorer, apply_formula


def add_arguments(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--text", action="append", required=True, help="what the image should show (repeat to rank)")
    p.add_argument("--clip", metavar="PATH_OR_HUB_ID",
                   help="CLIP model in transformers format (default: $IMAGENT_CLIP or the demo CLIP)")
    p.add_argument("--formula", choices=list(FORMULAS), default="clipscore",
                   help="clipscore = 2.5*max(cos,0) (default); torchmetrics = 100*max(cos,0); cosine")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args) -> int:
    settings = settings_from(args).with_overrides(clip_model=args.clip)
    session = Session(settings)
    scorer = session.scorer()
    if scorer.formula != args.formula:
        scorer = Scorer(settings.clip_model, formula=args.formula)
    from tools.images import load_image

    images = [load_image(p) for p in args.images]
    if len(args.text) == 1:
        cos = scorer.cosine(images, args.text[0])
        rows = [{"image": p, "text": args.text[0], "score": apply_formula(c, args.formula), "cosine": c}
                for p, c in zip(args.images, cos)]
        payload = {"model": scorer.model_id, "path": scorer.path, "formula": args.formula,
                   "formula_text": scorer.formula_text, "results": rows}
        emit(args, payload, [f"{r['score']:.4f}  {r['image']}" for r in rows])
    else:
        matrix = scorer.matrix(images, args.text)
        rows = []
        for p, row in zip(args.images, matrix):
            scores = [apply_formula(c, args.formula) for c in row]
            best = max(range(len(scores)), key=scores.__getitem__)
            rows.append({"image": p, "scores": dict(zip(args.text, scores)), "cosine": dict(zip(args.text, row)),
                         "best": args.text[best]})
        payload = {"model": scorer.model_id, "path": scorer.path, "formula": args.formula,
                   "formula_text": scorer.formula_text, "results": rows}
        lines = []
        for r in rows:
            lines.append(r["image"])
            for t, s in sorted(r["scores"].items(), key=lambda ts: -ts[1]):
                lines.append(f"  {s:.4f}  {t}{'   <- best' if t == r['best'] else ''}")
        emit(args, payload, lines)
    if not args.json:
        note(f"imagent: {scorer.formula_text}; CLIP {scorer.model_id}")
    return 0
