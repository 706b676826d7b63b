// Tests of the config loader's refusals: one test per kind of mistake, each asserting the
// file:line:col, the dotted key and the hint of the message (and printing the message, so that
// the test log shows what users will read); the ranges of the numeric keys, [control], [faults],
// model.init_from, and what users see of a LibTorch error.
#include "io/config.hpp"
#include "io/error_text.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "tests/config_test.hpp"

namespace xy {
namespace {

using test::error_of;
using test::Has;

// ---- one test per kind of mistake ---------------------------------------------------------------

TEST(ConfigErrors, MissingFile) {
  try {
    load_config("/nonexistent/xy.toml");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    std::cout << "    message: " << e.what() << "\n";
    EXPECT_STREQ(e.what(),
                 "cannot read config file '/nonexistent/xy.toml': No such file or directory");
  }
}

TEST(ConfigErrors, TomlSyntax) {
  std::string msg = error_of("[model]\nhidden = 256\nheads = = 8\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:9: TOML syntax error: "));
}

// toml++ 3.3 trips over its own checks on a few malformed lines (a "[" ending a line, "[=",
// "x = [}"); they are reported like any syntax error, at the line, instead of aborting.
TEST(ConfigErrors, TomlSyntaxThatTomlPlusPlusCannotLocate) {
  std::string msg = error_of("[model]\nhidden = 256\n[\nheads = 8\n");
  EXPECT_TRUE(Has(msg, "test.toml:3: TOML syntax error: toml++ cannot parse this line"));
  msg = error_of("[data]\ninputs = [\n  \"a.jsonl\",\n  }\"b.jsonl\"]\n");
  EXPECT_TRUE(Has(msg, "test.toml:4: TOML syntax error"));
}

TEST(ConfigErrors, UnknownTable) {
  std::string msg = error_of("[train]\nsteps = 5\n\n[modle]\nhidden = 256\n");
  EXPECT_TRUE(Has(msg, "test.toml:4:2: modle: unknown table (did you mean [model]?)"));
  EXPECT_TRUE(Has(msg,
                  "valid: [topology], [model], [data], [train], [optimizer], [actors], "
                  "[deadlines], [checkpoint]"));
}

TEST(ConfigErrors, UnknownKeySuggestsTheClosest) {
  std::string msg = error_of("[model]\npreset = \"tiny\"\nhiden = 256\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:1: model.hiden: unknown key (did you mean 'hidden'?)"));
  EXPECT_TRUE(Has(msg, "valid: preset, vocab_size, hidden, intermediate, layers, heads, kv_heads"));
}

TEST(ConfigErrors, FirstUnknownKeyInFileOrderIsReported) {
  std::string msg = error_of("[train]\nzzz = 1\naaa = 2\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:1: train.zzz: unknown key; valid: steps"));
}

TEST(ConfigErrors, KeyInTheWrongTable) {
  std::string msg = error_of("[train]\nsteps = 5\nlr = 0.1\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:1: train.lr: unknown key ('lr' belongs in [optimizer])"));
  EXPECT_TRUE(Has(msg, "valid: steps, micro_batch"));
}

TEST(ConfigErrors, KeyOutsideAnyTable) {
  std::string msg = error_of("steps = 5\n[train]\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:1:1: steps: unknown key at the top level ('steps' belongs in "
                  "[train])"));
}

TEST(ConfigErrors, WrongType) {
  std::string msg = error_of("[model]\nheads = \"8\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:9: model.heads: expected an integer, got a string ('8'); "
                  "valid: an integer >= 1"));
  msg = error_of("[train]\nsteps = 10.0\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:9: train.steps: expected an integer, got a float (10.0)"));
  msg = error_of("[optimizer]\nlr = \"3e-4\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:6: optimizer.lr: expected a number, got a string ('3e-4')"));
  msg = error_of("[data]\ninputs = \"a.jsonl\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: data.inputs: expected an array of strings, got a string"));
  msg = error_of("[data]\ninputs = [\"a.jsonl\", 3]\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:22: data.inputs[1]: expected a string, got an integer (3)"));
  msg = error_of("model = 3\n");
  EXPECT_TRUE(Has(msg, "test.toml:1:9: model: expected a table, got an integer (3)"));
}

