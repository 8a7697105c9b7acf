#!/bin/bash
# The GPU screens as they ran on a lent H200 machine, MAXJ jobs at once with one CPU thread each; at
# DEADLINE seconds every job still running is stopped (its last.ckpt resumes anywhere) and the run
# folders are packed into $OUT.
#   SCREEN=classifier (issue 13, README "GPU screen"): the four levers, the best recipe's window seeds and
#     the twelve variants;
#   SCREEN=vae (issue 15, README "Generation"): LSTM-VAE recipes on the real normal ECGs (normal_ecg),
#     each stopped by VAE_TIME (trainer.max_time) if its epochs have not ended, then tested.
# It runs from a folder G (this script's) prepared beside the repository:
#   git archive HEAD | tar -x -C G/code                      # the committed code, not the working tree
#   python ../shared/tools/ecgpack.py pack ../shared/data/physionet2017/training2017 G/pn2017.xz
#   tar cJf G/ptbxl.tar.xz -C ../shared/data ptbxl          # SCREEN=vae only
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d G/whl hydra-core omegaconf \
#     neurokit2 PyWavelets captum wfdb soundfile   (+ pip wheel antlr4-python3-runtime==4.9.3)
# env: SCREEN, VAE_SET (1|2), VAE_EPOCHS, VAE_TIME, DEADLINE (s), MAXJ, ACCEL (gpu|cpu), EXTRA (overrides for every job), PY, ONLY (a regex of jobs)
set -u
T0=$(date +%s); DEADLINE=${DEADLINE:-470}; MAXJ=${MAXJ:-14}; ACCEL=${ACCEL:-gpu}; EXTRA=${EXTRA:-}; PY=${PY:-python3}
SCREEN=${SCREEN:-classifier}; VAE_TIME=${VAE_TIME:-00:00:05:30}
G=$(cd "$(dirname "$0")" && pwd); R=${RUNS_DIR:-/tmp/gpu_runs}; OUT=${OUT:-/tmp/out}; mkdir -p "$R/abl" "$OUT"
say() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
if [ -d "$G/whl" ] && [ "$ACCEL" = gpu ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$G"/whl/*.whl || exit 3
  export PYTHONPATH=$G/code:/tmp/site
else export PYTHONPATH=$G/code; fi
export ECG_LAB_DATA=${ECG_LAB_DATA:-/tmp/data} ECG_LAB_CACHE=${ECG_LAB_CACHE:-/tmp/cache} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
cd "$G/code" || exit 4  # python -m puts the current folder first on sys.path: run the committed snapshot
$PY -c "import torch, ecg_lab.train, ecg_lab.aggregate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 4
$PY -c "import neurokit2, ecg_lab; print('neurokit2', neurokit2.__version__, ecg_lab.__file__)" 
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nproc
[ -f "$ECG_LAB_DATA/physionet2017/training2017/REFERENCE.csv" ] || $PY "$G/tools/ecgpack.py" unpack "$G/pn2017.xz" "$ECG_LAB_DATA/physionet2017/training2017" || exit 5
if [ "$SCREEN" = vae ]; then
  [ -d "$ECG_LAB_DATA/ptbxl" ] || tar xJf "$G/ptbxl.tar.xz" -C "$ECG_LAB_DATA" || exit 5
  $PY -c "import sklearn, threadpoolctl; print('sklearn', sklearn.__version__)" || exit 6  # the gmm sampler
  # the cleaned waveforms once (NeuroKit2), before the jobs share them through the cache
  $PY -m ecg_lab.train experiment=lstm_vae data=normal_ecg trainer=$ACCEL threads=1 trainer.max_epochs=1 \
    +trainer.limit_train_batches=1 +trainer.limit_val_batches=1 +trainer.limit_test_batches=1 hydra.run.dir=$R/warm > $R/warm.log 2>&1 || { tail -20 $R/warm.log; exit 7; }
fi
say "ready"
train() { local name=$1; shift; $PY -m ecg_lab.train trainer=$ACCEL threads=1 hydra.run.dir=$R/$name $EXTRA "$@" > $R/$name.log 2>&1; say "done $name rc=$?"; }
best() {  # make best's two stages
  local s=$1; train best_s$s experiment=physionet2017_best seed=$s || return
  local ck; ck=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["ckpt_path"])' $R/best_s$s/test_metrics.json) || return
  $PY -m ecg_lab.aggregate aggregator=bigru seed=$s threads=${AGG_THREADS:-4} hydra.run.dir=$R/best_s$s/aggregate ckpt_path=$ck > $R/best_s$s.agg.log 2>&1
  say "done best_s$s aggregate rc=$?"
}
vae_q=(  # name, then overrides on top of: experiment=lstm_vae data=normal_ecg data.batch_size=64 (floor -4)
  "l16" "l32 model.net.latent_dim=32" "l64 model.net.latent_dim=64" "l128 model.net.latent_dim=128"
  "l64_lv6 model.net.latent_dim=64 model.net.min_logvar=-6 model.net.init_logvar=-6"
  "l64_lvnone model.net.latent_dim=64 model.net.min_logvar=null model.net.init_logvar=-6"
  "l64_pw30 model.net.latent_dim=64 loss.peak_weight=30"
  "l64_dh256 model.net.latent_dim=64 model.net.decoder_hidden=256"
  "l64_b1e-4 model.net.latent_dim=64 loss.beta.beta_max=1e-4"
  "l64_s1 model.net.latent_dim=64 seed=1"
  "raw_l32 data.input=raw model.net.latent_dim=32" "raw_l64 data.input=raw model.net.latent_dim=64"
  "raw_l64_lv6 data.input=raw model.net.latent_dim=64 model.net.min_logvar=-6 model.net.init_logvar=-6"
)
vae_q2=(  # VAE_SET=2: the output heads, 18 epochs (VAE_EPOCHS=18), without a test (DEADLINE cuts it)
  "s2_l32 model.net.latent_dim=32" "s2_l32_sc model.net.latent_dim=32 model.net.head=step_conv"
  "s2_l32_sps5 model.net.latent_dim=32 model.net.samples_per_step=5"
  "s2_l32_sc_sps5 model.net.latent_dim=32 model.net.head=step_conv model.net.samples_per_step=5"
  "s2_l32_lv6 model.net.latent_dim=32 model.net.min_logvar=-6 model.net.init_logvar=-6"
  "s2_l32_sc_lv6 model.net.latent_dim=32 model.net.head=step_conv model.net.min_logvar=-6 model.net.init_logvar=-6"
  "s2_l64_sc_lv6 model.net.latent_dim=64 model.net.head=step_conv model.net.min_logvar=-6 model.net.init_logvar=-6"
  "s2_l32_sc_hc32 model.net.latent_dim=32 model.net.head=step_conv model.net.head_channels=32"
  "s2_l32_k5 model.net.latent_dim=32 model.net.head_kernel=5"
  "s2_l32_sc_k5 model.net.latent_dim=32 model.net.head=step_conv model.net.head_kernel=5"
  "s2_raw_l32_sc data.input=raw model.net.latent_dim=32 model.net.head=step_conv"
  "s2_raw_l32_sc_lv6 data.input=raw model.net.latent_dim=32 model.net.head=step_conv model.net.min_logvar=-6 model.net.init_logvar=-6"
  "s2_l32_sc_pw3 model.net.latent_dim=32 model.net.head=step_conv loss.peak_weight=3"
  "s2_l32_sc_b1e-4 model.net.latent_dim=32 model.net.head=step_conv loss.beta.beta_max=1e-4"
)
# the floor experiment=lstm_vae had when the screens ran (-4; a job's own min_logvar comes later and wins)
vae() { local name=$1; shift; train vae/$name experiment=lstm_vae data=normal_ecg data.batch_size=64 \
  model.net.min_logvar=-4 model.net.init_logvar=-4 trainer.max_epochs=${VAE_EPOCHS:-40} +trainer.max_time=$VAE_TIME "$@"; }
