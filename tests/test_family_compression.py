"""Compression stages beyond BERT: a student cut from the teacher's layers, structured pruning (heads and FFN
neurons physically removed, the folder reloading with ``from_pretrained``) and vocabulary trimming, on tiny random
RoBERTa (byte-level BPE), XLM-RoBERTa (SentencePiece Unigram) and ModernBERT (its own BPE; fused Wqkv, GeGLU,
local/global attention by layer) models, and a recipe finetune -> distill -> prune -> trim_vocab packed to a verified
bundle for RoBERTa and ModernBERT."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from test_cross_tokenizer_distill import KEYWORDS, SPLITS_DATA, _rows, write_splits

LABELS = sorted(KEYWORDS)
#: words outside the training texts, so trimming has something to drop
EXTRA_WORDS = ["zebra", "quantum", "harbour", "violin", "meadow", "glacier", "lantern", "orbit", "pepper", "saddle"]
CORPUS = [r["text"] for r in _rows(200, 11)] + [" ".join(EXTRA_WORDS[i:] + EXTRA_WORDS[:i]) for i in range(10)]
SPECIALS = {"roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "xlm-roberta": ["<s>", "<pad>", "</s>", "<unk>"],
            "modernbert": ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]}


def tiny_tokenizer(model_type: str):
    """A tokenizer of the family's kind trained on a small corpus: byte-level BPE (RoBERTa, ModernBERT) or a
    SentencePiece-style Unigram (XLM-RoBERTa), with the family's special tokens and post-processing."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaTokenizer, XLMRobertaTokenizer

    if model_type not in SPECIALS:  # BERT's WordPiece
        from transformers import BertTokenizerFast

        words = sorted({w for text in CORPUS for w in text.split()})
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + [f"##{c}" for c in letters] + words
        inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if model_type not in ("distilbert", "mpnet") else [])
        return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=128,
                                 model_input_names=inputs)
    specials = SPECIALS[model_type]
    if model_type == "xlm-roberta":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials,
                                                                unk_token="<unk>"))
        vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
        return XLMRobertaTokenizer(vocab=vocab)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=330, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if model_type == "roberta":
        return RobertaTokenizer(vocab=model["vocab"], merges=merges)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_max_length=128)


def tiny_model(model_type: str, tokenizer, layers: int = 4):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    ids = {"pad_token_id": tokenizer.pad_token_id}
    extra = {"electra": {"embedding_size": 64}, "albert": {"embedding_size": 64}, "distilbert": {"hidden_dim": 128},
             # relative attention with its own position projections: the layout with the most to cut
             "deberta-v2": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "share_att_key": False,
                            "position_buckets": 16, "max_relative_positions": 32}}.get(model_type, {})
    if model_type == "modernbert":
        ids |= {"bos_token_id": tokenizer.cls_token_id, "cls_token_id": tokenizer.cls_token_id,
                "eos_token_id": tokenizer.sep_token_id, "sep_token_id": tokenizer.sep_token_id}
        extra = {"global_attn_every_n_layers": 2, "local_attention": 16}
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=128, max_position_embeddings=130,
                                  num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                                  label2id={l: i for i, l in enumerate(LABELS)}, **ids, **extra)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()


def _data():
    from packager.labelled_data import LabelledData, LabelledSplit

    def split(n: int, seed: int) -> LabelledSplit:
        rows = _rows(n, seed)
        return LabelledSplit([r["text"] for r in rows], [LABELS.index(r["intent"]) for r in rows])

    return LabelledData(train=split(48, 1), labels=LABELS, validation=split(16, 2), test=split(16, 3))


def _logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**batch).logits


FAMILIES_HERE = ["roberta", "xlm-roberta", "modernbert", "electra", "distilbert", "deberta-v2", "mpnet", "mobilebert"]
#: ALBERT, whose layers share one block, has no structured-pruning surgery and no student cut from its layers:
#: only trim_vocab applies


