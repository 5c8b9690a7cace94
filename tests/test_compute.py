"""MACs per inference: the pack's count on the fp32 model against a hand count of a BERT encoder."""
from __future__ import annotations

import pytest

from conftest import random_token_inputs, tiny_bert_export_context
from device_bench.compute import MacsPerLength, gmac_per_s

pytest.importorskip("torch")


def test_counted_formula_matches_a_hand_count_of_the_encoder(tmp_path):
    from packager.compute import count_macs

    hidden, intermediate, layers = 64, 128, 2  # tiny_bert_export_context's BERT
    _, wrapper = tiny_bert_export_context(tmp_path, 16, random_token_inputs(2, 16, seed=1))
    macs = count_macs(wrapper, ["input_ids", "attention_mask"], 16)
    for length in (11, 16):  # 11: not one of the lengths the formula was fitted at
        projections = 4 * length * hidden * hidden + 2 * length * hidden * intermediate  # Q, K, V, O; FFN in, out
        attention = 2 * length * length * hidden  # scores and weighted sum, all heads
        pooler = hidden * hidden  # BertModel's pooler runs on [CLS] once
        assert macs.at(length) == layers * (projections + attention) + pooler
    assert "flop counter" in macs.how


def test_gmac_per_s():
    macs = MacsPerLength(per_token=1_000_000, per_token_pair=0, fixed=0)
    assert gmac_per_s(macs.at(20), 2.0) == 10.0
    assert gmac_per_s(5, None) is None and gmac_per_s(5, 0.0) is None
