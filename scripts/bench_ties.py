"""mAP@ALL and P@10 of a checkpoint with ties broken by insertion order (the evaluator's) and by the asymmetric score.

    .venv/bin/python scripts/bench_ties.py --checkpoint runs/demo/checkpoint.pt [--num-database N] [--root PATH]
                                          [--save-index PATH]

Encodes the run's queries (real-valued outputs) and database (codes) exactly as ``hashkit evaluate`` does (same
split, same pipeline, flip averaging when the run used it), then ranks every database item per query by
(Hamming distance, insertion position) and by (Hamming distance, −u·b, scrambled position) — ``hashkit search``'s
default, see hashkit/ties.py — (and, for comparison, by the score with identical codes in insertion order) and
prints the metrics as JSON. ``--save-index`` also writes the database codes as an index
(the ids and model identity ``hashkit encode --database`` would write), e.g. for ``scripts/bench_serve.py --index``. The insertion-order mAP is checked against
``hashkit.evaluate`` (it must agree to 1e-9: same ranking, independent code).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def ranked_metrics(outputs: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                   use_score: bool, n_at: int = 10, scrambled: bool = True) -> tuple[float, float]:
    """(mAP@ALL, P@n_at): a slow, obvious per-query ranking (relevance = sharing a label). With the score,
    identical codes are ordered by scrambled position (``hashkit search``) or, ``scrambled=False``, by
    position (the order before 2026-11-30)."""
    q_codes = np.where(outputs >= 0, 1.0, -1.0).astype(np.float32)
    db = db_codes.astype(np.float32)
    bits = db.shape[1]
    positions = np.arange(len(db))
    tie_key = (positions.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) if scrambled else positions
    aps, pats = [], []
    for row in range(len(outputs)):
        dist = (bits - db @ q_codes[row]) / 2
        if use_score:
            order = np.lexsort((tie_key, -(db @ outputs[row].astype(np.float32)), dist))
        else:
            order = np.lexsort((positions, dist))
        relevant = (db_labels[order] @ q_labels[row]) > 0
        pats.append(relevant[:n_at].mean())
        hits = np.flatnonzero(relevant)
        aps.append(0.0 if len(hits) == 0 else float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1))))
    return float(np.mean(aps)), float(np.mean(pats))


def main() -> None:
    from hashkit.evaluate import evaluate_codes
    from hashkit.model import binarize
    from hashkit.run import load_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", default=None, help="dataset location (default: the checkpoint's)")
    parser.add_argument("--num-database", type=int, default=None, help="override the run's database size")
    parser.add_argument("--save-index", default=None, help="also write the database codes as an index here (new)")
    args = parser.parse_args()
    overrides = {k: v for k, v in {"root": args.root, "num_database": args.num_database}.items() if v is not None}
    started = time.perf_counter()
    config, splits, _, method, pipeline, _ = load_run(args.checkpoint, overrides, torch.device("cpu"))
    with torch.no_grad():
        outputs = pipeline.encode(splits.query, desc="encode query").float().cpu()

        def encode(images, desc="encode database"):
            return binarize(pipeline.encode(images, desc=desc))

        db = method.database_codes(splits, encode)
        if db is None:
            db = encode(splits.database)
    encoded = time.perf_counter()
    q_labels = splits.query.labels.astype(np.float32)
    db_labels = splits.database.labels.astype(np.float32)
    db = db.cpu().numpy()
    reference = evaluate_codes(binarize(outputs), torch.as_tensor(db), splits.query.labels, splits.database.labels,
                               metrics=["map", "precision_at"], topk=None)
    insertion = ranked_metrics(outputs.numpy(), db, q_labels, db_labels, use_score=False)
    score = ranked_metrics(outputs.numpy(), db, q_labels, db_labels, use_score=True)
    score_insertion = ranked_metrics(outputs.numpy(), db, q_labels, db_labels, use_score=True, scrambled=False)
    assert abs(insertion[0] - reference["map"]) < 1e-9, (insertion[0], reference["map"])
    if args.save_index:
        from hashkit.api import model_identity
        from hashkit.checkpoint import load_checkpoint
        from hashkit.index import Index

        index = Index.create(args.save_index, int(config["code_length"]),
                             model_identity(load_checkpoint(args.checkpoint)))
        index.add(db, [splits.database.item_id(i) for i in range(len(splits.database))])
    codes = np.where(outputs.numpy() >= 0, 1, -1)
    tied = [int(((db == c).all(axis=1)).sum()) for c in codes]
    print(json.dumps({
        "checkpoint": args.checkpoint, "method": config["method"], "code_length": int(config["code_length"]),
        "num_query": len(splits.query), "num_database": len(db),
        "insertion": {"map": round(insertion[0], 4), "p@10": round(insertion[1], 4)},
        "score": {"map": round(score[0], 4), "p@10": round(score[1], 4)},
        "score_identical_codes_by_insertion": {"map": round(score_insertion[0], 4), "p@10": round(score_insertion[1], 4)},
        "median_items_sharing_the_query_code": int(np.median(tied)),
        "encode_s": round(encoded - started, 1), "rank_s": round(time.perf_counter() - encoded, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
