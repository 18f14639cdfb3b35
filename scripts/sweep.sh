#!/usr/bin/env bash
# Train every METHOD × code length × SEED with `hashkit train`, then tabulate them with `hashkit report`.
#
# Edit the variables below, or set them in the environment, e.g.
#   ROOT=data/cifar10-jpg.tar METHODS="dpsh hashnet" BITS="16 32" SEEDS="0 1 2" scripts/sweep.sh
#   HASHKIT=.venv/bin/hashkit EXTRA="--image-size 64 --max-iter 3" scripts/sweep.sh   # a quick CPU sweep
#
# Each run goes to $OUT/$DATASET/<method>-<bits>b-seed<seed>/ (result.json, checkpoint.pt, train.log).
# Seeds are the outer loop, so a complete one-seed table exists early. A run whose result.json says
# "finished" is skipped, so an interrupted sweep resumes where it stopped (RERUN=1 trains them again;
# change OUT when you change EXTRA, or the old finished runs are kept). A run that failed or never
# finished is trained again in place (--overwrite). A failing run does not stop the sweep: it is recorded
# in $OUT/sweep.tsv, its output stays in its train.log, and the sweep exits 1 after the report.
# Ctrl-C stops the sweep (exit 130). DRY_RUN=1 prints the commands without running them.
set -uo pipefail

METHODS="${METHODS:-dpsh dhn hashnet}"    # methods to train (`hashkit train --help`; DIHN needs --from, so not here)
BITS="${BITS:-16 32 48 64}"               # code lengths
SEEDS="${SEEDS:-0 1 2}"                   # each seed draws its own split, initialisation and batch order
DATASET="${DATASET:-cifar10}"
ROOT="${ROOT:-}"                          # dataset location, passed as --root (a tar, archive or folder)
OUT="${OUT:-runs/sweep}"                  # runs go to $OUT/$DATASET/...; `hashkit report $OUT` tabulates them
EXTRA="${EXTRA:-}"                        # more `hashkit train` flags for every run, e.g. "--gpu 0" or
                                          # "--image-size 64 --max-iter 3" (split on spaces, no quoting)
HASHKIT="${HASHKIT:-hashkit}"             # e.g. .venv/bin/hashkit or "python -m hashkit"
RERUN="${RERUN:-0}"                       # 1: train again runs that already finished
DRY_RUN="${DRY_RUN:-0}"                   # 1: only print the commands

read -ra HK <<<"$HASHKIT"
read -ra METHOD_LIST <<<"$METHODS"
read -ra BIT_LIST <<<"$BITS"
read -ra SEED_LIST <<<"$SEEDS"
read -ra EXTRA_ARGS <<<"$EXTRA"

die() { echo "sweep: error: $*" >&2; exit 2; }

[ ${#METHOD_LIST[@]} -gt 0 ] && [ ${#BIT_LIST[@]} -gt 0 ] && [ ${#SEED_LIST[@]} -gt 0 ] \
  || die "METHODS, BITS and SEEDS must each name at least one value"
ROOT_ARGS=()
if [ -n "$ROOT" ]; then
  [ -e "$ROOT" ] || die "ROOT=$ROOT does not exist; set ROOT to the dataset location (a tar, archive or folder)"
  ROOT_ARGS=(--root "$ROOT")
elif [[ " $EXTRA " != *" --download "* ]]; then
  die "set ROOT to the dataset location (at the top of $0 or in the environment), or add --download to EXTRA"
fi
if [ "$DRY_RUN" != 1 ]; then
  "${HK[@]}" --version >/dev/null 2>&1 || die "cannot run '$HASHKIT'; set HASHKIT (e.g. HASHKIT=.venv/bin/hashkit)"
  mkdir -p "$OUT" || die "cannot create OUT=$OUT"
  SUMMARY="$OUT/sweep.tsv"
  [ -s "$SUMMARY" ] || printf 'time\trun\tstatus\texit\tseconds\tlog\n' >"$SUMMARY"
fi

total=$(( ${#METHOD_LIST[@]} * ${#BIT_LIST[@]} * ${#SEED_LIST[@]} ))
count=0
failed=()
for seed in "${SEED_LIST[@]}"; do
  for method in "${METHOD_LIST[@]}"; do
    for bits in "${BIT_LIST[@]}"; do
      count=$((count + 1))
      dir="$OUT/$DATASET/${method}-${bits}b-seed${seed}"
      cmd=("${HK[@]}" train --method "$method" --code-length "$bits" --seed "$seed" --dataset "$DATASET"
           "${ROOT_ARGS[@]}" --out "$dir")
      if [ -f "$dir/result.json" ]; then
        if [ "$RERUN" != 1 ] && grep -Eq '"status": *"finished"' "$dir/result.json"; then
          echo "sweep: [$count/$total] $dir: finished before, skipped (RERUN=1 trains it again)" >&2
          [ "$DRY_RUN" = 1 ] || printf '%s\t%s\tskipped\t\t\t\n' "$(date -Iseconds)" "$dir" >>"$SUMMARY"
          continue
        fi
        cmd+=(--overwrite)
      fi
      cmd+=("${EXTRA_ARGS[@]}")
      if [ "$DRY_RUN" = 1 ]; then
        echo "${cmd[*]}"
        continue
      fi
      echo "sweep: [$count/$total] ${cmd[*]}" >&2
      mkdir -p "$dir"
      log="$dir/train.log"
      started=$SECONDS
      "${cmd[@]}" 2>&1 | tee "$log"
      rc=${PIPESTATUS[0]}
      seconds=$((SECONDS - started))
      if [ "$rc" -eq 130 ]; then
        printf '%s\t%s\tinterrupted\t%s\t%s\t%s\n' "$(date -Iseconds)" "$dir" "$rc" "$seconds" "$log" >>"$SUMMARY"
        echo "sweep: interrupted during $dir; run the same command again to resume" >&2
        exit 130
      fi
      if [ "$rc" -eq 0 ]; then
        status=finished
      else
        status=failed
        failed+=("$dir (exit $rc, log $log)")
        echo "sweep: $dir failed (exit $rc); continuing, see $log" >&2
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -Iseconds)" "$dir" "$status" "$rc" "$seconds" "$log" >>"$SUMMARY"
    done
  done
done

[ "$DRY_RUN" = 1 ] && exit 0

echo "sweep: done; report of $OUT (also in $OUT/report.md):" >&2
"${HK[@]}" report "$OUT" | tee "$OUT/report.md"
if [ ${#failed[@]} -gt 0 ]; then
  echo "sweep: ${#failed[@]} of $total runs failed:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
exit 0
