#!/usr/bin/env bash
# A complete eplb session: look at a trace, plan it, write the placement,
# reload and score it on the next window, gate on it, export it for engines.
# Run from the repository root after `pip install -e .`; writes into $OUT (default: a temp folder).
set -euo pipefail
OUT=${OUT:-$(mktemp -d)}
TRACE=traces/deepseek-v3-synthetic.safetensors

# 1. What is in the trace?
eplb inspect "$TRACE" --top 3

# 2. Plan on the first 12 windows for 32 GPUs in 4 nodes; write eplb's own file.
eplb plan "$TRACE" --gpus 32 --nodes 4 --windows 0:12 -o "$OUT/plan.safetensors" --force

# 3. Reload it and score it on the windows that follow (what serving would see);
#    fail (exit 1) if the GPU imbalance is above 1.5.
eplb evaluate "$OUT/plan.safetensors" "$TRACE" --windows 12:24 --max-imbalance 1.5

# 4. Next period: plan again, keeping experts where they are when that is free.
eplb plan "$TRACE" --gpus 32 --nodes 4 --windows 12:24 --previous "$OUT/plan.safetensors" \
    -o "$OUT/plan2.safetensors" --force --json > "$OUT/plan2.json"
python -c "import json,sys; d=json.load(open(sys.argv[1])); print('moved', d['moves'], 'replicas; imbalance', d['gpu_imbalance'])" "$OUT/plan2.json"

# 5. Export for the engines and read one back.
eplb convert "$OUT/plan2.safetensors" "$OUT/init_expert_location.json" --force    # SGLang --init-expert-location
eplb convert "$OUT/plan2.safetensors" "$OUT/moe_load_balancer.yaml" --force       # TensorRT-LLM
python - "$OUT/plan2.safetensors" <<'PY'
import sys
import eplb_cli

placement = eplb_cli.load_placement(sys.argv[1])
print("reloaded", tuple(placement.phy2log.shape), "phy2log;", int(placement.logcnt.max()), "replicas of the hottest expert")
PY
echo "files in $OUT"