TEST(ConfigErrors, NonPositiveCount) {
  std::string msg = error_of("[train]\nmicro_batch = 0\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:2:15: train.micro_batch: 0 is out of range; valid: an integer >= 1"));
  msg = error_of("[model]\nlayers = -2\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: model.layers: -2 is out of range; valid: an integer in 1..1000000"));
}

TEST(ConfigErrors, NumberOutOfRange) {
  std::string msg = error_of("[model]\nrms_eps = -1e-6\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:2:11: model.rms_eps: -1e-6 is out of range; valid: a number > 0"));
  msg = error_of("[model]\nrms_eps = nan\n");
  EXPECT_TRUE(Has(msg, "model.rms_eps: nan is not a finite number"));
  msg = error_of("[deadlines]\nfirst_step_factor = 0.5\n");
  EXPECT_TRUE(Has(msg, "deadlines.first_step_factor: 0.5 is out of range; valid: a number >= 1"));
}

TEST(ConfigErrors, ProbabilityOutsideUnitInterval) {
  std::string msg = error_of("[optimizer]\nbeta2 = 1.0\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:2:9: optimizer.beta2: 1.0 is out of range; valid: a number in [0, 1)"));
}

TEST(ConfigErrors, LearningRateNotPositive) {
  std::string msg = error_of("[optimizer]\nlr = 0\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:6: optimizer.lr: 0 is out of range; valid: a number > 0"));
}

TEST(ConfigErrors, UnknownPrecision) {
  std::string msg = error_of("[train]\nprecision = \"fp8\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:13: train.precision: unknown value 'fp8' (did you mean 'fp32'?); "
                  "valid: fp32, bf16, fp16"));
}

TEST(ConfigErrors, UnknownDevice) {
  std::string msg = error_of("[topology]\ndevice = \"gpu\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:10: topology.device: unknown value 'gpu' (did you mean 'cpu'?); "
                  "valid: cpu, cuda"));
}

TEST(ConfigErrors, UnknownSchedule) {
  std::string msg = error_of("[optimizer]\nschedule = \"cosin\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:12: optimizer.schedule: unknown value 'cosin' (did you mean "
                  "'cosine'?); valid: cosine, linear, constant"));
}

TEST(ConfigErrors, UnknownPreset) {
  std::string msg = error_of("[model]\npreset = \"13b\"\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:10: model.preset: unknown value '13b' (did you mean '1b'?); "
                  "valid: tiny, 1b, 3b, 7b, xuanyuan-6b, llama3.1-8b, llama3.2-1b, llama3.2-3b, "
                  "qwen3-1.7b, qwen3-8b, custom"));
}

TEST(ConfigErrors, CustomPresetMissingAShape) {
  std::string msg = error_of("[model]\npreset = \"custom\"\nhidden = 64\nlayers = 2\nheads = 4\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:10: model.intermediate: missing; model.preset = 'custom' needs "
                  "hidden, intermediate, layers and heads"));
}

TEST(ConfigErrors, HeadsDoNotDivideHidden) {
  std::string msg = error_of("[model]\nhidden = 256\nheads = 7\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:9: model.heads: 7 does not divide model.hidden = 256: "
                  "head_dim would be 36.57, not an integer; valid: "));
  EXPECT_TRUE(
      Has(msg, "valid: a divisor of 256 that leaves an even head_dim, such as 2, 4, 8, 16"));
  // A heads value from the preset is named as such; the error points at the key that was written.
  msg = error_of("[model]\npreset = \"7b\"\nhidden = 4112\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:10: model.heads: 32 (from preset '7b') does not divide "
                  "model.hidden = 4112: head_dim would be 128.50, not an integer"));
}

