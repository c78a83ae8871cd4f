"""jaxdistill: task-agnostic distillation of BERT teachers in JAX/Flax, with HomoDistil prune-while-distill."""
__version__ = "0.1.0"
