"""Torch batches straight from in-memory uint8 arrays: one index slice per batch, no per-sample
Dataset/collate (which costs more than the model for 32x32 images), NHWC -> NCHW on the fly.

Order and augmentation come from `clsf.data.order.epoch_plan(seed, epoch)`, shared with tf.data, so
every engine (and a resumed run) sees the same batches. Under torchrun each process takes its share
of every global batch (`clsf.distributed.part`).
"""

from __future__ import annotations

import numpy as np

from clsf.data.order import batch_plans, epoch_plan
from clsf.data.stream import Files
from clsf.distributed import share
from clsf.data.transforms import Preprocess
from clsf.techniques import crop_flip
from clsf.errors import UserError


class Batches:
    """Iterable of (x float32 NCHW normalised, y int64) on `device`; training follows `epoch_plan`.

    `shard=(rank, processes)`: training steps through global batches of batch_size x processes
    images and yields this process's share of each (`loss_scale` weights its loss)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, pre: Preprocess, training: bool,
                 seed: int = 0, epoch: int = 0, device="cpu", first_step: int = 0, shard: tuple[int, int] = (0, 1),
                 workers: int = 0, classes: int = 0):
        import torch

        # (N, H, W, C) uint8: numpy's memory shared, a tensor already on the device (a GPU run keeps
        # the split there, so each batch is gathered on the device and nothing crosses the bus per step),
        # or image files (clsf.data.stream.Files) that DataLoader workers decode batch by batch
        self.x = x if torch.is_tensor(x) or isinstance(x, Files) else torch.from_numpy(x)
        self.workers = workers
        self.y = y if torch.is_tensor(y) else torch.from_numpy(y)
        self.batch_size, self.pre, self.training, self.device = batch_size, pre, training, device
        a, b = pre.affine(x.shape[-1])
        self.a = torch.from_numpy(a).to(device)[None, :, None, None]
        self.b = torch.from_numpy(b).to(device)[None, :, None, None]
        self.plan = epoch_plan(len(y), pre, seed, epoch) if training else None
        # batch techniques (mixup/cutmix: one process only, the partner of an image is in its own batch)
        self.techniques = batch_plans(len(y), batch_size, pre, seed, epoch, x.shape[1:3]) if training else []
        self.classes = classes
        self.rank, self.size = shard if training else (0, 1)
        self.step_images = batch_size * self.size  # the global batch
        self.first = first_step * self.step_images if training else 0  # a run resumed inside an epoch starts here

    def __len__(self) -> int:
        return (len(self.y) - self.first + self.step_images - 1) // self.step_images

    def _share(self, start: int) -> tuple[int, int, float]:
        """clsf.distributed.share of the global batch starting at `start`."""
        return share(start, min(start + self.step_images, len(self.y)), self.rank, self.size)

    def loss_scale(self, step: int) -> float:
        """What this process's summed per-image loss of epoch step `step` (counted from the epoch's
        start, also when resumed inside it) is multiplied by, so that DDP's average over processes is
        the global batch's mean loss: processes / global images; 0 for an empty share (one stand-in
        image, no weight)."""
        return self.size * self._share(step * self.step_images)[2]

    def __iter__(self):
        import torch

        n = len(self.y)
        order = torch.from_numpy(self.plan.order) if self.training else torch.arange(n)
        shares = [self._share(start)[:2] for start in range(self.first, n, self.step_images)]
        for (a, b), images in zip(shares, self._images(order, shares)):
            idx = order[a:b]
            xb = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            if self.training and self.pre.augments:
                aug = (torch.from_numpy(v[a:b]).to(self.device) for v in (self.plan.oy, self.plan.ox, self.plan.flip))
                xb = crop_flip.torch(xb, self.pre.crop_padding, *aug)
            xb, yb = xb * self.a + self.b, self.y[idx.to(self.y.device)].to(self.device, non_blocking=True)
            for t, plan in self.techniques:  # this process's share a:b, step from the epoch's start
                xb, yb = t.torch(xb, yb, t.part(plan, a, b, a // self.step_images), self.classes)
            yield xb, yb

    def _images(self, order, shares):
        """(b, H, W, C) uint8 per share: gathered from memory, or decoded from files by DataLoader
        workers, a batch of indices each, in order (prefetched two batches per worker)."""
        if not isinstance(self.x, Files):
            order = order.to(self.x.device)
            yield from (self.x[order[a:b]] for a, b in shares)
            return
        import torch
        from torch.utils.data import DataLoader

        batches = [order[a:b].tolist() for a, b in shares]
        # its own generator: DataLoader seeds its workers from one, which would otherwise be drawn from
        # the global generator and shift the dropout masks against the in-memory path
        loader = DataLoader(FileImages(self.x), batch_sampler=batches, num_workers=self.workers,
                            collate_fn=_stack, generator=torch.Generator().manual_seed(0))
        try:
            yield from loader
        except UserError as e:  # a bad file, raised in a worker: DataLoader puts the worker's traceback in the message
            raise UserError(str(e).strip().splitlines()[-1].removeprefix(f"{UserError.__module__}.UserError: ")) from None


def _stack(images: list[np.ndarray]):
    import torch

    return torch.from_numpy(np.stack(images))  # (b, H, W, C) uint8


class FileImages:
    """torch Dataset: image i of a Files as (H, W, C) uint8 numpy (decoded by PIL, as in memory)."""

    def __init__(self, files: Files):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.files.read(i)