TEST(ConfigErrors, HeadDimOdd) {
  std::string msg = error_of("[model]\nhidden = 264\nheads = 8\nkv_heads = 8\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:9: model.heads: head_dim = model.hidden / model.heads = 264 / 8 "
                  "= 33 is odd, but rotary embeddings rotate pairs of dimensions"));
  EXPECT_TRUE(
      Has(msg, "valid: a divisor of 264 that leaves an even head_dim, such as 4, 6, 11, 12"));
}

TEST(ConfigErrors, ArchitectureKeys) {
  // An explicit head_dim frees heads from dividing hidden, but must be even.
  EXPECT_TRUE(Has(error_of("[model]\nhidden = 264\nheads = 8\nhead_dim = 33\n"),
                  "test.toml:4:12: model.head_dim: 33 is odd, but rotary embeddings rotate pairs of "
                  "dimensions; valid: an even number, or 0 (= hidden / heads)"));
  EXPECT_TRUE(Has(error_of("[model]\nrope_scaling = \"ntk\"\n"),
                  "test.toml:2:16: model.rope_scaling: unknown value 'ntk'"));
  EXPECT_TRUE(Has(error_of("[model]\nrope_scaling = \"ntk\"\n"), "valid: none, linear, dynamic, llama3, yarn"));
  EXPECT_TRUE(Has(error_of("[model]\nattention_bias = \"qk\"\n"), "model.attention_bias: unknown value 'qk'"));
  EXPECT_TRUE(Has(error_of("[model]\nfamily = \"mistral\"\n"), "model.family: unknown value 'mistral'"));
  EXPECT_TRUE(Has(error_of("[model]\nrope_factor = 0\n"), "model.rope_factor"));
  // Combinations a family cannot express, named with the family.
  EXPECT_TRUE(Has(error_of("[model]\nqk_norm = true\n"),
                  "test.toml:2:11: model.qk_norm: true (per-head q/k RMSNorm is Qwen3's) with "
                  "model.family = 'llama' (from preset 'tiny'); valid: false, or model.family = \"qwen3\""));
  EXPECT_TRUE(Has(error_of("[model]\nfamily = \"qwen3\"\n"),
                  "model.qk_norm: false (Qwen3ForCausalLM always has q_norm and k_norm) with "
                  "model.family = 'qwen3'"));
  EXPECT_TRUE(Has(error_of("[model]\nattention_bias = \"qkv\"\n"),
                  "model.attention_bias: \"qkv\" (biases on q/k/v only are Qwen2's) with model.family = 'llama'"));
  EXPECT_TRUE(Has(error_of("[model]\nfamily = \"qwen2\"\n"),
                  "model.attention_bias: 'none' (Qwen2ForCausalLM always has q/k/v biases, no o_proj bias)"));
  EXPECT_TRUE(Has(error_of("[model]\nfamily = \"qwen2\"\nattention_bias = \"qkv\"\nhead_dim = 64\n"),
                  "model.head_dim: 64 != hidden / heads (Qwen2 derives it) with model.family = 'qwen2'"));
  EXPECT_TRUE(Has(error_of("[model]\nrope_scaling = \"llama3\"\nrope_low_freq_factor = 4.0\n"),
                  "model.rope_high_freq_factor: 4.0 does not exceed model.rope_low_freq_factor = 4.0"));
  // And what the families can express loads.
  const Config q3 = parse_config("[model]\npreset = \"qwen3-8b\"\n[data]\ntokenizer_vocab = 8000\n");
  EXPECT_TRUE(q3.model.qk_norm);
  const Config q2 = parse_config("[model]\nfamily = \"qwen2\"\nattention_bias = \"qkv\"\n");
  EXPECT_EQ(q2.model.attention_bias, "qkv");
}