@pytest.mark.parametrize("model_type", FAMILIES_HERE + ["albert"])
def test_trim_vocab_keeps_the_kept_texts_tokenization_and_reloads(model_type, tmp_path):
    """The trimmed tokenizer gives the kept texts the same pieces (ids remapped), saves and reloads with
    AutoTokenizer, and the trimmed model's logits on them are unchanged."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from packager.stages.trim_vocab.algorithm import trim_vocab
    from packager.stages.trim_vocab.spec import TrimVocabSpec

    tokenizer = tiny_tokenizer(model_type)
    model = tiny_model(model_type, tokenizer, layers=2)
    texts = [r["text"] for r in _rows(40, 5)]
    before_ids = tokenizer(texts)["input_ids"]
    before = _logits(model, tokenizer, texts)
    trimmed, new_tok, details = trim_vocab(model, tokenizer, texts, TrimVocabSpec())
    assert details["vocab_after"] < details["vocab_before"] == len(tokenizer)
    trimmed.save_pretrained(tmp_path)
    new_tok.save_pretrained(tmp_path)
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded_tok) == details["vocab_after"]
    old_tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in before_ids]
    for tok in (new_tok, reloaded_tok):
        after_ids = tok(texts)["input_ids"]
        assert [tok.convert_ids_to_tokens(ids) for ids in after_ids] == old_tokens
        assert max(max(ids) for ids in after_ids) < details["vocab_after"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(_logits(reloaded, reloaded_tok, texts), before, atol=1e-5, rtol=1e-4)
    # words never seen still encode (byte alphabet / unknown piece), no error
    assert reloaded_tok("zebra quantum")["input_ids"]


@pytest.mark.parametrize("model_type", FAMILIES_HERE)
def test_structured_prune_removes_heads_and_neurons_and_the_folder_reloads(model_type, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from packager.families import family_of
    from packager.pruned_models import ARCHS
    from packager.stages.prune.algorithm import prune
    from packager.stages.prune.spec import PruneSpec
    from packager.training.common import count_params

    tokenizer = tiny_tokenizer(model_type)
    model = tiny_model(model_type, tokenizer)
    spec = PruneSpec(method="structured", heads=0.25, ffn=0.5, recovery=None, importance_batches=2, batch_size=8)
    pruned, details = prune(model, tokenizer, _data(), spec, seq_len=32, work_dir=tmp_path / "work")
    assert sum(details["heads_after"]) == 12 and details["ffn_after"] == 64
    assert pruned.config.model_type == ARCHS[family_of(model_type).name].model_type
    assert pruned.config.layer_heads == details["heads_after"]
    assert getattr(pruned.config, ARCHS[family_of(model_type).name].surgery.ffn_width) == 64
    assert count_params(pruned) < count_params(model)
    if model_type == "deberta-v2":  # its own position projections are cut with the heads
        from packager.training.common import encoder_layers

        assert [layer.attention.self.pos_key_proj.out_features for layer in encoder_layers(pruned)] == \
            [16 * h for h in details["heads_after"]]
    texts = [r["text"] for r in _rows(12, 4)]
    expected = _logits(pruned, tokenizer, texts)
    pruned.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned",
                                                                  attn_implementation="eager").eval()
    assert type(reloaded) is type(pruned) and count_params(reloaded) == count_params(pruned)
    torch.testing.assert_close(_logits(reloaded, tokenizer, texts), expected, atol=1e-5, rtol=1e-4)
    # a second prune of the pruned model cuts from its own (non-uniform) heads
    again, more = prune(reloaded, tokenizer, _data(), PruneSpec(method="structured", heads=0.25, ffn=0.25,
                                                                 recovery=None, importance_batches=1, batch_size=8),
                        seq_len=32, work_dir=tmp_path / "work2")
    assert more["heads_before"] == details["heads_after"] and sum(more["heads_after"]) == 9
    assert _logits(again, tokenizer, texts).shape == expected.shape


@pytest.mark.parametrize("model_type", FAMILIES_HERE)
def test_a_pruned_model_computes_the_original_with_its_removed_units_silenced(model_type):
    """Cutting is exact: the rebuilt model (other heads kept in each layer, fewer FFN neurons), and its twice-pruned
    successor, give the logits of the original model whose removed heads' contexts and FFN activations are zeroed
    (MPNet: each block then takes its own kept heads' columns of the shared relative-position bias)."""
    from packager.stages.prune.algorithm import pruned_arch, rebuild
    from packager.training.common import encoder_layers

    tokenizer = tiny_tokenizer(model_type)
    model = tiny_model(model_type, tokenizer).eval()
    surgery = pruned_arch(model).surgery
    head_size = surgery.head_size(model.config)
    width = surgery.intermediate(model.config)
    ffns = surgery.ffns(model.config)  # MobileBERT: 4 FFNs per block, each cut on its own
    keep_heads = [[0, 1, 2, 3], [1, 3], [0, 2, 3], [2]]
    keep_ffn = [list(range(width))[i % 2::2] for i in range(4 * len(ffns))]
    texts = [r["text"] for r in _rows(10, 7)]

    def silenced(heads: list[list[int]], neurons: list[list[int]]) -> torch.Tensor:
        hooks = []
        for layer, kept_heads in zip(encoder_layers(model), heads):
            head_mask = torch.zeros(model.config.num_attention_heads)
            head_mask[kept_heads] = 1
            hooks.append(layer.get_submodule(surgery.attention_output).register_forward_pre_hook(
                lambda mod, args, m=head_mask.repeat_interleave(head_size): (args[0] * m,)))
        outputs = [layer.get_submodule(out) for layer in encoder_layers(model) for _, out in ffns]
        for output, kept_neurons in zip(outputs, neurons, strict=True):
            ffn_mask = torch.zeros(width)
            ffn_mask[kept_neurons] = 1
            hooks.append(output.register_forward_pre_hook(lambda mod, args, m=ffn_mask: (args[0] * m,)))
        try:
            return _logits(model, tokenizer, texts)
        finally:
            for hook in hooks:
                hook.remove()

    pruned = rebuild(model, keep_heads, keep_ffn)
    assert pruned.config.layer_heads == [4, 2, 3, 1]
    torch.testing.assert_close(_logits(pruned, tokenizer, texts), silenced(keep_heads, keep_ffn), atol=1e-5, rtol=1e-4)
    # the second cut indexes the pruned model's own heads: layer 1 keeps its second (original head 3), etc.
    again = rebuild(pruned, [[1, 2], [1], [0], [0]], [list(range(width // 2))[::2]] * len(keep_ffn))
    if getattr(again.config, "layer_head_ids", None) is not None:
        assert again.config.layer_head_ids == [[1, 2], [3], [0], [2]]
    twice_heads = [[1, 2], [3], [0], [2]]
    twice_ffn = [[kept[i] for i in range(0, width // 2, 2)] for kept in keep_ffn]
    torch.testing.assert_close(_logits(again, tokenizer, texts), silenced(twice_heads, twice_ffn), atol=1e-5,
                               rtol=1e-4)


@pytest.mark.parametrize("model_type", FAMILIES_HERE)
def test_a_student_cut_from_all_the_teachers_layers_is_the_teacher(model_type):
    """The layer copy misses no tensor: the student cut from every layer in order computes the teacher's logits;
    one cut from fewer layers holds exactly the picked blocks."""
    from packager.stages.distill.student import student_from_layers
    from packager.training.common import encoder_layers

    tokenizer = tiny_tokenizer(model_type)
    teacher = tiny_model(model_type, tokenizer)
    texts = [r["text"] for r in _rows(8, 6)]
    whole = student_from_layers(teacher, [0, 1, 2, 3]).eval()
    torch.testing.assert_close(_logits(whole, tokenizer, texts), _logits(teacher, tokenizer, texts))
    cut = student_from_layers(teacher, [0, 3])
    assert cut.config.num_hidden_layers == 2 and len(encoder_layers(cut)) == 2
    for got, want in zip(encoder_layers(cut), [encoder_layers(teacher)[i] for i in (0, 3)]):
        for (name, a), (_, b) in zip(got.state_dict().items(), want.state_dict().items()):
            assert torch.equal(a, b), name


def test_modernbert_student_from_layers_keeps_each_blocks_attention_type():
    from packager.errors import EdgepackError
    from packager.stages.distill.student import student_from_layers

    tokenizer = tiny_tokenizer("modernbert")
    teacher = tiny_model("modernbert", tokenizer)
    assert teacher.config.layer_types == ["full_attention", "sliding_attention"] * 2
    student = student_from_layers(teacher, [0, 1, 3])
    assert student.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert [layer.attn.sliding_window is not None for layer in student.model.layers] == [False, True, True]
    torch.testing.assert_close(student.model.layers[2].mlp.Wi.weight, teacher.model.layers[3].mlp.Wi.weight)
    with pytest.raises(EdgepackError, match="must begin with layer 0"):
        student_from_layers(teacher, [1, 3])


@pytest.mark.slow
def test_a_model_pruned_to_one_head_in_a_layer_packs_to_tflite_int8(tmp_path):
    """litert-torch lowers a one-head attention's matmul to a fully connected op whose weight is an activation;
    the Hadamard recipe refused the whole model for it ("only supported for weight tensors"). Such ops are left
    float (they hold no weight) and the pack passes parity; an MPNet keeps its shared position bias per head."""
    from device_bench.manifest import Manifest
    from packager.calib import builtin_sample
    from packager.models import load_model
    from packager.pack import pack_model
    from packager.stages.prune.algorithm import rebuild

    tokenizer = tiny_tokenizer("mpnet")
    pruned = rebuild(tiny_model("mpnet", tokenizer).eval(), [[0, 1, 2, 3], [1, 3], [0, 2, 3], [2]],
                     [list(range(0, 128, 2))] * 4)
    pruned.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    result = pack_model(load_model(str(tmp_path / "model"), "sequence-classification"), tmp_path / "bundle",
                        ["tflite-int8", "onnx-int8"], 16, builtin_sample()[:12], force=True)
    assert {t.name: t.status for t in result.manifest.targets} == {"tflite-int8": "ok", "onnx-int8": "ok"}
    assert Manifest.load(tmp_path / "bundle").model.model_type == "edgepack_pruned_mpnet"


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["roberta", "modernbert", "mpnet"])
def test_a_recipe_finetune_distill_prune_trim_vocab_packs_to_a_verified_bundle(model_type, tmp_path):
    """The issue's recipe on a tiny model of the family, as a user runs it: every stage applies, the result
    reloads from the bundle's folder and packs with parity ok."""
    from device_bench.manifest import Manifest
    from packager.cli.recipe import pack_from_recipe

    tokenizer = tiny_tokenizer(model_type)
    teacher = tmp_path / "teacher"
    tiny_model(model_type, tokenizer).save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    write_splits(tmp_path, 96, 24)
    recipe = {"model": str(teacher), "task": "sequence-classification", "data": SPLITS_DATA,
              "seq_len": 32, "threads": 1, "calib_samples": 16, "targets": ["onnx-fp32"],
              "stages": [{"finetune": {"epochs": 3, "lr": 2.0e-3, "batch_size": 16}},
                         {"distill": {"student": {"layers": [0, 2, 3]}, "epochs": 2, "lr": 2.0e-3,
                                      "batch_size": 16}},
                         {"prune": {"method": "structured", "heads": 0.25, "ffn": 0.5, "importance_batches": 2,
                                    "batch_size": 16, "recovery": {"epochs": 1, "lr": 1.0e-3, "batch_size": 16}}},
                         {"trim_vocab": {"splits": ["train", "validation", "test"]}}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "bundle"
    assert pack_from_recipe(path, out, force=False, archive=False, progress=False) == 0
    manifest = Manifest.load(out)
    rows = {r["stage"]: r for r in manifest.stages}
    assert {"finetune", "distill", "prune", "trim_vocab"} <= set(rows)
    assert rows["prune"]["details"]["model_type"] == f"edgepack_pruned_{model_type}"
    assert sum(rows["prune"]["details"]["heads_after"]) == 9 and rows["prune"]["details"]["ffn_after"] == 64
    assert rows["trim_vocab"]["details"]["vocab_after"] < rows["trim_vocab"]["details"]["vocab_before"]
    assert manifest.model.model_type == f"edgepack_pruned_{model_type}"
    assert {t.name: t.status for t in manifest.targets} == {"onnx-fp32": "ok"}


def test_every_pruned_model_type_belongs_to_its_family():
    """A pruned folder's ``model_type`` maps back to its family (the packer's targets read it), with the same
    block layout; a family without a surgery refuses structured pruning in one line."""
    from packager.families import FAMILIES, check_support
    from packager.pruned_models import ARCHS

    for name, arch in ARCHS.items():
        assert arch.model_type in FAMILIES[name].model_types and arch.layers == FAMILIES[name].layers
        assert check_support(arch.model_type, "sequence-classification", ["onnx-fp32"], ["prune"]).name == name
    for name, family in FAMILIES.items():
        assert family.supports_stage("prune") == (name in ARCHS), name


@pytest.mark.slow
def test_a_deberta_v3_style_token_classifier_packs_to_every_declared_target(tmp_path):
    """DeBERTa-v2/v3 for token classification (PII tagging), with v3's relative attention (shared position key,
    c2p + p2c, LayerNorm'd relative embeddings): every target the family declares passes parity."""
    import transformers
    from transformers import AutoConfig, BertTokenizerFast

    from conftest import TINY_LABELS, tiny_vocab
    from packager.calib import builtin_sample
    from packager.families import FAMILIES, task_refusals
    from packager.models import load_model
    from packager.pack import pack_model

    folder = tmp_path / "model"
    vocab = tiny_vocab()
    config = AutoConfig.for_model(
        "deberta-v2", vocab_size=len(vocab), pad_token_id=0, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=128, max_position_embeddings=130, relative_attention=True,
        pos_att_type=["p2c", "c2p"], share_att_key=True, position_buckets=32, max_relative_positions=64,
        norm_rel_ebd="layer_norm", num_labels=len(TINY_LABELS), id2label=dict(enumerate(TINY_LABELS)),
        label2id={l: i for i, l in enumerate(TINY_LABELS)})
    torch.manual_seed(0)
    transformers.AutoModelForTokenClassification.from_config(config).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=128).save_pretrained(folder)
    targets = list(FAMILIES["deberta-v2"].targets)
    targets = [t for t in targets if t not in task_refusals("token-classification", targets)]  # mediapipe-text
    assert targets and "mediapipe-text" not in targets
    # buckets set, not auto (which adds 8 and 12): random weights give near-tied token logits, and at 8 tokens int8
    # flipped 3 of 96 tokens (agreement 0.969 < 0.98), which says nothing of the family's export
    result = pack_model(load_model(str(folder), "token-classification"), tmp_path / "bundle", targets, 32,
                        builtin_sample()[:20], allow_parity_failure=True, force=True, buckets=[16, 32])
    verdicts = {t.name: t.status if t.status == "ok" else f"{t.status}: {(t.error or '')[:160]}"
                for t in result.manifest.targets}
    assert verdicts == {name: "ok" for name in targets}
