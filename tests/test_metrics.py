"""FLOPs accounting against hand-computed counts, and effective widths from masks."""
import numpy as np

from jaxdistill import metrics, pruning
from tiny import tiny_config


def test_forward_flops_match_the_hand_formula_and_follow_the_masks():
    c = tiny_config()  # d=32, N=2, H=4, d_h=8, F=48, V=97
    L, d, F, V = 16, 32, 48, 97
    per_layer = 2 * L * d * d * 3 + 2 * L * L * d * 2 + 2 * L * d * d + 2 * L * d * F * 2
    head = 2 * L * d * d + 2 * L * d * V
    assert metrics.bert_forward_flops(c, L) == 2 * per_layer + head
    full = pruning.remaining_widths(pruning.init_masks(c))
    assert metrics.bert_forward_flops(c, L, full) == metrics.bert_forward_flops(c, L)

    masks = {k: np.asarray(v).copy() for k, v in pruning.init_masks(c).items()}
    masks["hidden"][16:] = 0            # d' = 16
    masks["ffn"][0, 24:] = 0            # layer 0 keeps 24 neurons
    masks["attn"][1, :, 4:] = 0         # layer 1 keeps 4 dims per head: inner width 16
    w = pruning.remaining_widths(masks)
    d2 = 16
    layer0 = 2 * L * d2 * d * 3 + 2 * L * L * d * 2 + 2 * L * d * d2 + 2 * L * d2 * 24 * 2
    layer1 = 2 * L * d2 * 16 * 3 + 2 * L * L * 16 * 2 + 2 * L * 16 * d2 + 2 * L * d2 * F * 2
    assert metrics.bert_forward_flops(c, L, w) == layer0 + layer1 + 2 * L * d2 * d2 + 2 * L * d2 * V
    step = metrics.distill_step_flops(c, c, 4, L, w)
    assert step == 4 * (metrics.bert_forward_flops(c, L) + 3 * metrics.bert_forward_flops(c, L, w))


def test_throughput_excludes_evaluation_time():
    meter = metrics.Throughput(peak_flops_per_device=1e9, num_devices=2)
    meter._t -= 2.0                      # two seconds have passed ...
    meter.exclude(1.0)                   # ... one of them spent evaluating
    out = meter.update(steps=4, tokens_per_step=100, flops_per_step=1e9)
    assert abs(out["perf/tokens_per_s"] - 400) / 400 < 0.05
    assert abs(out["perf/mfu"] - 4e9 / 2e9) / 2.0 < 0.05