TEST(ConfigErrors, KvHeadsDoNotDivideHeads) {
  std::string msg = error_of("[model]\nheads = 8\nkv_heads = 3\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:12: model.kv_heads: 3 does not divide model.heads = 8"));
  EXPECT_TRUE(Has(msg, "valid: 0 (= heads), 1, 2, 4, 8"));
}

TEST(ConfigErrors, VocabSmallerThanTrainedTokenizer) {
  std::string msg = error_of("[model]\nvocab_size = 1000\n[data]\ntokenizer_vocab = 2048\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:14: model.vocab_size: 1000 is smaller than data.tokenizer_vocab "
                  "= 2048"));
  EXPECT_TRUE(Has(msg, "valid: 0 (take the tokenizer's) or >= 2048"));
}

TEST(ConfigErrors, SeqLenExceedsMaxSeqLen) {
  std::string msg = error_of("[model]\npreset = \"7b\"\n[data]\nseq_len = 8192\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:4:11: data.seq_len: 8192 exceeds model.max_seq_len = 4096 (from "
                  "preset '7b'); valid: 1..4096 (or raise model.max_seq_len)"));
}

TEST(ConfigErrors, MinLrAboveLr) {
  std::string msg = error_of("[optimizer]\nlr = 1e-4\nmin_lr = 1e-3\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:10: optimizer.min_lr: 0.001 exceeds optimizer.lr = 0.0001"));
  EXPECT_TRUE(Has(msg, "valid: 0 <= min_lr <= 0.0001"));
}

TEST(ConfigErrors, WarmupLongerThanTraining) {
  std::string msg = error_of("[train]\nsteps = 10\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:9: optimizer.warmup_steps: 20 (default) exceeds train.steps = "
                  "10 (the run would end before reaching the peak learning rate); valid: 0..10"));
}

TEST(ConfigErrors, NoNodes) {
  std::string msg = error_of("[topology]\nnodes = []\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:9: topology.nodes: the list is empty, but at least one node is "
                  "needed"));
}

TEST(ConfigErrors, NodeWithoutDevices) {
  std::string msg = error_of("[[topology.nodes]]\nhost = \"10.0.0.1\"\ndevices = 0\n");
  EXPECT_TRUE(Has(msg,
                  "test.toml:3:11: topology.nodes[0].devices: 0 is out of range; "
                  "valid: an integer in 1..1024"));
}

TEST(ConfigErrors, UnknownNodeKey) {
  std::string msg = error_of("[[topology.nodes]]\nhost = \"10.0.0.1\"\ngpus = 2\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:3:1: topology.nodes[0].gpus: unknown key; valid: host, port, devices"));
}

