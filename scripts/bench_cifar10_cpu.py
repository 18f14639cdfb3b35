"""CIFAR-10 on the CPU with --cpu-recipe: every method × bit length, mAP and wall times, as markdown.

Seed protocol (1,000 queries / 5,000 training images / 59,000 database images, mAP@ALL) on the real
CIFAR-10 (``../shared/data/cifar10-jpg.tar`` beside the repo unless ``--root``). Steps:

1. the one-time caching of the frozen prefix's activations for all images (timed; reused when cached);
2. context: mAP of the frozen network's real-valued features ranked by cosine, and of LSH (random
   hyperplanes through the training features' mean) on them, per bit length;
3. one ``hashkit train --cpu-recipe`` run per method × bit length (each timed; a finished run in
   ``--out`` is reused unless ``--overwrite``). Per-method handling: ADSH trains on the database and
   learns its codes (its own protocol, same split); SSDH is unsupervised and its protocol is mAP@5000 —
   both its mAP@5000 and mAP@ALL are reported; DIHN needs the incremental protocol (``--num-seen``,
   7 seen classes) and an ADSH checkpoint trained on the seen classes, so its row is ADSH(seen) → DIHN
   on that protocol, reported apart (mAP over all queries; seen / new classes in the notes).

Invocations accumulate in ``OUT/bench.json`` (cells and context rows of earlier ones are kept), so the
table can be produced in chunks (``--methods``/``--bits``) and printed whole with ``--report-only``.

    .venv/bin/python scripts/bench_cifar10_cpu.py                         # everything (hours)
    .venv/bin/python scripts/bench_cifar10_cpu.py --methods dpsh --bits 32  # one run (~10 min + caching)
    .venv/bin/python scripts/bench_cifar10_cpu.py --report-only             # the table of every chunk run so far
    .venv/bin/python scripts/bench_cifar10_cpu.py --num-query 100 --num-train 200 --num-database 500 \\
        --set image_size=64 --set max_iter=2 --out runs/bench-smoke           # a smoke test in minutes
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "cifar10-jpg.tar"
INCREMENTAL_SEEN = 7  # DIHN's CIFAR-10 split: airplane … frog seen, horse / ship / truck new


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from hashkit.registry import METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS.names()), help="comma-separated (default: every registered method)")
    parser.add_argument("--bits", default="16,32,48,64", help="comma-separated code lengths")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="CIFAR-10 location (default: ../shared/data/cifar10-jpg.tar)")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench-cifar10-cpu"), help="folder of the runs and bench.json")
    parser.add_argument("--cache-dir", default=None, help="hashkit cache (default: $HASHKIT_CACHE or ~/.cache/hashkit)")
    parser.add_argument("--num-query", type=int, default=None, help="smaller protocol for smoke tests")
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--num-database", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images while caching")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every run (e.g. --set max_iter=24 --set eta=1)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: one per core; 1 is faster when other jobs share the cores)")
    parser.add_argument("--speed", type=int, default=0, metavar="N",
                        help="only measure caching variants on N images (threads, batch, workers, naive baseline) and exit")
    parser.add_argument("--no-context", action="store_true", help="skip the cosine / LSH context rows")
    parser.add_argument("--lazy-cache", action="store_true",
                        help="skip the up-front caching of every image: each run caches what it lacks when it needs it "
                             "(training images first, the database at evaluation), e.g. while another process fills the cache")
    parser.add_argument("--overwrite", action="store_true", help="retrain runs that already finished in --out")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: print the table of what bench.json in --out holds (every earlier invocation)")
    return parser.parse_args(argv)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[key.strip().replace("-", "_")] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key.strip().replace("-", "_")] = text
    return out


def base_config(args: argparse.Namespace, method: str, bits: int, out: Path, **extra: Any) -> dict[str, Any]:
    """The flags of one ``hashkit train --recipe cpu`` run (hashkit.config.resolve_config fills in the rest)."""
    return {
        "method": method, "code_length": bits, "dataset": "cifar10", "root": args.root, "seed": args.seed,
        "num_query": args.num_query, "num_train": args.num_train, "num_database": args.num_database,
        "cache_dir": args.cache_dir, "num_workers": args.num_workers, "out": str(out), "overwrite": True,
        "recipe": "cpu", "metrics": "map", **parse_overrides(args.set), **extra,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ context


def cosine_map(query: torch.Tensor, database: torch.Tensor, q_labels: np.ndarray, db_labels: np.ndarray) -> float:
    """mAP@ALL of ranking the database by cosine similarity (ties by database index)."""
    q = torch.nn.functional.normalize(query.double(), dim=1)
    d = torch.nn.functional.normalize(database.double(), dim=1)
    relevant_all = torch.from_numpy(q_labels).double() @ torch.from_numpy(db_labels).double().t() > 0
    total = 0.0
    for lo in range(0, len(q), 100):
        scores = q[lo : lo + 100] @ d.t()
        order = torch.sort(-scores, dim=1, stable=True).indices
        relevant = torch.gather(relevant_all[lo : lo + 100], 1, order).double()
        hits = relevant.cumsum(1)
        ranks = torch.arange(1, relevant.shape[1] + 1, dtype=torch.float64)
        ap = (hits / ranks * relevant).sum(1) / relevant.sum(1).clamp_min(1)
        total += float(ap.sum())
    return total / len(q)


def context_rows(pipeline: Any, splits: Any, bits_list: list[int], seed: int) -> dict[str, Any]:
    """Cosine and LSH mAP@ALL of the frozen network's features (computed from the cache)."""
    from hashkit.evaluate import evaluate_codes
    from hashkit.model import binarize

    started = time.perf_counter()
    query = pipeline.features(splits.query, desc="features query")
    database = pipeline.features(splits.database, desc="features database")
    train = pipeline.features(splits.train, desc="features train")
    rows: dict[str, Any] = {"cosine": cosine_map(query, database, splits.query.labels, splits.database.labels)}
    mean = train.mean(0, keepdim=True)
    for bits in bits_list:
        planes = torch.randn(query.shape[1], bits, generator=torch.Generator().manual_seed(seed))
        codes_q, codes_db = binarize((query - mean) @ planes), binarize((database - mean) @ planes)
        rows[f"lsh{bits}"] = evaluate_codes(codes_q, codes_db, splits.query.labels, splits.database.labels, metrics=["map"])["map"]
    rows["seconds"] = time.perf_counter() - started
    return rows


