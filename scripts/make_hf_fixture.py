#!/usr/bin/env python3
"""Parity fixtures for xy, made with transformers' LlamaForCausalLM and LlamaTokenizer.

Run on a machine with PyTorch and transformers (not the CI machine); commit what it writes.
See docs/INTEROP.md.

  # The tiny model, its inputs, logits, loss and every parameter gradient (tests/hf_parity_test):
  python3 scripts/make_hf_fixture.py --out tests/fixtures/hf_tiny

  # Tokenizer ids for tests/tokenizer_parity_test (tokenizer.model from
  # scripts/fetch_llama_tokenizer.sh; sha256 checked here too):
  python3 scripts/make_hf_fixture.py --tokenizer build/assets/llama2-tokenizer.model --tokenizer-only

  # Check a folder that xy exported: transformers loads it and its logits on the input ids of
  # XY_LOGITS (a safetensors with input_ids I64 and logits F32, computed by xy) agree to 1e-4.
  python3 scripts/make_hf_fixture.py --check-export DIR --xy-logits DIR/xy_logits.safetensors

The model: hidden 64, intermediate 176, 3 layers, 8 heads over 2 KV heads (grouped), an odd
vocabulary of 611, rms_norm_eps 1e-5, rope_theta 10000, untied head, fp32, eager attention, on
the CPU (no TF32, no fused kernels), random weights with std 0.1 and norm weights 1 + N(0, 0.1)
so that every parameter matters. Inputs: ids [2, 17] from a fixed seed; labels = the inputs
(transformers shifts them). fixture.safetensors holds input_ids (I64 [2, 17]), logits (F32
[2, 17, 611]), loss (F32 [1]) and grad.<parameter name> (F32) for every parameter; with the model
itself that is about 1.8 MB (the vocabulary is 611 rather than ~1000 to stay under 2 MB).
"""
import argparse
import hashlib
import json
import os
import sys

SEED = 1234
TOKENIZER_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"

# Fixed strings for tokenizer parity, with their kind. "whitespace" strings (runs of spaces, a
# lone space) are where transformers' tokenizers-backed LlamaTokenizer (transformers >= 5) is known
# to split differently from SentencePiece; the test records rather than asserts those.
TOKENIZER_TEXTS = [
    ("english", "Hello world"),
    ("english", "The quick brown fox jumps over the lazy dog."),
    ("english", "It's 3:45 p.m.; don't forget the co-op's Q3 report (v2.1)!"),
    ("english", "line one\nline two\n\nline four\ttab"),
    ("chinese", "中国人民银行今日宣布下调存款准备金率0.5个百分点。"),
    ("chinese", "金融机构应当加强风险管理，防范系统性金融风险。"),
    ("chinese", "沪深300指数收报3,812.45点，上涨1.23%，成交额8,765亿元。"),
    ("mixed", "A股市场today表现strong，科技板块领涨，NVIDIA股价创新高。"),
    ("mixed", "2024年第3季度GDP同比增长4.6%，CPI上涨0.4%。"),
    ("mixed", "Ünïcödé façade — naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어"),
    ("digits", "1234567890 0.000123 3.14159265358979 1e-5 -42 +7 2,147,483,647"),
    ("digits", "phone: +86-10-6655-8888, ISBN 978-7-111-54742-6, 20240101"),
    ("emoji", "🚀📈💰 To the moon! 😀👍🏽 👨‍👩‍👧‍👦"),
    ("emoji", "股市大涨🎉🎉，投资者笑了😂"),
    ("whitespace", "  leading spaces, trailing space "),
    ("whitespace", "def f(x):\n    return x ** 2  # square"),
    ("whitespace", " "),
    ("whitespace", ""),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_model_fixture(out):
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    torch.set_default_dtype(torch.float32)
    config = LlamaConfig(
        vocab_size=611,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=64,
        initializer_range=0.1,
        tie_word_embeddings=False,
        attention_bias=False,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
    )
    try:
        model = LlamaForCausalLM._from_config(config, attn_implementation="eager")
    except TypeError:  # older transformers
        config._attn_implementation = "eager"
        model = LlamaForCausalLM(config)
    model = model.float().to("cpu").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))

    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, config.vocab_size, (2, 17), generator=g, dtype=torch.int64)
    out_ = model(input_ids=ids, labels=ids)
    out_.loss.backward()

    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)  # not needed by xy or the test
    tensors = {
        "input_ids": ids.contiguous(),
        "logits": out_.logits.detach().float().contiguous(),
        "loss": out_.loss.detach().float().reshape(1).contiguous(),
    }
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.detach().float().contiguous()
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": str(SEED),
        "what": "LlamaForCausalLM(eager, fp32, cpu): logits and loss for labels=input_ids, "
                "grad.<name> = d loss / d <name>",
    }
    save_file(tensors, os.path.join(out, "fixture.safetensors"), metadata=meta)

    # The saved folder reloads to the same logits (a check of save_pretrained, not of xy).
    again = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager",
                                             torch_dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (again(input_ids=ids).logits - out_.logits).abs().max().item()
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{out}: transformers {transformers.__version__}, torch {torch.__version__}; "
          f"loss {out_.loss.item():.6f}; {len(tensors) - 3} gradients; reload max abs diff {diff:.3g}; "
          f"{total} bytes in {sorted(os.listdir(out))}")
    if total > 2 << 20:
        sys.exit(f"fixture is {total} bytes, over the 2 MB budget")


