#!/usr/bin/env bash
# Reproduce the seeds' tables on a GPU: every seed row (method × bits × dataset) with the seed's protocol
# and recipe (`--recipe seed`, the default), as many runs (--seed 0, 1, …) as the seed's README averages,
# then one table with `hashkit report` (map and best_map): a cell is the mean ± sample std over those runs
# (n in parentheses), a single run its value alone.
#
#   CIFAR10=data/cifar10-jpg.tar scripts/reproduce_seeds.sh                 # the CIFAR-10 rows
#   CIFAR10=… FLICKR25K=… IMAGENET100=… COCO=… NUSWIDE21=… scripts/reproduce_seeds.sh
#   DRY_RUN=1 CIFAR10=x scripts/reproduce_seeds.sh                            # print the commands only
#   SEEDS="0 1 2 3 4" CIFAR10=… scripts/reproduce_seeds.sh                    # these seeds for every row
#
# Rows (each seed's README table; a dataset whose variable is unset is skipped), and the runs each averages:
#   DPSH    (TreezzZ/DPSH_PyTorch, 5961d82)  cifar10 12/24/32/48 bits, mAP@5000, mean of 3 runs (README.md:
#                                            "计算top 5000 mAP，跑3次，取平均" — top-5000 mAP, 3 runs, averaged)
#   DHN     (TreezzZ/DHN_PyTorch, 79ee001)   cifar10 16/32/48/128 bits, mAP@ALL, one run (no average stated)
#   HashNet (thuml/HashNet pytorch/)         imagenet100 (mAP@1000), coco and nuswide21 (mAP@5000), 16/32/48/64;
#                                            one run (its READMEs state no table or average)
#   ADSH → DIHN (IIE-MR/DIHN)                cifar10 incremental, 7 seen classes, 12/24/32/48 bits, mAP@ALL; one run
#   SSDH    (TreezzZ/SSDH_PyTorch)           cifar10 and flickr25k 16/32/64/128 bits, mAP@5000; one run
# The backbones (AlexNet, VGG16, ResNet50) come from torchvision's ImageNet download, cached under
# torch.hub's dir; without internet hashkit stops with an error naming `--weights PATH` (pass a local state
# dict through EXTRA="--weights PATH", one backbone at a time with METHODS=…).
#
# Each run goes to $OUT/<dataset>/<method>-<bits>b-seed<seed>/ (result.json, checkpoint.pt, train.log); a
# run whose result.json says "finished" is skipped, so the script resumes where it stopped. Full 224 px
# fine-tuning of AlexNet/VGG16/ResNet50 for the seeds' epochs takes hours per row on one GPU.
set -uo pipefail

HASHKIT="${HASHKIT:-hashkit}"            # e.g. .venv/bin/hashkit
OUT="${OUT:-runs/seeds}"
GPU="${GPU:-0}"
SEEDS="${SEEDS:-}"                       # empty: each row runs seeds 0 … (its README's runs − 1)
METHODS="${METHODS:-dpsh dhn hashnet adsh ssdh}"   # adsh includes the DIHN step that starts from it
EXTRA="${EXTRA:-}"                       # more flags for every run (split on spaces)
DRY_RUN="${DRY_RUN:-0}"
CIFAR10="${CIFAR10:-}"
FLICKR25K="${FLICKR25K:-}"
IMAGENET100="${IMAGENET100:-}"
COCO="${COCO:-}"
NUSWIDE21="${NUSWIDE21:-}"

read -ra HK <<<"$HASHKIT"
read -ra EXTRA_ARGS <<<"$EXTRA"
failed=()

seed_runs() {  # seed_runs METHOD: how many runs the seed's README averages (see the rows above)
  case "$1" in
    dpsh) echo 3 ;;
    *) echo 1 ;;
  esac
}

seeds_of() {  # seeds_of METHOD: $SEEDS if given, else 0 … seed_runs − 1
  if [ -n "$SEEDS" ]; then echo "$SEEDS"; else seq 0 $(($(seed_runs "$1") - 1)) | tr '\n' ' '; fi
}

run() {  # run OUTDIR ARGS… : train unless OUTDIR/result.json says finished
  local dir="$1"; shift
  if [ "$DRY_RUN" = 1 ]; then echo "${HK[*]} train $* --out $dir"; return 0; fi
  if grep -qs '"status": "finished"' "$dir/result.json"; then echo "skip (finished): $dir"; return 0; fi
  mkdir -p "$dir"
  echo "train: $dir"
  if ! "${HK[@]}" train "$@" --gpu "$GPU" --out "$dir" --overwrite "${EXTRA_ARGS[@]}" >"$dir/train.log" 2>&1; then
    failed+=("$dir"); echo "FAILED: $dir (see $dir/train.log)"
    return 1
  fi
}

rows() {  # rows METHOD DATASET ROOT "BITS" [FLAGS…]
  local method="$1" dataset="$2" root="$3" bits="$4"; shift 4
  [ -n "$root" ] || { echo "skip $method on $dataset: set ${dataset^^} to its location"; return 0; }
  for seed in $(seeds_of "$method"); do
    for b in $bits; do
      run "$OUT/$dataset/$method-${b}b-seed$seed" --method "$method" --dataset "$dataset" --root "$root" \
        --code-length "$b" --seed "$seed" --recipe seed "$@"
    done
  done
}

for method in $METHODS; do
  case "$method" in
    dpsh) rows dpsh cifar10 "$CIFAR10" "12 24 32 48" ;;
    dhn) rows dhn cifar10 "$CIFAR10" "16 32 48 128" ;;
    hashnet)
      rows hashnet imagenet100 "$IMAGENET100" "16 32 48 64"
      rows hashnet coco "$COCO" "16 32 48 64"
      rows hashnet nuswide21 "$NUSWIDE21" "16 32 48 64" ;;
    ssdh)
      rows ssdh cifar10 "$CIFAR10" "16 32 64 128"
      rows ssdh flickr25k "$FLICKR25K" "16 32 64 128" ;;
    adsh)  # ADSH on the 7 seen classes, then DIHN from its checkpoint (the seed's ADSH / +DIHN rows)
      [ -n "$CIFAR10" ] || { echo "skip adsh/dihn: set CIFAR10"; continue; }
      for seed in $(seeds_of adsh); do
        for b in 12 24 32 48; do
          adsh="$OUT/cifar10-incremental/adsh-${b}b-seed$seed"
          run "$adsh" --method adsh --dataset cifar10 --root "$CIFAR10" --num-seen 7 --code-length "$b" \
            --seed "$seed" --recipe seed \
            && run "$OUT/cifar10-incremental/dihn-${b}b-seed$seed" --method dihn --dataset cifar10 \
              --root "$CIFAR10" --num-seen 7 --code-length "$b" --seed "$seed" --recipe seed \
              --from "$adsh/checkpoint.pt"
        done
      done ;;
    *) echo "unknown method $method (dpsh dhn hashnet adsh ssdh)"; failed+=("$method") ;;
  esac
done

for metric in map best_map; do  # mean ± std over each row's seeds
  if [ "$DRY_RUN" = 1 ]; then echo "${HK[*]} report $OUT --metric $metric"; continue; fi
  "${HK[@]}" report "$OUT" --metric "$metric" | tee "$OUT/table-$metric.md"
done
[ "$DRY_RUN" = 1 ] && exit 0
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed runs:\n'; printf '  %s\n' "${failed[@]}"; exit 1
fi
