"""`clsf train` in this process -- under torchrun, with TF_CONFIG, or alone -- optionally with the share rule broken
on purpose, so the equivalence tests in test_distributed.py can show they catch it.

usage: python tests/ddp_worker.py SABOTAGE CLSF_TRAIN_ARGS...
  none              clsf as it is
  same-share        every process trains on rank 0's share of each global batch (torch and tf)
  mean-per-process  each process's loss is the mean over its own share (what a plain DDP loop
                    does), so an uneven last batch is weighted by process, not by image
"""

import sys

from clsf import cli
from clsf.data import tf_pipeline, torch_pipeline

sabotage, argv = sys.argv[1], sys.argv[2:]
if sabotage == "same-share":
    real = torch_pipeline.share
    torch_pipeline.share = tf_pipeline.share = lambda start, stop, rank, size: real(start, stop, 0, size)
elif sabotage == "mean-per-process":
    def mean_per_process(self, step):
        a, b, _ = self._share(step * self.step_images)
        return 1.0 / (b - a)

    torch_pipeline.Batches.loss_scale = mean_per_process
elif sabotage != "none":
    raise SystemExit(f"unknown sabotage {sabotage}")
sys.exit(cli.main(["train", *argv]))
