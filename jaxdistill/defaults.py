"""The base ConfigDict every experiment config in `configs/` starts from: neutral, no recipe's settings.

Sections: teacher, student, recipe, pruning, data, train, mesh, sharding_rules, multihost, metrics, export,
debug. Each module documents its own section's fields (`objectives.base_recipe_config`,
`pruning.default_pruning_config`, `data.default_data_config`); the rest are documented here.

The recipe is the neutral `objectives.base_recipe_config()` (no name, every term off: an experiment must pick
one, e.g. `c.recipe = jaxdistill.configs.homodistil.recipe()`) and pruning is off; each
`jaxdistill/configs/<recipe>.py` sets its paper's recipe, student and, for HomoDistil, pruning.
"""
from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """Every section at its neutral default (see the module doc); the recipe has no name and no active term."""
    from jaxdistill import objectives, pruning
    from jaxdistill.data import default_data_config

    c = ml_collections.ConfigDict()
    # The teacher: a Hugging Face BERT directory (or hub id when online). `tokenizer` defaults to `path`.
    c.teacher = ml_collections.ConfigDict({"path": "", "tokenizer": ""})
    # The student: "copy" (HomoDistil), "layers" (copy these 0-indexed teacher layers), "random".
    # `overrides` are BertConfig fields applied to the teacher's config (e.g. num_hidden_layers for "random").
    # Task data only (data.kind="task", `jaxdistill.task_distill`): `kind` "bert" or "bilstm" (sizes in `bilstm`);
    # init "pretrained" starts from the BERT directory `path` (e.g. a HomoDistil export).
    from jaxdistill.task_distill import default_bilstm_config
    c.student = ml_collections.ConfigDict({"init": "copy", "layers": (), "overrides": {}, "kind": "bert", "path": "",
                                           "bilstm": default_bilstm_config()})
    c.recipe = objectives.base_recipe_config()
    c.pruning = pruning.default_pruning_config()
    c.pruning.enabled = False  # HomoDistil's configs turn it on
    c.data = default_data_config()
    c.train = ml_collections.ConfigDict(dict(
        steps=1000,             # optimizer updates
        batch_size=256,         # global sequences per update (all processes, all micro-batches)
        accum_steps=1,          # micro-batches per update (gradient accumulation with lax.scan)
        lr=6e-4, warmup_steps=100, decay="linear",  # linear warm-up, then linear/cosine decay or constant
        b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, grad_clip=1.0,
        seed=0,
        dropout=True,           # student dropout (the teacher always runs deterministically)
        dtype="float32",        # activation dtype; "bfloat16" on TPU/GPU (params, losses and softmax stay f32)
        # bool-or-name fields (field_type=object, so an override may give either):
        remat=ml_collections.FieldReference(False, field_type=object),  # false/"none", true/"full", "dots_saveable"
        scan_layers=ml_collections.FieldReference(False, field_type=object),  # true, false, "auto" (>= 12 layers)
        vocab_chunk_tokens=0,   # > 0: MLM logits and their losses computed ~this many tokens at a time; 0 = whole
        log_every=50, eval_every=0, eval_batches=2,
        eval_per_batch=False,   # also log each held-out batch's eval/kl and eval/mlm (lists), e.g. for bootstrap CIs
        checkpoint_every=500, keep_checkpoints=3, async_checkpoint=True,
    ))
    # Mesh axis sizes; -1 = the rest of the devices. Rules map logical axes to mesh axes (None = default table).
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding_rules = ml_collections.FieldReference(None, field_type=list)
    # Multi-host: initialize=True starts jax.distributed, which detects Slurm, TPU pods, Kubernetes and Open MPI;
    # the other fields (unset = detected) override it, e.g. on loopback (launch/local_multihost.sh).
    c.multihost = ml_collections.ConfigDict(dict(
        initialize=False, coordinator_address="",
        num_processes=ml_collections.FieldReference(None, field_type=int),
        process_id=ml_collections.FieldReference(None, field_type=int),
        local_device_ids=ml_collections.FieldReference(None, field_type=list)))
    c.metrics = ml_collections.ConfigDict(dict(peak_flops=0.0, tensorboard=True, progress=True))
    c.export = ml_collections.ConfigDict(dict(enabled=True, dir="export", overwrite=False, own_format=False))
    c.debug = ml_collections.ConfigDict(dict(nan_at_step=ml_collections.FieldReference(None, field_type=int)))
    return c
