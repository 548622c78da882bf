"""`engine: fsdp`: a full fine-tune's parameters, gradients and AdamW moments sharded over
every launched process with torch's FSDP2 (`fully_shard`), the same on CPU (gloo) and
CUDA (NCCL). accelerate's FSDP plugin is not used: accelerate switches to FSDP for GPU
processes only, so on CPU it silently ran DDP.

Each transformer block is one unit (its weights gathered just before it runs and freed
after), the rest of each trained expert another. With `cp` above 1 the data-parallel
groups of cp processes still shard over the whole world: FSDP's reduce-scatter averages
the gradients over all processes as DDP's all-reduce does, so the loop's cp scaling holds.

What leaves the shards goes through here, collectively: the gradient norm (global, as
unsharded), and full state dicts for checkpoints and the saved model (gathered on every
process into rank 0's CPU memory; rank 0 writes them in the DDP path's formats) and back.
"""

from __future__ import annotations


def wanted(config, processes: int) -> bool:
    """Shard when the config asks for it and there is more than one process (one process
    holds everything anyway, and runs without a process group)."""
    return getattr(config, "engine", "ddp") == "fsdp" and processes > 1


def shard(units, accelerator, bf16: bool) -> None:
    """`units`: (module, its blocks) pairs, best left on the CPU: each is moved to the
    device as it is sharded, so no GPU ever holds a whole 14B expert. With bf16, FSDP
    gathers and computes in bf16 over fp32 master weights and reduces gradients in fp32;
    inputs are not cast (`cast_forward_inputs=False`): accelerate's autocast runs the
    forward as it does DDP's, so the timestep, for one, reaches Wan's sinusoidal embedding
    in fp32."""
    import warnings

    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Wan returns its prediction as a view; the loss and the renders only read it (an
    # in-place op on it would skip FSDP's backward hook, which this warns of).
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,), mesh_dim_names=("shard",))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                  cast_forward_inputs=False) if bf16 else MixedPrecisionPolicy()
    for module, blocks in units:
        for block in blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)


def local_parameters(params) -> int:
    """How many of the parameters' elements this process holds."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)


def clip_grad_norm_(params, max_norm: float):
    """Clip by the global norm of the sharded gradients; returns it (a plain tensor, the
    norm of the unsharded gradients). Collective."""
    import torch
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):  # each process's partial norm, reduced over the shards
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def _options(**flags):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **flags)


def full_state(model) -> dict:
    """The model's whole state dict (names as `model.named_parameters()`), on rank 0's CPU;
    empty on the other processes. Collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    # An unevenly sharded parameter comes back as a view into its padded gather, which
    # huggingface_hub's writer refuses (a tensor not covering its storage): its own copy.
    return {k: v if v.untyped_storage().nbytes() == v.nbytes else v.clone() for k, v in state.items()}


def full_optimizer_state(model, optimizer) -> dict:
    """AdamW's whole state on rank 0 (empty elsewhere), in `optimizer.state_dict()`'s layout
    (parameters by position), as the DDP path saves it. Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not state:
        return {}
    # torch names the parameters; their order in the groups is the optimizer's own.
    order = {name: i for i, name in enumerate(n for group in state["param_groups"] for n in group["params"])}
    return {"state": {order[name]: value for name, value in state["state"].items()},
            "param_groups": [{**group, "params": [order[n] for n in group["params"]]} for group in state["param_groups"]]}


def load(model, optimizer, trainable: dict, optimizer_state: dict) -> None:
    """Rank 0's full model and optimizer states (the others pass empty dicts), broadcast and
    kept as each process's shards. Collective."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    options = _options(broadcast_from_rank0=True)
    set_model_state_dict(model, trainable, options=options)
    if optimizer_state:  # by position, as saved: back to the parameters' names
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        optimizer_state = {"state": {names[i]: value for i, value in optimizer_state["state"].items()},
                           "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                                            for group in optimizer_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
