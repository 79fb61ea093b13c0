#!/bin/bash
# The GPU check, as one script for a machine with one CUDA device (see the docs' Performance page): the CUDA paths
# of the cache loader against the CPU; `aidetect bench` for efficientnet_b0 at 224 px, batch 256, bf16 +
# channels_last, compile off then on, on 8,192 photo-size JPEGs; a 1-GPU torchrun run of `fit`. Results go to $OUT
# (benchmarks/bench-nvidia-h200.json holds the H200 figures).
set -x
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 AIDETECT_CACHE=/tmp/aidc
PY=python3
echo 'import sys; from aidetect.cli import main; main(sys.argv[1:])' > /tmp/aidetect_main.py
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
$PY -c "import torch, timm, torchvision; print(torch.__version__, timm.__version__, torchvision.__version__, torch.cuda.get_device_name())"
time $PY -c "from aidetect.synthetic import make_photo_dataset; make_photo_dataset('/tmp/photos', n=8192)"
du -sh /tmp/photos
# 1. CUDA augmentation equals the CPU one (gather crop+flip, flip-only, blur/JPEG shapes), loader on CUDA
$PY - <<'PY'
import torch
from aidetect.augment import augment_batch, epoch_plan
from aidetect.cache import prepare_cache
from aidetect.loader import CacheLoader
x = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8)
for size in (7, 10):
    plan = epoch_plan(6, torch.Generator().manual_seed(0))
    assert torch.equal(augment_batch(x.cuda(), plan, torch.arange(6), size).cpu(), augment_batch(x, plan, torch.arange(6), size))
p2 = epoch_plan(6, torch.Generator().manual_seed(1), aug_blur=1.0, aug_jpeg=1.0)
print("blur+jpeg on cuda:", augment_batch(x.cuda(), p2, torch.arange(6), 10).shape)
c = prepare_cache("demo", img_size=64, progress=False)
g = c.good()
a = list(CacheLoader(c, g.cache_index[:256], 64, 56, "cuda", train=True, generator=torch.Generator().manual_seed(3), threads=2))
b = list(CacheLoader(c, g.cache_index[:256], 64, 56, "cpu", train=True, generator=torch.Generator().manual_seed(3)))
assert all(torch.equal(u[0].cpu(), v[0]) and torch.equal(u[1].cpu(), v[1]) for u, v in zip(a, b))
print("CUDA loader == CPU loader: OK")
PY
# 2. the benchmark, compile off: (a), (b), (c) and the preparation with 16 processes
time $PY /tmp/aidetect_main.py bench --data /tmp/photos --arch efficientnet_b0 --img-size 224 --batch-size 256 \
  --device cuda --steps 30 --warmup 5 --threads 6 --num-workers 15 --compile off --prepare-num-workers 16 \
  --cache /tmp/photos-cache --json-path "$OUT/bench-off.json"
# 3. a 1-GPU torchrun run of fit (DDP path, NCCL, rank-0 writes) on the demo
time $PY -m torch.distributed.run --standalone --nproc-per-node 1 /tmp/aidetect_main.py train -q -p data demo \
  -p arch resnet10t -p img_size 64 -p epochs 3 -p batch_size 256 -p lr 0.01 -p threads 4 -p wandb_mode disabled \
  -p out_dir /tmp/ddp-run && cp /tmp/ddp-run/run.json "$OUT/ddp-run.json" && cp /tmp/ddp-run/history.csv "$OUT/ddp-history.csv"
# 4. compile on: (a) and (b) (minutes of warm-up)
time $PY /tmp/aidetect_main.py bench --data /tmp/photos --arch efficientnet_b0 --img-size 224 --batch-size 256 \
  --device cuda --steps 30 --warmup 5 --threads 6 --compile on --no-jpeg --prepare-num-workers "" \
  --cache /tmp/photos-cache --json-path "$OUT/bench-on.json"
# 5. the Kaggle-size rehearsal, scaled to fit one 10-minute command (the full run is --n 80000): decoding on the
#    device (no prepare step), then from the cache; stage times to benchmarks/rehearsal-*.json
time $PY benchmarks/rehearsal.py --n 20000 --input device --threads 12 --root /tmp/rehearsal --json-path "$OUT/rehearsal-device.json"
time $PY benchmarks/rehearsal.py --n 20000 --input cache --threads 6 --root /tmp/rehearsal --json-path "$OUT/rehearsal-cache.json"
