"""The trained Wan experts as one module, so that one forward (through DDP, or over the
experts' FSDP shards) computes a whole step's loss: every trained parameter is used by
every step (each sample trains every trained expert), as DDP without unused-parameter
search needs."""

from __future__ import annotations

import torch


class VideoModel(torch.nn.Module):
    def __init__(self, experts: dict, scene):
        super().__init__()
        self.experts = torch.nn.ModuleDict(experts)
        self.scene = scene  # the SceneAttention the experts' processors read

    def forward(self, jobs: list) -> torch.Tensor:
        """The mean over jobs of the flow-matching MSE over the frames each job's mask keeps."""
        total = 0.0
        for job in jobs:
            self.scene.shots, self.scene.prompts = job.shots, job.prompts
            prediction = self.experts[job.expert](hidden_states=job.inputs, timestep=job.timestep,
                                                  encoder_hidden_states=job.prompt, return_dict=False)[0]
            error = (prediction.float() - job.target.float()).square() * job.loss_mask
            total = total + error.sum() / (job.loss_mask.sum() * error[0, :, 0].numel())
        return total / len(jobs)
