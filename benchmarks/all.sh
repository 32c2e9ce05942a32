#!/bin/sh
# Every table of the README's "Current results", with the README's commands, one after another (`make bench`).
# About 10 hours on a 2-core machine (the sum of the parts' measured times; never run end to end in one go).
# Needs the shared data ($ALOEKIT_DATA_DIR, default ../shared/data). Each script writes
# benchmarks/results/<name>.{json,md} with the git sha and date; check.py then lists what is still stale.
# The machine should be otherwise idle: ratios are paired in-process, but absolute times are not.
set -eu
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
WORK=${WORK:-../runs/bench}
mkdir -p "$WORK"
step() { echo "== $(date -u +%H:%M:%S) $*"; "$@"; }

step "$PY" recipe_demo.py                                  # demo recipe from fresh clones, with the shared data
step "$PY" recipe_demo.py --runs 1 --no-data               # bundled sets only
step ../.venv/bin/aloekit run ../configs/demo.yaml --output "$WORK/demo"
step "$PY" demo_safety_dev.py "$WORK/demo"                 # the demo's safety stage on dev requests
step "$PY" eval_speed.py --limit 500 --dtype float32 --threads 1
step "$PY" eval_speed.py --limit 500 --dtype bfloat16 --threads 1 --out results/eval_speed_bf16
step "$PY" eval_speed.py --via lm-eval --dtype float32
step "$PY" eval_speed.py --via lm-eval --dtype bfloat16
step "$PY" openended.py
step "$PY" eval_default_model.py --full --threads 1
step "$PY" generation.py
step env OMP_NUM_THREADS=1 "$PY" train_speed.py
step "$PY" train_real.py
step "$PY" train_real.py --hh-dpo
step "$PY" merge_memory.py
step "$PY" merge_real.py --work "$WORK/merge_real"
step "$PY" data_speed.py
step env OMP_NUM_THREADS=1 "$PY" redteam.py --output "$WORK/redteam_demo"
step "$PY" safety_judges.py
step "$PY" safety_holdout.py --run-dir "$WORK/safety_holdout"
MP="--work $WORK/medprompt_real --threads 1"
step "$PY" medprompt_real.py --tasks pubmedqa --limit 40 --pool-limit 200 --name medprompt_real_pubmedqa $MP
step "$PY" medprompt_real.py --tasks headqa --limit 100 --pool-limit 400 --name medprompt_real_headqa $MP
step "$PY" medprompt_real.py --name medprompt_real --merge medprompt_real_pubmedqa medprompt_real_headqa
# the README's Medprompt speed and stop-rule rows: a 64-question HEAD-QA train pool, 128-token chains, one retry at T 0.7
step "$PY" -m aloekit.cli medprompt build-db --pool headqa --limit 64 --max-new-tokens 128 \
    --set 'retry_temperatures=[0.0,0.7]' -o "$WORK/mp_db_headqa_64"
step "$PY" medprompt_speed.py --db "$WORK/mp_db_headqa_64" --limit 30 --stop-risk ''
step "$PY" medprompt_speed.py --db "$WORK/mp_db_headqa_64" --limit 0 --risk-mode replay --name medprompt_stop_risk
step "$PY" rag.py --sizes 10000,100000
step "$PY" serve.py
step "$PY" check.py
