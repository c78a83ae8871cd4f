"""jaxdistill: task-agnostic distillation of BERT teachers in JAX/Flax, with HomoDistil prune-while-distill."""
__version__ = "0.1.0"

from jaxdistill import storage as _storage  # noqa: E402

_storage.configure_emulator()  # STORAGE_EMULATOR_HOST -> tensorstore and anonymous clients
