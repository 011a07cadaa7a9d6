"""A fusion model (image CNN + bag of words, gated fusion) trained by 2 gloo processes under
torchrun gives the single-process weights: DDP through the shared Trainer with dict batches."""

from __future__ import annotations

import torch
from torch import nn

from modelfusion.examples.digit_instructions import digit_instructions, instruction_model, split_by_image
from modelfusion.training import Trainer

_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from torch import nn

from modelfusion.examples.digit_instructions import digit_instructions, instruction_model, split_by_image
from modelfusion.training import Trainer

work = sys.argv[1]
dist.init_process_group("gloo")
task = digit_instructions(per_image=1, seed=0)
train, test = split_by_image(task, per_image=1, seed=0)
train = train.subset(range(256))
torch.manual_seed(0)
model = instruction_model(task["vocabulary"], fusion="gated")
Trainer(model, nn.functional.cross_entropy, optimizer="sgd", lr=0.05, batch_size=64, max_epochs=2,
        seed=0, device="cpu", progress=False).fit(train)
if dist.get_rank() == 0:
    torch.save(model.state_dict(), f"{work}/state.pt")
dist.barrier()  # leave together: gloo torn down under a rank still working aborts it
dist.destroy_process_group()
"""


def test_two_processes_train_the_fusion_model_to_the_single_process_weights(tmp_path):
    from ..conftest import torchrun

    (tmp_path / "train.py").write_text(_SCRIPT)
    done = torchrun(tmp_path / "train.py", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = torch.load(tmp_path / "state.pt", weights_only=True)

    task = digit_instructions(per_image=1, seed=0)
    train, _ = split_by_image(task, per_image=1, seed=0)
    torch.manual_seed(0)
    model = instruction_model(task["vocabulary"], fusion="gated")
    Trainer(
        model,
        nn.functional.cross_entropy,
        optimizer="sgd",
        lr=0.05,
        batch_size=64,
        max_epochs=2,
        seed=0,
        device="cpu",
        progress=False,
    ).fit(train.subset(range(256)))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(ddp[name], tensor, rtol=0, atol=1e-5, msg=name)
