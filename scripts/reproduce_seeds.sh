#!/usr/bin/env bash
# Reproduce the seeds' tables on a GPU: every seed row (method × bits × dataset) with the seed's protocol
# and recipe (`--recipe seed`, the default), then one table with `hashkit report` (map and best_map).
#
#   CIFAR10=data/cifar10-jpg.tar scripts/reproduce_seeds.sh                 # the CIFAR-10 rows
#   CIFAR10=… FLICKR25K=… IMAGENET100=… COCO=… NUSWIDE21=… scripts/reproduce_seeds.sh
#   DRY_RUN=1 CIFAR10=x scripts/reproduce_seeds.sh                            # print the commands only
#
# Rows (each seed's README table; a dataset whose variable is unset is skipped):
#   DPSH    (TreezzZ/DPSH_PyTorch, 5961d82)  cifar10 12/24/32/48 bits, mAP@ALL
#   DHN     (TreezzZ/DHN_PyTorch)            cifar10 16/32/48/128 bits, mAP@ALL
#   HashNet (thuml/HashNet pytorch/)         imagenet100 (mAP@1000), coco and nuswide21 (mAP@5000), 16/32/48/64
#   ADSH → DIHN (IIE-MR/DIHN)                cifar10 incremental, 7 seen classes, 12/24/32/48 bits, mAP@ALL
#   SSDH    (TreezzZ/SSDH_PyTorch)           cifar10 and flickr25k 16/32/64/128 bits, mAP@5000
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
SEEDS="${SEEDS:-0}"
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
  for seed in $SEEDS; do
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
      for seed in $SEEDS; do
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

[ "$DRY_RUN" = 1 ] && exit 0
for metric in map best_map; do
  "${HK[@]}" report "$OUT" --metric "$metric" | tee "$OUT/table-$metric.md"
done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed runs:\n'; printf '  %s\n' "${failed[@]}"; exit 1
fi
