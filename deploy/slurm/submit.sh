#!/usr/bin/env bash
# Usage: CONVCACHE_HOME=/path/to/convcache DATA=/shared/images OUT=/shared/cache/run-1 ./submit.sh
set -euo pipefail
cd "$(dirname "$0")"
export CONVCACHE_HOME DATA OUT
array=$(sbatch --parsable --export=ALL extract-array.sbatch)
array=${array%%;*}
sbatch --parsable --export=ALL --dependency=afterok:"$array" merge.sbatch