TEST(ConfigErrors, NodeIndexOutOfRange) {
  std::string msg = error_of(R"([topology]
node_index = 2
[[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.2"
port = 29500
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:2:14: topology.node_index: 2 but topology.nodes lists 2 nodes; "
                  "valid: 0..1"));
}

// Mixed GPUs: nodes may run different micro-batch counts only where each node gathers on its own.
TEST(ConfigErrors, DifferentGradAccumNeedsNodeSharding) {
  std::string msg = error_of(R"([topology]
shard = "global"
[[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.2"
port = 29500
grad_accum = 2
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:9:14: topology.nodes[1].grad_accum: 2 micro-batches per step, but node 0 "
                  "runs 1 and topology.shard = \"global\" gathers every unit for every micro-batch on "
                  "every rank; valid: the same grad_accum on every node, or topology.shard = \"node\" "
                  "(or \"auto\")"));
  // Different micro-batches (not counts) are fine with global sharding.
  EXPECT_NO_THROW(parse_config("[topology]\nshard = \"global\"\n[[topology.nodes]]\nhost = \"10.0.0.1\"\n"
                               "port = 29500\nmicro_batch = 3\n[[topology.nodes]]\nhost = \"10.0.0.2\"\n"
                               "port = 29500\nmicro_batch = 1\n"));
}

// Node sharding shards each node's state over its own ranks: every node needs as many.
TEST(ConfigErrors, NodeShardingNeedsTheSameDevices) {
  std::string msg = error_of(R"([topology]
shard = "node"
[[topology.nodes]]
host = "10.0.0.1"
port = 29500
devices = 2
[[topology.nodes]]
host = "10.0.0.2"
port = 29500
devices = 1
)");
  EXPECT_TRUE(Has(msg, "test.toml:2:9: topology.shard: \"node\" shards the state within each node, but "
                       "topology.nodes[1].devices = 1 differs from topology.nodes[0].devices = 2; valid: "
                       "\"global\" or \"auto\", or the same devices on every node")) << msg;
  // A node's micro-batch and accumulation are counts (0 = the train table's).
  std::string mb = error_of("[[topology.nodes]]\nhost = \"10.0.0.1\"\nmicro_batch = -1\n");
  EXPECT_TRUE(Has(mb, "topology.nodes[0].micro_batch")) << mb;
  std::string accum = error_of("[[topology.nodes]]\nhost = \"10.0.0.1\"\ngrad_accum = \"2\"\n");
  EXPECT_TRUE(Has(accum, "topology.nodes[0].grad_accum")) << accum;
  std::string bad = error_of("[topology]\nshard = \"nodes\"\n");
  EXPECT_TRUE(Has(bad, "topology.shard")) << bad;
  EXPECT_TRUE(Has(bad, "auto, global, node")) << bad;
}

TEST(ConfigErrors, DuplicateHostPort) {
  std::string msg = error_of(R"([[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.1"
port = 29500
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:6:8: topology.nodes[1]: 10.0.0.1:29500 is already used by "
                  "topology.nodes[0]; valid: a distinct host:port per node"));
}

TEST(ConfigErrors, PortZeroWithSeveralNodes) {
  std::string msg = error_of(R"([[topology.nodes]]
host = "10.0.0.1"
port = 29500
[[topology.nodes]]
host = "10.0.0.2"
)");
  EXPECT_TRUE(Has(msg,
                  "test.toml:5:8: topology.nodes[1].port: 0 (pick a free port) only works with "
                  "a single node"));
}

TEST(ConfigErrors, KeepLastZero) {
  std::string msg = error_of("[checkpoint]\nevery_steps = 50\nkeep_last = 0\n");
  EXPECT_TRUE(
      Has(msg, "test.toml:3:13: checkpoint.keep_last: 0 is out of range; valid: an integer >= 1"));
}

TEST(ConfigErrors, EmptyInputs) {
  std::string msg = error_of("[data]\ninputs = []\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: data.inputs: the list is empty; valid: one or more JSONL"));
}

TEST(ConfigData, ShardsReplaceInputs) {
  Config c = parse_config("[data]\nshards = \"runs/fincorpus-shards\"\nseq_len = 128\n");
  EXPECT_EQ(c.data.shards, "runs/fincorpus-shards");
  EXPECT_EQ(parse_config("").data.shards, "");
  // No trained tokenizer with shards: model.vocab_size below tokenizer_vocab is not an error.
  EXPECT_NO_THROW(parse_config("[model]\nvocab_size = 300\n[data]\nshards = \"s\"\n"));
}

TEST(ConfigErrors, ShardsTogetherWithInputs) {
  std::string msg = error_of("[data]\ninputs = [\"a.jsonl\"]\nshards = \"s\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:10: data.shards: is given together with data.inputs"));
  EXPECT_TRUE(Has(msg, "valid: remove data.inputs"));
}


// ---- [control] (docs/OPERATIONS.md) ------------------------------------------------------------