source_vae() { train vae/source experiment=lstm_vae_normal_ecg trainer.max_epochs=${VAE_EPOCHS:-40} +trainer.max_time=$VAE_TIME; }
jobs_q=(
  "best 43" "best 44"
  "train lever_augment experiment=physionet2017_cnn_lstm seed=42 augment=default"
  "train lever_records_attention experiment=physionet2017_cnn_lstm seed=42 data=physionet2017_records model=attention"
  "train lever_150hz experiment=physionet2017_cnn_lstm seed=42 data=physionet2017_150hz"
  "train lever_rr experiment=physionet2017_cnn_lstm seed=42 features=rr"
  "best 42"
)
for s in 42 123 1; do for m in cnn_lstm cnn_lstm_ln cnn_only gru bilstm cnn_bilstm_seq24 cnn_lstm_meanpool cnn_lstm_seq16 lstm_only residual simple_lstm attention; do
  jobs_q+=("train abl/${m}_s$s data=physionet2017 model=$m seed=$s"); done; done
if [ "$SCREEN" = vae ]; then
  mkdir -p "$R/vae"; jobs_q=()
  if [ "${VAE_SET:-1}" = 2 ]; then for j in "${vae_q2[@]}"; do jobs_q+=("vae $j"); done
  else jobs_q=("source_vae"); for j in "${vae_q[@]}"; do jobs_q+=("vae $j"); done; fi