# ------------------------------------------------------------------------------------------------ speed


def speed_table(args: argparse.Namespace) -> str:
    """Caching throughput of the frozen prefix for several variants on the same images (nothing cached)."""
    import copy

    from hashkit.pipeline import train_from_index
    from hashkit.config import resolve_config
    from hashkit.data.base import ImageDataset
    from hashkit.feature_cache import compute_activations
    from hashkit.model import build_model
    from hashkit.run import build_splits
    from hashkit.transforms import build_transform

    config = resolve_config(base_config(args, "dpsh", 32, Path(args.out)))
    pool = build_splits(config).extra["pool"]
    images = pool.subset(np.linspace(0, len(pool) - 1, args.speed).astype(int))
    model = build_model(config["arch"], 32, pretrained=True).eval()
    start = train_from_index(config, model)
    prefix, spec, size = model.backbone[:start], model.backbone.input_spec, int(config["image_size"])
    cpu = torch.device("cpu")

    def naive(batch_size: int, channels_last: bool, workers: int) -> None:
        """ImagePipeline-style: torchvision transform per image, the prefix as it is."""
        loader = torch.utils.data.DataLoader(
            ImageDataset(images, build_transform(spec, size, train=False)), batch_size=batch_size, num_workers=workers
        )
        net = copy.deepcopy(prefix)
        with torch.inference_mode():
            for x, _, _ in loader:
                net(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    def fast(batch_size: int, workers: int, precision: str = "fp32") -> None:
        for _ in compute_activations(
            prefix, images, image_size=size, interpolation=spec.interpolation, mean=spec.mean, std=spec.std,
            batch_size=batch_size, num_workers=workers, device=cpu, channels_last=True, precision=precision,
            desc="speed",
        ):  # fmt: skip
            pass

    variants = [
        ("naive: torchvision transform, NCHW, batch 250", lambda: naive(250, False, 0)),
        ("transform in 1 worker, channels_last, batch 250", lambda: naive(250, True, 1)),
        ("PIL→uint8, BN folded, channels_last, batch 250", lambda: fast(250, 0)),
        ("PIL→uint8, BN folded, channels_last, batch 32", lambda: fast(32, 0)),
        ("the same, decoding in 1 worker", lambda: fast(32, 1)),
        ("the same, bf16 autocast (not used: see docs)", lambda: fast(32, 0, "bf16")),
    ]
    default_threads = torch.get_num_threads()
    lines = [f"Caching speed, {len(images)} images at {size} px, prefix = stages before {config['train_from']}",
             "", "| variant | threads | img/s | img per CPU-s |", "|---|---|---|---|"]  # fmt: skip
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for name, run in variants:
            started, cpu_started = time.perf_counter(), time.process_time()
            run()
            wall, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
            lines.append(f"| {name} | {threads} | {len(images) / wall:.0f} | {len(images) / cpu_s:.0f} |")
            print(lines[-1], flush=True)
    torch.set_num_threads(default_threads)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ runs


def run_once(config: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Train one config (or reuse its finished result.json); the result plus the wall time."""
    from hashkit.atomic import atomic_write_json
    from hashkit.run import train

    result_path = Path(config["out"]) / "result.json"
    if result_path.exists() and not overwrite:
        previous = json.loads(result_path.read_text())
        if previous.get("status") == "finished":
            return {**previous, "wall_s": previous.get("bench_wall_s"), "cpu_s": previous.get("bench_cpu_s"), "reused": True}
    started, cpu = time.perf_counter(), time.process_time()
    result = train(config)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    atomic_write_json(result_path, {**json.loads(result_path.read_text()), "bench_wall_s": wall, "bench_cpu_s": cpu})
    return {**result, "wall_s": wall, "cpu_s": cpu, "reused": False}


def bench_method(method: str, bits: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One table cell: the method's run(s) at ``bits`` with the per-method handling described above."""
    from hashkit.run import evaluate

    if method == "dihn":
        adsh = run_once(
            base_config(args, "adsh", bits, out / f"adsh-seen{INCREMENTAL_SEEN}-{bits}", num_seen=INCREMENTAL_SEEN),
            args.overwrite,
        )
        dihn = run_once(
            base_config(args, "dihn", bits, out / f"dihn-{bits}", num_seen=INCREMENTAL_SEEN,
                        init_from=str(Path(adsh["config"]["out"]) / "checkpoint.pt")),
            args.overwrite,
        )  # fmt: skip
        return {
            "map": dihn["map"], "wall_s": _sum(adsh["wall_s"], dihn["wall_s"]), "cpu_s": _sum(adsh["cpu_s"], dihn["cpu_s"]),
            "note": f"incremental ({INCREMENTAL_SEEN} seen classes): ADSH(seen) mAP {adsh['map']:.4f} → DIHN; DIHN by "
            f"group {json.dumps({k: round(v, 4) for k, v in (dihn['metrics'].get('map_by_group') or {}).items()})}",
            "timings": dihn.get("timings"), "reused": adsh["reused"] and dihn["reused"],
        }  # fmt: skip
    result = run_once(base_config(args, method, bits, out / f"{method}-{bits}"), args.overwrite)
    cell = {key: result.get(key) for key in ("map", "wall_s", "cpu_s", "timings", "reused")}
    topk = result["metrics"].get("topk")
    if topk:  # e.g. SSDH's own protocol (mAP@5000): report mAP@ALL as well, comparable with the others
        started = time.perf_counter()
        at_all = evaluate(str(Path(result["config"]["out"]) / "checkpoint.pt"), {"topk": 0})
        cell.update(map=at_all["map"], note=f"mAP@{topk} {result['map']:.4f} (its protocol); table: mAP@ALL",
                    wall_s=_sum(result["wall_s"], time.perf_counter() - started))  # fmt: skip
    return cell


def method_order(method: str) -> int:
    from hashkit.registry import METHODS

    names = METHODS.names()
    return names.index(method) if method in names else len(names)


def method_recipe_values(methods: list[str]) -> str:
    """'; dhn: lamda=0.1' — what the recipe sets per method (HashingMethod.recipes["cpu"])."""
    from hashkit.registry import METHODS

    parts = [f"{m}: " + ", ".join(f"{k}={v}" for k, v in METHODS.get(m).recipes.get("cpu", {}).items())
             for m in methods if METHODS.get(m).recipes.get("cpu")]  # fmt: skip
    return "; " + "; ".join(parts) if parts else ""


def overrides_text(overrides: dict[str, Any] | None) -> str:
    """'; --set (wins over the above): max_iter=20, freeze_depthwise=True' — a probe's own values, so that a
    table made with --set never reads as the recipe's."""
    if not overrides:
        return ""
    return "; --set (wins over the above): " + ", ".join(f"{k}={v}" for k, v in overrides.items())


def _sum(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from hashkit.atomic import atomic_write_json
    from hashkit.config import resolve_config
    from hashkit.data.base import ImageCollection
    from hashkit.feature_cache import item_keys
    from hashkit.model import build_model
    from hashkit.registry import METHODS
    from hashkit.run import build_pipeline, build_splits

    if args.speed:
        print(speed_table(args))
        return 0
    methods = [METHODS.canonical(m) for m in args.methods.split(",") if m.strip()]
    bits_list = [int(b) for b in args.bits.split(",") if b.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Invocations accumulate in OUT/bench.json: cells and context rows of earlier ones are kept.
    previous = load_summary(out / "bench.json")
    cells: dict[str, dict[int, dict[str, Any]]] = previous.get("runs", {})
    if args.report_only:  # no model, no data: the table of what earlier invocations measured
        if not cells:
            raise SystemExit(f"error: {out / 'bench.json'} holds no runs; run the benchmark into --out {out} first")
        wanted = sorted({b for row in cells.values() for b in row})
        print(render(previous["protocol"], previous["config"], previous["caching"], previous.get("context"), cells, wanted))
        return 0

    # 1. The one-time caching, for every image of the protocol (the union of its splits).
    config = resolve_config(base_config(args, "dpsh", bits_list[0], out))
    splits = build_splits(config)
    model = build_model(config["arch"], bits_list[0], pretrained=bool(config["pretrained"]))
    pipeline = build_pipeline(config, model, torch.device("cpu"))
    union = ImageCollection.concatenate([splits.train, splits.query, splits.database], source=splits.train.source)
    started, cpu = time.perf_counter(), time.process_time()
    if not args.lazy_cache:
        pipeline.locate(union)
    caching = {"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
               "computed": pipeline.computed, "images": len(set(item_keys(union)))}  # fmt: skip
    caching["img_per_s"] = caching["computed"] / caching["seconds"] if caching["computed"] else None
    caching["lazy"] = bool(args.lazy_cache)
    logger.info(f"caching: {caching}")
    if (args.lazy_cache or not caching["computed"]) and (previous.get("caching") or {}).get("computed"):
        caching = previous["caching"]  # report the invocation that did the one-time caching

    # 2. Context: the frozen features by cosine and by LSH (for the bit lengths not measured before).
    context = previous.get("context")
    wanted = sorted({*bits_list, *(b for row in cells.values() for b in row)})
    missing = [b for b in wanted if f"lsh{b}" not in (context or {})]
    if not args.no_context and missing:
        context = {**(context or {}), **context_rows(pipeline, splits, missing, args.seed)}
    del pipeline, model

    # 3. The runs.
    overrides = parse_overrides(args.set)  # a probe's --set values, shown in the table and bench.json
    for method in methods:
        for bits in bits_list:
            try:
                cells.setdefault(method, {})[bits] = bench_method(method, bits, args, out)
            except Exception as exc:  # noqa: BLE001 - report the failure, go on with the other runs
                logger.exception(f"{method} {bits} bits failed")
                cells.setdefault(method, {})[bits] = {"map": None, "wall_s": None, "note": f"failed: {exc}"}
            summary = {"config": {k: config.get(k) for k in ("arch", "image_size", "train_from", "max_iter", "lr",
                       "hash_lr_mult", "lr_schedule", "batch_size", "weight_decay", "optimizer", "encode_flip", "seed")}
                       | {"threads": torch.get_num_threads(), "overrides": overrides},
                       "protocol": splits.protocol, "caching": caching, "context": context, "runs": cells}  # fmt: skip
            atomic_write_json(out / "bench.json", json.loads(json.dumps(summary, default=str)))
    print(render(splits.protocol, {**config, "threads": torch.get_num_threads(), "overrides": overrides},
                 caching, context, cells,
                 sorted({b for row in cells.values() for b in row})))
    return 0


def load_summary(path: Path) -> dict[str, Any]:
    """An earlier invocation's bench.json (bit lengths back to ints), or {} when there is none."""
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    summary["runs"] = {m: {int(b): cell for b, cell in row.items()} for m, row in summary.get("runs", {}).items()}
    return summary


def render(protocol: str, config: dict[str, Any], caching: dict[str, Any], context: dict[str, Any] | None,
           cells: dict[str, dict[int, dict[str, Any]]], bits_list: list[int]) -> str:  # fmt: skip
    """The markdown report: mAP table, wall-time table, notes."""
    threads = config.get("threads") or "?"
    lines = [
        f"## CIFAR-10 on the CPU ({threads} torch threads), --cpu-recipe",
        "",
        f"Protocol: {protocol}. Recipe: {config['arch']} at {config['image_size']} px, train from "
        f"{config['train_from']}, {config['max_iter']} epochs, {config['optimizer']} lr {config['lr']} "
        f"({config['lr_schedule']}), hash layer ×{config['hash_lr_mult']}, batch {config['batch_size']}"
        f"{', flip-averaged encoding' if config.get('encode_flip') else ''}{method_recipe_values(list(cells))}"
        f"{overrides_text(config.get('overrides'))}.",
        "",
        ("One-time caching: left to the runs (--lazy-cache; their wall times include what they cached)" if caching.get("lazy") else
         f"One-time caching: {caching['computed']} of {caching['images']} images computed in "
         f"{minutes(caching['seconds'])} min"
         + (f" ({caching['img_per_s']:.0f} img/s; {minutes(caching['cpu_s'])} CPU-min)" if caching["img_per_s"] else " (all reused from the cache)")),
        "",
        "| mAP@ALL | " + " | ".join(f"{b} bits" for b in bits_list) + " |",
        "|---|" + "---|" * len(bits_list),
    ]
    cells = {m: cells[m] for m in sorted(cells, key=method_order)}
    for method, row in cells.items():
        values = [row.get(b, {}).get("map") for b in bits_list]
        lines.append(f"| {method} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in values) + " |")
    if context:
        lines.append("| *cosine, frozen real-valued features* | " + " | ".join(f"{context['cosine']:.4f}" for _ in bits_list) + " |")
        lsh = [context.get(f"lsh{b}") for b in bits_list]
        lines.append("| *LSH on the frozen features* | " + " | ".join("–" if v is None else f"{v:.4f}" for v in lsh) + " |")
    lines += ["", "| wall time per run, min (CPU-min) | " + " | ".join(f"{b} bits" for b in bits_list) + " |", "|---|" + "---|" * len(bits_list)]
    for method, row in cells.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{minutes(row.get(b, {}).get('wall_s'))} ({minutes(row.get(b, {}).get('cpu_s'))})"
            + (" reused" if row.get(b, {}).get("reused") else "") for b in bits_list) + " |")  # fmt: skip
    notes = [f"- {m} {b} bits: {c['note']}" for m, row in cells.items() for b, c in row.items() if c.get("note")]
    if context:
        notes.append(f"- context rows computed from the cache in {minutes(context.get('seconds'))} min")
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