TEST(ConfigControl, KeysAndDefaults) {
  Config d = parse_config("");
  EXPECT_EQ(d.control.secret, "");
  EXPECT_EQ(d.control.heartbeat_s, 10);
  EXPECT_EQ(d.control.http_port, 0);
  EXPECT_TRUE(d.control.doctor);
  Config c = parse_config("[control]\nsecret = \"s3\"\nheartbeat_s = 2.5\nhttp_port = 8080\n"
                          "http_host = \"10.0.0.1\"\ndoctor = false\n");
  EXPECT_EQ(c.control.secret, "s3");
  EXPECT_EQ(c.control.heartbeat_s, 2.5);
  EXPECT_EQ(c.control.http_port, 8080);
  EXPECT_EQ(c.control.http_host, "10.0.0.1");
  EXPECT_FALSE(c.control.doctor);
}

TEST(ConfigControl, BadValuesNameTheKey) {
  EXPECT_TRUE(Has(error_of("[control]\nhttp_port = 70000\n"), "test.toml:2:13: control.http_port"));
  EXPECT_TRUE(Has(error_of("[control]\ndoctor = 1\n"), "control.doctor: expected a boolean"));
  EXPECT_TRUE(Has(error_of("[control]\nheartbeat_s = 0\n"), "control.heartbeat_s"));
  EXPECT_TRUE(Has(error_of("[control]\nsecrets = \"x\"\n"), "did you mean"));
}

TEST(ConfigFaults, InjectIsAString) {
  EXPECT_EQ(parse_config("").faults.inject, "");
  EXPECT_EQ(parse_config("[faults]\ninject = \"kill-node:rank=1\"\n").faults.inject, "kill-node:rank=1");
  EXPECT_TRUE(Has(error_of("[faults]\ninject = 3\n"), "faults.inject: expected a string"));
}

// ---- error text: what users see of a LibTorch error ---------------------------------------------

// c10::Error's what() carries a C++ backtrace; every top-level handler and the engine's error path
// print what comes before it (io/error_text.hpp).
TEST(ErrorText, LibTorchBacktraceIsCut) {
  EXPECT_EQ(without_backtrace("Device index value 1 is out of index range [0, 1)\nException raised "
                              "from check at c10/core/Device.h:12 (most recent call first):\nframe #0: "
                              "c10::Error::Error"),
            "Device index value 1 is out of index range [0, 1)");
  EXPECT_EQ(without_backtrace("[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't "
                              "allocate memory\nframe #0: <unknown function> + 0x4c062"),
            "[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: can't allocate memory");
  EXPECT_EQ(without_backtrace("a plain message"), "a plain message");
}

// ---- model.init_from: the shape comes from the folder's config.json, at load time ----------------

// preset = "custom" with init_from is documented as valid: the shape is the folder's (3 layers of
// hidden 64 in tests/fixtures/hf_tiny), taken by the reader itself, so that nothing (the checks
// here, the doctor, status) ever sees the zeros of 'custom' (a division by heads = 0 was a SIGFPE).
TEST(ConfigInitFrom, CustomPresetTakesTheFoldersShape) {
  Config c = parse_config("[model]\npreset = \"custom\"\ninit_from = \"tests/fixtures/hf_tiny\"\n"
                          "[data]\ntokenizer = \"tok.model\"\nseq_len = 32\n");
  EXPECT_EQ(c.model.init_from, "tests/fixtures/hf_tiny");
  EXPECT_EQ(c.model.vocab_size, 611);
  EXPECT_EQ(c.model.hidden, 64);
  EXPECT_EQ(c.model.intermediate, 176);
  EXPECT_EQ(c.model.layers, 3);
  EXPECT_EQ(c.model.heads, 8);
  EXPECT_EQ(c.model.kv_heads, 2);
  EXPECT_EQ(c.model.max_seq_len, 4096);  // the larger of the config's and max_position_embeddings
  // Explicit shape keys are replaced by the folder's, as docs/CONFIG.md says.
  Config t = parse_config("[model]\nhidden = 512\ninit_from = \"tests/fixtures/hf_tiny\"\n"
                          "[data]\ntokenizer = \"tok.model\"\n");
  EXPECT_EQ(t.model.hidden, 64);
}