def make_tokenizer_fixture(model_path, out):
    import shutil
    import tempfile

    import transformers
    from transformers import LlamaTokenizer

    got = sha256(model_path)
    if got != TOKENIZER_SHA256:
        sys.exit(f"{model_path}: sha256 {got}, expected {TOKENIZER_SHA256} (Llama-2 tokenizer.model)")
    tmp = tempfile.mkdtemp()
    shutil.copy(model_path, os.path.join(tmp, "tokenizer.model"))
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer"}, f)
    # "sentencepiece": the SentencePiece-backed (slow) tokenizer; "llama_tokenizer": what
    # transformers.LlamaTokenizer.from_pretrained gives for a folder holding tokenizer.model
    # (transformers >= 5: tokenizers-backed, converted from the model; 4.x: the slow one, whose
    # fast counterpart is recorded as "fast").
    tokenizers = {}
    if hasattr(transformers, "SentencePieceBackend"):  # transformers >= 5
        tokenizers["sentencepiece"] = transformers.SentencePieceBackend(vocab_file=model_path)
        tokenizers["llama_tokenizer"] = LlamaTokenizer.from_pretrained(tmp)
    else:
        tokenizers["sentencepiece"] = LlamaTokenizer(vocab_file=model_path, legacy=True)
        tokenizers["llama_tokenizer"] = LlamaTokenizer.from_pretrained(tmp, legacy=True)
        try:
            from transformers import LlamaTokenizerFast
            tokenizers["fast"] = LlamaTokenizerFast.from_pretrained(tmp, legacy=True, from_slow=True)
        except Exception as e:  # conversion needs sentencepiece + protobuf; optional
            print(f"LlamaTokenizerFast unavailable: {e}")
    for name, tok in tokenizers.items():
        ids = tok.encode("Hello world", add_special_tokens=False)
        if ids != [15043, 3186]:
            sys.exit(f"{name} ({type(tok).__name__}) encodes 'Hello world' as {ids}, not "
                     f"[15043, 3186]: this transformers version needs another way to load it")

    cases = []
    for kind, text in TOKENIZER_TEXTS:
        case = {"kind": kind, "text": text}
        for name, tok in tokenizers.items():
            case[name] = tok.encode(text, add_special_tokens=False)
        cases.append(case)
    doc = {
        "what": "ids without BOS/EOS (add_special_tokens=False) of the Llama-2 tokenizer.model: "
                "'sentencepiece' from the SentencePiece-backed tokenizer, 'llama_tokenizer' from "
                "transformers.LlamaTokenizer.from_pretrained; for tests/tokenizer_parity_test.cpp",
        "tokenizer_sha256": TOKENIZER_SHA256,
        "transformers_version": transformers.__version__,
        "classes": {name: type(tok).__name__ for name, tok in tokenizers.items()},
        "cases": cases,
    }
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out}: {len(cases)} strings, transformers {transformers.__version__}, {doc['classes']}")
    for c in cases:
        if any(c[n] != c["sentencepiece"] for n in tokenizers):
            print(f"  differs ({c['kind']}): {c['text']!r}: " +
                  ", ".join(f"{n} {c[n]}" for n in tokenizers))


