"""Models: jaxdistill's Flax BERT and Hugging Face checkpoint interop."""
from jaxdistill.models import hf
from jaxdistill.models.bert import Bert, BertConfig, BertOutput, init_params, logical_axes

__all__ = ["Bert", "BertConfig", "BertOutput", "hf", "init_params", "logical_axes"]