TEST(ConfigInitFrom, RulesApplyToTheFoldersShapeAndBlameInitFrom) {
  // The folder's vocabulary (611) is smaller than the tokenizer trained from the inputs (8000).
  std::string msg = error_of("[model]\npreset = \"custom\"\ninit_from = \"tests/fixtures/hf_tiny\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:13: model.vocab_size: 611 (from tests/fixtures/hf_tiny/config.json) "
                       "is smaller than data.tokenizer_vocab = 8000"));
}

TEST(ConfigInitFrom, UnreadableFolderIsAConfigError) {
  std::string msg = error_of("[model]\npreset = \"custom\"\ninit_from = \"/nonexistent/hf\"\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:13: model.init_from: cannot take the model's shape from it: "));
  EXPECT_TRUE(Has(msg, "/nonexistent/hf"));
}

// ---- ranges: every numeric key has an upper bound where a larger value overflows or is a typo ----

TEST(ConfigRanges, NodePortLeavesRoomForTheStore) {
  std::string msg = error_of("[[topology.nodes]]\nhost = \"127.0.0.1\"\nport = 65535\n");
  EXPECT_TRUE(Has(msg, "test.toml:3:8: topology.nodes[0].port: 65535 leaves no port for the "
                       "rendezvous store, which node 0 serves on its port + 1; valid: 1..65534"));
  EXPECT_EQ(parse_config("[[topology.nodes]]\nport = 65534\n").topology.nodes[0].port, 65534);
  // Another node of node 0's host must not take node 0's store port.
  msg = error_of("[[topology.nodes]]\nhost = \"h\"\nport = 29500\n"
                 "[[topology.nodes]]\nhost = \"h\"\nport = 29501\n");
  EXPECT_TRUE(Has(msg, "test.toml:6:8: topology.nodes[1].port: h:29501 is node 0's rendezvous store"));
  EXPECT_NO_THROW(parse_config("[[topology.nodes]]\nhost = \"a\"\nport = 29500\n"
                               "[[topology.nodes]]\nhost = \"b\"\nport = 29501\n"));
  // Node i's status server is on http_port + i.
  msg = error_of("[control]\nhttp_port = 65535\n[[topology.nodes]]\nhost = \"a\"\nport = 1000\n"
                 "[[topology.nodes]]\nhost = \"b\"\nport = 1000\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:13: control.http_port: 65535 + node index reaches 65536"));
  EXPECT_TRUE(Has(error_of("[[topology.nodes]]\ndevices = 5000\n"),
                  "topology.nodes[0].devices: 5000 is out of range; valid: an integer in 1..1024"));
}

TEST(ConfigRanges, DeadlinesAndIntervalsAtMostThirtyDays) {
  std::string msg = error_of("[deadlines]\ncollective_s = 1e300\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:16: deadlines.collective_s: 1e300 is out of range; valid: a "
                       "number > 0 and <= 2592000 (30 days)"));
  EXPECT_EQ(parse_config("[deadlines]\ncollective_s = 2592000\n").deadlines.collective_s, 2592000);
  for (const char* text :
       {"[deadlines]\ncompute_s = 3e6\n", "[deadlines]\noptimizer_s = 1e10\n",
        "[deadlines]\nbatch_s = 1e300\n", "[deadlines]\ncheckpoint_s = 2592001\n",
        "[deadlines]\nfirst_step_factor = 1e300\n", "[deadlines]\npoll_ms = 1e300\n",
        "[control]\nheartbeat_s = 1e300\n", "[checkpoint]\nevery_minutes = 1e300\n"}) {
    SCOPED_TRACE(text);
    EXPECT_TRUE(Has(error_of(text), "is out of range; valid: a number"));
  }
}