def check_export(folder, xy_logits):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ref = load_file(xy_logits)
    # The class named by config.json (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM).
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager",
                                                 torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=ref["input_ids"]).logits
    err = (logits - ref["logits"]).abs().max().item()
    print(f"{folder}: loaded by transformers as {type(model).__name__}; logits vs xy's: max abs error {err:.3g} "
          f"(max |logit| {ref['logits'].abs().max().item():.3g})")
    if not err <= 1e-4:
        sys.exit(1)


def check_tokenizer_export(folder, fixture):
    """An xy export that carries its run's tokenizer: transformers' AutoTokenizer loads it and gives
    tokenizers' ids of tests/fixtures/bpe_ids.json; config.json's and generation_config.json's
    bos/eos are the tokenizer's; AutoModelForCausalLM loads the folder and computes finite logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(folder)
    doc = json.load(open(fixture, encoding="utf-8"))
    family = "qwen3" if "<|endoftext|>" in tok.get_vocab() and "<|end_of_text|>" not in tok.get_vocab() else "llama3"
    bad = 0
    for case in doc["cases"]:
        if tok.encode(case["text"], add_special_tokens=False) != case[family]["ids"]:
            bad += 1
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    gen = GenerationConfig.from_pretrained(folder)
    want_eos = tok.convert_tokens_to_ids("<|end_of_text|>" if family == "llama3" else "<|endoftext|>")
    want_bos = tok.convert_tokens_to_ids("<|begin_of_text|>") if family == "llama3" else None
    ids = torch.tensor([c[family]["ids"][:8] for c in doc["cases"] if len(c[family]["ids"]) >= 8][:2])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    ok = (bad == 0 and model.config.eos_token_id == want_eos == gen.eos_token_id and
          model.config.bos_token_id == want_bos == gen.bos_token_id and bool(torch.isfinite(logits).all()))
    print(f"{folder}: {type(tok).__name__} + {type(model).__name__}; {len(doc['cases']) - bad} of "
          f"{len(doc['cases'])} texts give tokenizers' ids ({family}); bos/eos config "
          f"{model.config.bos_token_id}/{model.config.eos_token_id}, generation "
          f"{gen.bos_token_id}/{gen.eos_token_id}, expected {want_bos}/{want_eos}; logits finite "
          f"{bool(torch.isfinite(logits).all())}: {'ok' if ok else 'FAILED'}")
    if not ok:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/hf_tiny", help="model fixture folder")
    ap.add_argument("--tokenizer", help="Llama-2 tokenizer.model: also write the tokenizer fixture")
    ap.add_argument("--tokenizer-out", default="tests/fixtures/tokenizer_ids.json")
    ap.add_argument("--tokenizer-only", action="store_true", help="skip the model fixture")
    ap.add_argument("--check-export", metavar="DIR", help="check a folder exported by xy instead")
    ap.add_argument("--xy-logits", metavar="FILE", help="with --check-export: xy's input_ids and logits")
    ap.add_argument("--check-tokenizer-export", metavar="DIR",
                    help="check an export that carries a tokenizer.json (with tests/fixtures/bpe_ids.json)")
    a = ap.parse_args()
    if a.check_tokenizer_export:
        check_tokenizer_export(a.check_tokenizer_export, "tests/fixtures/bpe_ids.json")
        return
    if a.check_export:
        if not a.xy_logits:
            ap.error("--check-export needs --xy-logits")
        check_export(a.check_export, a.xy_logits)
        return
    if not a.tokenizer_only:
        make_model_fixture(a.out)
    if a.tokenizer:
        make_tokenizer_fixture(a.tokenizer, a.tokenizer_out)
    elif a.tokenizer_only:
        ap.error("--tokenizer-only needs --tokenizer")


if __name__ == "__main__":
    main()