fi
[ -n "${ONLY:-}" ] && { q=(); for j in "${jobs_q[@]}"; do [[ $j =~ $ONLY ]] && q+=("$j"); done; jobs_q=("${q[@]}"); }
i=0
while [ $i -lt ${#jobs_q[@]} ] && [ $(( $(date +%s) - T0 )) -lt $(( DEADLINE - 120 )) ]; do
  while [ "$(jobs -rp | wc -l)" -ge "$MAXJ" ]; do sleep 2; [ $(( $(date +%s) - T0 )) -ge $DEADLINE ] && break 2; done
  say "start ${jobs_q[$i]}"; ${jobs_q[$i]} & i=$((i+1)); sleep 1
done
while [ "$(jobs -rp | wc -l)" -gt 0 ] && [ $(( $(date +%s) - T0 )) -lt $DEADLINE ]; do sleep 2; done
say "deadline or all done; stopping $(pgrep -fc "hydra.run.dir=$R/") jobs"
pkill -TERM -f "hydra.run.dir=$R/"; sleep 8; pkill -KILL -f "hydra.run.dir=$R/"; sleep 1
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
if [ "$SCREEN" = vae ]; then  # every run folder without checkpoints or figures (what comes back is small),
  tar czf $OUT/vae.tgz --exclude="*.ckpt" --exclude="*.html" --exclude="*.png" -C $R vae warm.log
  for d in $R/vae/*/; do  # then each best checkpoint as a file of its own (5-25 MB; the largest may not come back)
    b=$(ls "$d"checkpoints/best-*.ckpt 2>/dev/null | tail -1); [ -n "$b" ] && cp "$b" "$OUT/$(basename "$d").$(basename "$b")"
  done; ls -la $OUT; say "end"; exit 0
fi
for d in best_s43 best_s44 lever_augment lever_records_attention lever_150hz lever_rr best_s42; do  # last.ckpt only to resume
  ex=(); [ -f $R/$d/test_metrics.json ] && ex=(--exclude=last.ckpt)
  [ -d $R/$d ] && tar czf $OUT/$d.tgz "${ex[@]}" -C $R $d $d.log $( [ -f $R/$d.agg.log ] && echo $d.agg.log ); done
tar czf $OUT/abl.tgz --exclude="*.ckpt" --exclude=window_predictions.csv --exclude="*.html" -C $R abl
ls -la $OUT; say "end"