TEST(ConfigRanges, CountsWithUpperBounds) {
  EXPECT_TRUE(Has(error_of("[model]\nvocab_size = 2147483648\n"),
                  "model.vocab_size: 2147483648 is out of range; valid: an integer in 0..2147483647"));
  EXPECT_TRUE(Has(error_of("[model]\nlayers = 10000000\n"), "model.layers: 10000000 is out of range"));
  EXPECT_TRUE(Has(error_of("[train]\nthreads = 100000\n"), "train.threads: 100000 is out of range"));
  EXPECT_TRUE(Has(error_of("[actors]\nadam_threads = 100000\n"), "actors.adam_threads"));
  EXPECT_TRUE(Has(error_of("[actors]\nprefetch_batches = 100000\n"), "actors.prefetch_batches"));
  EXPECT_TRUE(Has(error_of("[actors]\ngather_budget_mb = 1099511627776\n"), "actors.gather_budget_mb"));
  EXPECT_TRUE(Has(error_of("[train]\ninitial_loss_scale = 1e300\n"), "train.initial_loss_scale: 1e300 is "
                                                                    "out of range; valid: a number > 0 and <= 2^64"));
  EXPECT_TRUE(Has(error_of("[data]\ntokenizer_vocab = 3000000000\n"), "data.tokenizer_vocab"));
}

// Sizes derived from the shape are checked with overflow-safe arithmetic and name the key (hidden =
// 2^62 overflowed the doctor's parameter count and ended in a raw allocator trace).
TEST(ConfigRanges, ShapeTooLargeNamesTheKey) {
  std::string msg = error_of("[model]\nhidden = 4611686018427387904\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: model.hidden: 4611686018427387904 makes q_proj (hidden x hidden) "
                       "larger than 2^53 elements"));
  msg = error_of("[model]\nintermediate = 4000000000000000\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:16: model.intermediate: 4000000000000000 makes gate_proj"));
  msg = error_of("[model]\nlayers = 1000000\nhidden = 65536\nheads = 64\nintermediate = 65536\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:10: model.layers: 1000000 makes the parameter count"));
  msg = error_of("[train]\nmicro_batch = 4398046511104\n");
  EXPECT_TRUE(Has(msg, "test.toml:2:15: train.micro_batch: 4398046511104 makes"));
  msg = error_of("[model]\nmax_seq_len = 9007199254740992\n");
  EXPECT_TRUE(Has(msg, "model.max_seq_len: 9007199254740992 makes the rotary tables"));
  // The largest preset is well inside.
  EXPECT_NO_THROW(parse_config("[model]\npreset = \"7b\"\n"));
}

TEST(ConfigErrors, EvalSetsAreNameEqualsPathOnceEach) {
  const Config ok = parse_config("[eval]\nsets = [\"fin=a.jsonl\", \"general-2=dir\"]\nevery_steps = 5\n");
  EXPECT_EQ(ok.eval.sets.size(), 2u);
  EXPECT_EQ(ok.eval.every_steps, 5);
  std::string msg = error_of("[eval]\nsets = [\"a.jsonl\"]\n");
  EXPECT_NE(msg.find(":2:8: eval.sets: 'a.jsonl' is not name=path; valid: \"name=path\""), std::string::npos) << msg;
  msg = error_of("[eval]\nsets = [\"fin=a\", \"fin=b\"]\n");
  EXPECT_NE(msg.find("eval.sets: the name 'fin' is used twice"), std::string::npos) << msg;
  msg = error_of("[eval]\nsets = [\"f i=a\"]\n");
  EXPECT_NE(msg.find("is not name=path"), std::string::npos) << msg;
  msg = error_of("[eval]\nsamples = 0\n");
  EXPECT_NE(msg.find("eval.samples"), std::string::npos) << msg;
  std::printf("%s\n", msg.c_str());
}

}  // namespace
}  // namespace xy
