// Loads the job configuration from TOML (toml++) and validates it once, with messages that name
// the file, line, column and dotted key of the mistake and say what would be valid.
#include "io/config.hpp"

#include <stdexcept>

#include "io/hf_config.hpp"

// toml++ 3.3 has parser paths that break its own preconditions on some malformed input ("[" at the
// end of a line, "[=", "a = [}]"): they abort on an assert(), or are undefined behaviour under
// NDEBUG, where TOML_ASSERT_ASSUME becomes an optimizer assumption (upstream: marzer/tomlplusplus
// #301). In this file, the only one in xy that includes toml++ (so its inline functions have one
// definition), the checks throw TomlInternalError instead, with or without NDEBUG, and
// parse_config() reports a syntax error at the offending line.
namespace xy {
namespace {
struct TomlInternalError : std::logic_error {
  using std::logic_error::logic_error;
};
}  // namespace
}  // namespace xy
#ifdef NDEBUG
#define XY_CONFIG_RESTORE_NDEBUG
#undef NDEBUG
#endif
// In toml++'s few noexcept helpers (paths, the UTF-8 reader's bookkeeping) a failed check still
// ends the process, as assert() would; hence no warning about that.
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wexceptions"
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wterminate"
#endif
#define TOML_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : throw ::xy::TomlInternalError("toml++ check failed: " #expr))
#include <toml++/toml.h>
#if defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#ifdef XY_CONFIG_RESTORE_NDEBUG
#define NDEBUG
#undef XY_CONFIG_RESTORE_NDEBUG
#endif

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace xy {

int TopologyConfig::world_size() const {
  int total = 0;
  for (const NodeSpec& node : nodes) total += node.devices;
  return total;
}

namespace {

// ---- the schema: tables and their keys, exactly the struct fields ------------------------------

const std::vector<std::string> kPresets = {"tiny", "1b", "3b", "7b", "xuanyuan-6b", "custom"};
const std::vector<std::string> kDevices = {"cpu", "cuda"};
const std::vector<std::string> kPrecisions = {"fp32", "bf16", "fp16"};
const std::vector<std::string> kSchedules = {"cosine", "linear", "constant", "warmup_decay",
                                             "warmup"};
const std::vector<std::string> kWarmupTypes = {"log", "linear"};

// Upper bounds of numeric keys. Beyond them a value is a typo rather than a plan, and some would
// overflow where they are used: deadlines become c10d/Gloo timeouts in int64 milliseconds (1e300
// seconds wrapped to a negative timeout), thread counts start that many threads, token ids are
// int32, and node 0's rendezvous store listens on its port + 1.
constexpr double kMaxSeconds = 30 * 24 * 3600.0;  // any deadline or interval: 30 days
const std::string kMaxSecondsText = "2592000 (30 days)";
constexpr int kMaxPort = 65534;                   // a node's port + 1 (the store) is a port too
constexpr int kMaxDevices = 1024;                 // ranks (devices) of one node
constexpr int64_t kMaxWorld = 1 << 20;            // ranks of the whole job
constexpr int kMaxThreads = 1024;                 // train.threads, actors.adam_threads
constexpr int64_t kMaxVocab = INT32_MAX;          // token ids are int32
constexpr int64_t kMaxLayers = 1000000;           // units are int32-indexed
// Elements of any one tensor, of the parameter count and of per-step activations derived from
// the model's shape: 2^53 (exact in a double; 16 bytes per element still fit in int64). Checked
// with overflow-safe arithmetic (check_model_sizes).
constexpr int64_t kMaxElements = int64_t{1} << 53;

struct TableSchema {
  std::string name;
  std::vector<std::string> keys;
};

const std::vector<TableSchema>& schema() {
  static const std::vector<TableSchema> tables = {
      {"topology", {"device", "nodes", "node_index"}},
      {"model",
       {"preset", "vocab_size", "hidden", "intermediate", "layers", "heads", "kv_heads", "rms_eps",
        "rope_theta", "max_seq_len", "init_std", "init_seed", "init_from"}},
      {"data",
       {"inputs", "text_field", "shards", "tokenizer", "tokenizer_vocab", "work_dir", "seq_len",
        "seed"}},
      {"train", {"steps", "micro_batch", "grad_accum", "precision", "log_every", "threads",
                 "loss_scaling", "initial_loss_scale", "loss_scale_window", "loss_scale_hysteresis",
                 "min_loss_scale"}},
      {"optimizer",
       {"lr", "min_lr", "beta1", "beta2", "eps", "weight_decay", "no_decay", "grad_clip",
        "warmup_steps", "schedule", "warmup_type", "delayed_update"}},
      {"actors", {"prefetch_batches", "prefetch_layers", "gather_budget_mb", "adam_threads", "offload_params"}},
      {"deadlines",
       {"collective_s", "compute_s", "optimizer_s", "batch_s", "checkpoint_s", "first_step_factor",
        "poll_ms", "watchdog"}},
      {"checkpoint", {"dir", "every_steps", "every_minutes", "keep_last", "keep_every"}},
      {"control", {"secret", "heartbeat_s", "http_port", "http_host", "doctor"}},
      {"faults", {"inject"}},
  };
  return tables;
}

const std::vector<std::string> kNodeKeys = {"host", "port", "devices"};

std::vector<std::string> table_names() {
  std::vector<std::string> names;
  for (const TableSchema& t : schema()) names.push_back(t.name);
  return names;
}

// ---- text helpers ------------------------------------------------------------------------------

std::string join(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// A double as a user would write it: the shortest text that reads back as exactly `v` (0.9, not
// 0.90000000000000002), integral values with ".0" (10.0), exponents without padding (1e-6).
std::string fmt_double(double v) {
  char buf[64];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string text = buf;
  size_t e = text.find('e');
  if (e != std::string::npos) {
    std::string mantissa = text.substr(0, e), exponent = text.substr(e + 1);
    std::string sign = exponent[0] == '-' ? "-" : "";
    size_t digits = exponent.find_first_not_of("+-0");
    text = mantissa + "e" + sign + (digits == std::string::npos ? "0" : exponent.substr(digits));
  }
  return text;
}

std::string fixed2(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

// Levenshtein distance, ASCII case-insensitive (so 'Hidden' is 0 edits from 'hidden', and is
// suggested as such; TOML keys themselves are case-sensitive).
size_t edit_distance(const std::string& a, const std::string& b) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t subst = prev[j - 1] + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The candidate closest to `word` if it is within 3 edits (and not a complete rewrite of a short
// word, which would be a guess rather than a correction); empty if none.
std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 4;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance && d < std::max(word.size(), c.size())) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

// "a string", "an integer", ...: the TOML type of a node, for "expected X, got Y".
std::string type_phrase(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

// The node's value as it would be written in a message ('text', 12, 0.5, true, ...).
std::string value_text(const toml::node& node) {
  if (auto s = node.as_string()) return quoted(s->get());
  if (auto f = node.as_floating_point()) return fmt_double(f->get());
  if (node.is_array() || node.is_table()) return "";
  std::ostringstream out;
  node.visit([&out](const auto& v) {
    if constexpr (toml::is_value<decltype(v)>) out << v;  // integers, booleans, dates and times
  });
  return out.str();
}

std::string got_phrase(const toml::node& node) {
  std::string shown = value_text(node);
  return type_phrase(node) + (shown.empty() ? "" : " (" + shown + ")");
}

// Divisors of n (ascending).
std::vector<int64_t> divisors(int64_t n) {
  std::vector<int64_t> small, large;
  for (int64_t d = 1; d * d <= n; ++d) {
    if (n % d) continue;
    small.push_back(d);
    if (d != n / d) large.push_back(n / d);
  }
  small.insert(small.end(), large.rbegin(), large.rend());
  return small;
}

// Head counts that divide `hidden` with an even head_dim: the two below `wanted` and the two above.
std::string head_suggestions(int64_t hidden, int64_t wanted) {
  std::vector<int64_t> below, above;
  for (int64_t d : divisors(hidden)) {
    if ((hidden / d) % 2 != 0) continue;
    (d < wanted ? below : above).push_back(d);
  }
  if (below.size() > 2) below.erase(below.begin(), below.end() - 2);
  if (above.size() > 2) above.resize(2);
  std::vector<std::string> text;
  for (int64_t v : below) text.push_back(std::to_string(v));
  for (int64_t v : above) text.push_back(std::to_string(v));
  if (text.empty())
    return "none: model.hidden = " + std::to_string(hidden) + " is odd, make it even";
  return "a divisor of " + std::to_string(hidden) + " that leaves an even head_dim, such as " +
         join(text);
}

// ---- where things are: positions of the given keys, and the error builder ----------------------

class Context {
 public:
  explicit Context(std::string source) : source_(std::move(source)) {}

  // Throws the ConfigError "SOURCE:LINE:COL: KEY: problem; valid: ..." (LINE:COL omitted when the
  // position is unknown, COL when only the line is known, KEY when empty, "; valid" when `valid`
  // is empty).
  [[noreturn]] void fail(const toml::source_position& where, const std::string& key,
                         const std::string& problem, const std::string& valid = "") const {
    std::string msg = source_;
    if (where.line > 0) msg += ":" + std::to_string(where.line);
    if (where.line > 0 && where.column > 0) msg += ":" + std::to_string(where.column);
    msg += ": ";
    if (!key.empty()) msg += key + ": ";
    msg += problem;
    if (!valid.empty()) msg += "; valid: " + valid;
    throw ConfigError(msg);
  }

  // Records that the dotted key (or table) was written in the file, at `where`.
  void given(const std::string& key, const toml::source_position& where) { given_[key] = where; }
  bool was_given(const std::string& key) const { return given_.count(key) != 0; }

  // The position of the first of `keys` that was written in the file; none if none was.
  toml::source_position first_given(const std::vector<std::string>& keys) const {
    for (const std::string& key : keys) {
      auto it = given_.find(key);
      if (it != given_.end()) return it->second;
    }
    return {};
  }

 private:
  std::string source_;
  std::map<std::string, toml::source_position> given_;
};

// The entries of a table in the order they appear in the file (toml::table is sorted by key), so
// that the first of several mistakes is the one reported.
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& t) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [k, node] : t) entries.emplace_back(&k, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const toml::source_position &pa = a.first->source().begin, &pb = b.first->source().begin;
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
  return entries;
}

// Where an unknown key `name` in table `prefix` might have been meant to go.
std::string unknown_key_hint(const std::string& name, const std::vector<std::string>& valid,
                             const std::string& prefix) {
  std::string near = closest(name, valid);
  if (!near.empty()) return " (did you mean " + quoted(near) + "?)";
  for (const TableSchema& t : schema()) {
    if (t.name == prefix) continue;
    if (std::find(t.keys.begin(), t.keys.end(), name) != t.keys.end())
      return " (" + quoted(name) + " belongs in [" + t.name + "])";
  }
  return "";
}

// Reads the keys of one table into struct fields, checking type and range. The constructor rejects
// keys not in `keys` first, since a misspelled key is the likeliest cause of any later surprise.
class TableReader {
 public:
  TableReader(Context& ctx, const toml::table* table, std::string prefix,
              const std::vector<std::string>& keys)
      : ctx_(ctx), table_(table), prefix_(std::move(prefix)), keys_(keys) {
    if (!table_) return;
    for (const auto& [k, node] : in_file_order(*table_)) {
      const std::string name(k->str());
      if (std::find(keys_.begin(), keys_.end(), name) != keys_.end()) continue;
      ctx_.fail(k->source().begin, dotted(name),
                "unknown key" + unknown_key_hint(name, keys_, prefix_), join(keys_));
    }
  }

  std::string dotted(const std::string& key) const { return prefix_ + "." + key; }

  // The node of `key` if present (recording its position), else nullptr.
  const toml::node* node(const std::string& key) {
    if (std::find(keys_.begin(), keys_.end(), key) == keys_.end())
      throw std::logic_error("config schema lacks " + dotted(key));
    if (!table_) return nullptr;
    const toml::node* n = table_->get(key);
    if (n) ctx_.given(dotted(key), n->source().begin);
    return n;
  }

  [[noreturn]] void fail(const toml::node& n, const std::string& key, const std::string& problem,
                         const std::string& valid) const {
    ctx_.fail(n.source().begin, dotted(key), problem, valid);
  }

  // An integer in [min, max].
  void integer(const std::string& key, int64_t& out, int64_t min, int64_t max = INT64_MAX) {
    const toml::node* n = node(key);
    if (!n) return;
    // The type's own limit is not worth stating unless the value exceeds it.
    const std::string range = "an integer in " + std::to_string(min) + ".." + std::to_string(max);
    bool type_limit = max == INT64_MAX || max == INT_MAX;
    std::string valid = type_limit ? "an integer >= " + std::to_string(min) : range;
    if (!n->is_integer()) fail(*n, key, "expected an integer, got " + got_phrase(*n), valid);
    int64_t v = n->as_integer()->get();
    if (v > max) valid = range;
    if (v < min || v > max) fail(*n, key, std::to_string(v) + " is out of range", valid);
    out = v;
  }
  void integer(const std::string& key, int& out, int min, int max = INT_MAX) {
    int64_t v = out;
    integer(key, v, min, max);
    out = static_cast<int>(v);
  }
  void integer(const std::string& key, uint64_t& out) {
    int64_t v = static_cast<int64_t>(out);
    integer(key, v, 0);
    out = static_cast<uint64_t>(v);
  }

  // A finite number (float or integer) accepted by `ok`; `rule` describes it ("> 0", "in [0, 1)").
  template <class Ok>
  void number(const std::string& key, double& out, Ok ok, const std::string& rule) {
    const toml::node* n = node(key);
    if (!n) return;
    std::string valid = "a number " + rule;
    double v = 0;
    if (n->is_floating_point()) {
      v = n->as_floating_point()->get();
    } else if (n->is_integer()) {
      v = static_cast<double>(n->as_integer()->get());
    } else {
      fail(*n, key, "expected a number, got " + got_phrase(*n), valid);
    }
    if (!std::isfinite(v)) fail(*n, key, value_text(*n) + " is not a finite number", valid);
    if (!ok(v)) fail(*n, key, value_text(*n) + " is out of range", valid);
    out = v;
  }
  void positive(const std::string& key, double& out) {
    auto ok = [](double v) { return v > 0; };
    number(key, out, ok, "> 0");
  }
  void non_negative(const std::string& key, double& out) {
    auto ok = [](double v) { return v >= 0; };
    number(key, out, ok, ">= 0");
  }
  // A deadline or interval in seconds: > 0 and at most kMaxSeconds.
  void seconds(const std::string& key, double& out) {
    auto ok = [](double v) { return v > 0 && v <= kMaxSeconds; };
    number(key, out, ok, "> 0 and <= " + kMaxSecondsText);
  }

  // A string; one of `allowed` when that is not empty; not empty when `required`.
  void string(const std::string& key, std::string& out,
              const std::vector<std::string>& allowed = {}, bool required = false) {
    const toml::node* n = node(key);
    if (!n) return;
    std::string valid =
        allowed.empty() ? (required ? "a non-empty string" : "a string") : join(allowed);
    if (!n->is_string()) fail(*n, key, "expected a string, got " + got_phrase(*n), valid);
    const std::string& v = n->as_string()->get();
    if (required && v.empty()) fail(*n, key, "must not be empty", valid);
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string near = closest(v, allowed);
      fail(*n, key,
           "unknown value " + quoted(v) +
               (near.empty() ? "" : " (did you mean " + quoted(near) + "?)"),
           valid);
    }
    out = v;
  }

  // true or false.
  void boolean(const std::string& key, bool& out) {
    const toml::node* n = node(key);
    if (!n) return;
    if (!n->is_boolean()) fail(*n, key, "expected a boolean, got " + got_phrase(*n), "true, false");
    out = n->as_boolean()->get();
  }

  // An array of strings; each non-empty; the array itself non-empty when `required`.
  void strings(const std::string& key, std::vector<std::string>& out, bool required,
               const std::string& valid) {
    const toml::node* n = node(key);
    if (!n) return;
    if (!n->is_array()) fail(*n, key, "expected an array of strings, got " + got_phrase(*n), valid);
    const toml::array& arr = *n->as_array();
    if (required && arr.empty()) fail(*n, key, "the list is empty", valid);
    std::vector<std::string> v;
    for (size_t i = 0; i < arr.size(); ++i) {
      const toml::node& item = arr[i];
      std::string item_key = key + "[" + std::to_string(i) + "]";
      if (!item.is_string())
        fail(item, item_key, "expected a string, got " + got_phrase(item), valid);
      if (item.as_string()->get().empty()) fail(item, item_key, "must not be empty", valid);
      v.push_back(item.as_string()->get());
    }
    out = std::move(v);
  }

 private:
  Context& ctx_;
  const toml::table* table_;
  std::string prefix_;
  const std::vector<std::string>& keys_;
};

const std::vector<std::string>& keys_of(const std::string& table) {
  for (const TableSchema& t : schema())
    if (t.name == table) return t.keys;
  throw std::logic_error("config schema lacks table " + table);
}

// Checks the top level: only the known tables, each a table. Returns each table (or nullptr).
std::map<std::string, const toml::table*> top_level_tables(Context& ctx, const toml::table& root) {
  const std::vector<std::string> names = table_names();
  std::vector<std::string> headers;
  for (const std::string& n : names) headers.push_back("[" + n + "]");
  std::map<std::string, const toml::table*> tables;
  for (const auto& [k, node] : in_file_order(root)) {
    const std::string name(k->str());
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::string near = closest(name, names);
      std::string hint = near.empty() ? "" : " (did you mean [" + near + "]?)";
      if (node->is_table())
        ctx.fail(k->source().begin, name, "unknown table" + hint, join(headers));
      if (hint.empty()) hint = unknown_key_hint(name, {}, "");
      ctx.fail(k->source().begin, name, "unknown key at the top level" + hint,
               "the tables " + join(headers));
    }
    if (!node->is_table())
      ctx.fail(node->source().begin, name, "expected a table, got " + got_phrase(*node),
               "a table [" + name + "] with the keys " + join(keys_of(name)));
    tables[name] = node->as_table();
    ctx.given(name, node->source().begin);
  }
  return tables;
}

std::string preset_origin(const Context& ctx, const ModelConfig& m, const std::string& key) {
  if (!m.init_from.empty()) return " (from " + m.init_from + "/config.json)";
  if (ctx.was_given("model." + key)) return "";
  if (m.preset == "custom") return " (default)";
  return " (from preset " + quoted(m.preset) + ")";
}

std::string given_or_default(const Context& ctx, const std::string& dotted_key) {
  return ctx.was_given(dotted_key) ? "" : " (default)";
}

// The line on which toml++'s parser trips over its own checks (see TomlInternalError): the
// shortest run of whole lines from the start that still trips it. A shorter prefix never reaches
// the spot; a longer one reaches it in the same state, so the first such prefix ends on that line.
toml::source_index first_line_toml_trips_on(const std::string& text) {
  toml::source_index line = 1;
  for (size_t end = text.find('\n');; end = text.find('\n', end + 1), ++line) {
    size_t length = end == std::string::npos ? text.size() : end + 1;
    try {
      static_cast<void>(toml::parse(std::string_view(text).substr(0, length)));
    } catch (const TomlInternalError&) {
      return line;
    } catch (const toml::parse_error&) {
      // ends inside an unterminated value; keep going
    }
    if (end == std::string::npos) return 0;  // not found: no position
  }
}

// ---- the tables --------------------------------------------------------------------------------

void read_topology(Context& ctx, const toml::table* t, TopologyConfig& topo) {
  TableReader r(ctx, t, "topology", keys_of("topology"));
  r.string("device", topo.device, kDevices);
  r.integer("node_index", topo.node_index, 0);
  const toml::node* n = r.node("nodes");
  if (!n) return;
  const std::string valid = "one or more [[topology.nodes]] tables with host, port, devices";
  if (!n->is_array())
    r.fail(*n, "nodes", "expected an array of tables, got " + got_phrase(*n), valid);
  const toml::array& arr = *n->as_array();
  if (arr.empty()) r.fail(*n, "nodes", "the list is empty, but at least one node is needed", valid);
  topo.nodes.clear();
  for (size_t i = 0; i < arr.size(); ++i) {
    std::string prefix = "topology.nodes[" + std::to_string(i) + "]";
    if (!arr[i].is_table())
      ctx.fail(arr[i].source().begin, prefix, "expected a table, got " + got_phrase(arr[i]), valid);
    NodeSpec node;
    TableReader nr(ctx, arr[i].as_table(), prefix, kNodeKeys);
    nr.string("host", node.host, {}, /*required=*/true);
    nr.integer("port", node.port, 0, 65535);
    if (node.port > kMaxPort)
      ctx.fail(ctx.first_given({prefix + ".port"}), prefix + ".port",
               std::to_string(node.port) + " leaves no port for the rendezvous store, which node 0 "
               "serves on its port + 1",
               "1.." + std::to_string(kMaxPort) + ", or 0 (pick a free one) with a single node");
    nr.integer("devices", node.devices, 1, kMaxDevices);
    topo.nodes.push_back(node);
  }
}

void read_model(Context& ctx, const toml::table* t, ModelConfig& m) {
  TableReader r(ctx, t, "model", keys_of("model"));
  std::string preset = m.preset;
  r.string("preset", preset, kPresets);
  m = model_preset(preset);  // the preset first, then every explicit key overrides it
  r.integer("vocab_size", m.vocab_size, 0, kMaxVocab);
  r.integer("hidden", m.hidden, 1);
  r.integer("intermediate", m.intermediate, 1);
  r.integer("layers", m.layers, 1, kMaxLayers);
  r.integer("heads", m.heads, 1);
  r.integer("kv_heads", m.kv_heads, 0);
  r.positive("rms_eps", m.rms_eps);
  r.positive("rope_theta", m.rope_theta);
  r.integer("max_seq_len", m.max_seq_len, 1);
  r.positive("init_std", m.init_std);
  r.integer("init_seed", m.init_seed);
  r.string("init_from", m.init_from);
  if (!m.init_from.empty()) {
    // The folder's config.json is the model's shape (docs/CONFIG.md): taken here, once, so that
    // every command (train, doctor, status) and every check below sees the real shape, never the
    // zeros of preset 'custom'.
    try {
      apply_init_from_shape(m);
    } catch (const std::exception& e) {
      ctx.fail(ctx.first_given({"model.init_from"}), "model.init_from",
               "cannot take the model's shape from it: " + std::string(e.what()),
               "a Hugging Face LlamaForCausalLM folder (config.json + safetensors)");
    }
    return;
  }
  if (m.preset == "custom") {
    for (const char* key : {"hidden", "intermediate", "layers", "heads"}) {
      if (ctx.was_given(r.dotted(key))) continue;
      ctx.fail(ctx.first_given({"model.preset", "model"}), r.dotted(key),
               "missing; model.preset = 'custom' needs hidden, intermediate, layers and heads",
               "set model." + std::string(key) + ", or choose a preset: " +
                   join(std::vector<std::string>(kPresets.begin(), kPresets.end() - 1)));
    }
  }
}

// SentencePiece BPE with byte fallback needs 256 byte pieces plus <unk>, <s>, </s>, and at least
// one learned piece.
constexpr int64_t kMinTrainedVocab = 260;

void read_data(Context& ctx, const toml::table* t, DataConfig& d) {
  TableReader r(ctx, t, "data", keys_of("data"));
  r.strings("inputs", d.inputs, /*required=*/true, "one or more JSONL (.jsonl or .jsonl.gz) paths");
  r.string("text_field", d.text_field, {}, /*required=*/true);
  r.string("shards", d.shards);
  if (ctx.was_given("data.shards") && ctx.was_given("data.inputs"))
    ctx.fail(ctx.first_given({"data.shards"}), "data.shards",
             "is given together with data.inputs; a job reads either JSONL inputs or preprocessed "
             "shards",
             "remove data.inputs (the shards were made from them) or data.shards");
  r.string("tokenizer", d.tokenizer);
  r.integer("tokenizer_vocab", d.tokenizer_vocab, kMinTrainedVocab, kMaxVocab);
  r.string("work_dir", d.work_dir, {}, /*required=*/true);
  r.integer("seq_len", d.seq_len, 1);
  r.integer("seed", d.seed);
}

void read_train(Context& ctx, const toml::table* t, TrainConfig& tr) {
  TableReader r(ctx, t, "train", keys_of("train"));
  r.integer("steps", tr.steps, 1);
  r.integer("micro_batch", tr.micro_batch, 1);
  r.integer("grad_accum", tr.grad_accum, 1);
  r.string("precision", tr.precision, kPrecisions);
  r.integer("log_every", tr.log_every, 1);
  r.integer("threads", tr.threads, 0, kMaxThreads);
  r.string("loss_scaling", tr.loss_scaling, {"auto", "dynamic", "none"});
  // The scale multiplies an fp32 loss: above 2^64 it is a typo, and an infinite scaled loss would
  // overflow on every step without ever reaching min_loss_scale.
  auto scale = [](double v) { return v > 0 && v <= 0x1p64; };
  r.number("initial_loss_scale", tr.initial_loss_scale, scale, "> 0 and <= 2^64");
  r.integer("loss_scale_window", tr.loss_scale_window, 1);
  r.integer("loss_scale_hysteresis", tr.loss_scale_hysteresis, 1);
  r.number("min_loss_scale", tr.min_loss_scale, scale, "> 0 and <= 2^64");
}

void read_optimizer(Context& ctx, const toml::table* t, OptimizerConfig& o) {
  TableReader r(ctx, t, "optimizer", keys_of("optimizer"));
  r.positive("lr", o.lr);
  r.non_negative("min_lr", o.min_lr);
  auto unit = [](double v) { return v >= 0 && v < 1; };
  r.number("beta1", o.beta1, unit, "in [0, 1)");
  r.number("beta2", o.beta2, unit, "in [0, 1)");
  r.positive("eps", o.eps);
  r.non_negative("weight_decay", o.weight_decay);
  r.strings("no_decay", o.no_decay, /*required=*/false, "a list of parameter-name substrings");
  r.non_negative("grad_clip", o.grad_clip);
  r.integer("warmup_steps", o.warmup_steps, 0);
  r.string("schedule", o.schedule, kSchedules);
  r.string("warmup_type", o.warmup_type, kWarmupTypes);
  r.boolean("delayed_update", o.delayed_update);
}

void read_actors(Context& ctx, const toml::table* t, ActorsConfig& a) {
  TableReader r(ctx, t, "actors", keys_of("actors"));
  r.integer("prefetch_batches", a.prefetch_batches, 1, 1024);
  r.integer("prefetch_layers", a.prefetch_layers, 0, static_cast<int>(kMaxLayers));
  r.integer("gather_budget_mb", a.gather_budget_mb, 1, int64_t{1} << 30);  // MiB -> bytes in int64
  r.integer("adam_threads", a.adam_threads, 0, kMaxThreads);
  r.boolean("offload_params", a.offload_params);
}

void read_deadlines(Context& ctx, const toml::table* t, DeadlinesConfig& d) {
  TableReader r(ctx, t, "deadlines", keys_of("deadlines"));
  r.seconds("collective_s", d.collective_s);
  r.seconds("compute_s", d.compute_s);
  r.seconds("optimizer_s", d.optimizer_s);
  r.seconds("batch_s", d.batch_s);
  r.seconds("checkpoint_s", d.checkpoint_s);
  auto factor = [](double v) { return v >= 1 && v <= 100; };
  r.number("first_step_factor", d.first_step_factor, factor, ">= 1 and <= 100");
  auto poll = [](double v) { return v > 0 && v <= 60000; };
  r.number("poll_ms", d.poll_ms, poll, "> 0 and <= 60000 (a minute)");
  r.boolean("watchdog", d.watchdog);
}

void read_checkpoint(Context& ctx, const toml::table* t, CheckpointConfig& c) {
  TableReader r(ctx, t, "checkpoint", keys_of("checkpoint"));
  r.string("dir", c.dir);
  r.integer("every_steps", c.every_steps, 0);
  auto minutes = [](double v) { return v >= 0 && v <= kMaxSeconds / 60; };
  r.number("every_minutes", c.every_minutes, minutes, ">= 0 and <= 43200 (30 days)");
  r.integer("keep_last", c.keep_last, 1);
  r.integer("keep_every", c.keep_every, 0);
}

void read_control(Context& ctx, const toml::table* t, ControlConfig& c) {
  TableReader r(ctx, t, "control", keys_of("control"));
  r.string("secret", c.secret);
  r.seconds("heartbeat_s", c.heartbeat_s);
  r.integer("http_port", c.http_port, 0, 65535);
  r.string("http_host", c.http_host);
  r.boolean("doctor", c.doctor);
}

// ---- rules between fields ----------------------------------------------------------------------

void check_model(const Context& ctx, const Config& cfg) {
  const ModelConfig& m = cfg.model;
  // Blame the first of the involved keys written in the file, else the preset, else [model].
  // (With model.init_from its config.json gave the shape: blame that key.)
  auto model_pos = [&ctx, &m](std::vector<std::string> keys) {
    if (!m.init_from.empty()) keys.insert(keys.begin(), "model.init_from");
    keys.push_back("model.preset");
    keys.push_back("model");
    return ctx.first_given(keys);
  };
  std::string heads = std::to_string(m.heads), hidden = std::to_string(m.hidden);
  // Every division below is by a shape field: none may be 0 here (the reader's ranges and the
  // preset 'custom' rule ensure it; this guards the divisions themselves).
  for (auto [key, v] : {std::pair<const char*, int64_t>{"hidden", m.hidden}, {"heads", m.heads},
                        {"intermediate", m.intermediate}, {"layers", m.layers}}) {
    if (v > 0) continue;
    ctx.fail(model_pos({"model." + std::string(key)}), "model." + std::string(key),
             std::to_string(v) + preset_origin(ctx, m, key) + " is not a size",
             "an integer >= 1");
  }
  if (m.hidden % m.heads != 0) {
    ctx.fail(model_pos({"model.heads", "model.hidden"}), "model.heads",
             heads + preset_origin(ctx, m, "heads") + " does not divide model.hidden = " + hidden +
                 preset_origin(ctx, m, "hidden") + ": head_dim would be " +
                 fixed2(double(m.hidden) / double(m.heads)) + ", not an integer",
             head_suggestions(m.hidden, m.heads));
  }
  int64_t head_dim = m.hidden / m.heads;
  if (head_dim % 2 != 0) {
    ctx.fail(model_pos({"model.heads", "model.hidden"}), "model.heads",
             "head_dim = model.hidden / model.heads = " + hidden + " / " + heads + " = " +
                 std::to_string(head_dim) +
                 " is odd, but rotary embeddings rotate pairs of dimensions",
             head_suggestions(m.hidden, m.heads));
  }
  if (m.kv_heads != 0 && m.heads % m.kv_heads != 0) {
    std::vector<std::string> valid = {"0 (= heads)"};
    for (int64_t d : divisors(m.heads)) valid.push_back(std::to_string(d));
    ctx.fail(model_pos({"model.kv_heads", "model.heads"}), "model.kv_heads",
             std::to_string(m.kv_heads) + preset_origin(ctx, m, "kv_heads") +
                 " does not divide model.heads = " + heads + preset_origin(ctx, m, "heads") +
                 " (each key/value head must serve a whole number of query heads)",
             join(valid));
  }
  if (m.vocab_size != 0 && cfg.data.tokenizer.empty() && cfg.data.shards.empty() &&
      m.vocab_size < cfg.data.tokenizer_vocab) {
    std::string tv = std::to_string(cfg.data.tokenizer_vocab);
    ctx.fail(model_pos({"model.vocab_size", "data.tokenizer_vocab"}), "model.vocab_size",
             std::to_string(m.vocab_size) + preset_origin(ctx, m, "vocab_size") +
                 " is smaller than data.tokenizer_vocab = " + tv +
                 given_or_default(ctx, "data.tokenizer_vocab") +
                 " (the tokenizer trained from data.inputs emits ids up to " +
                 std::to_string(cfg.data.tokenizer_vocab - 1) + ")",
             "0 (take the tokenizer's) or >= " + tv);
  }
  if (cfg.data.seq_len > m.max_seq_len) {
    std::string max = std::to_string(m.max_seq_len);
    ctx.fail(ctx.first_given({"data.seq_len", "model.max_seq_len", "data"}), "data.seq_len",
             std::to_string(cfg.data.seq_len) + given_or_default(ctx, "data.seq_len") +
                 " exceeds model.max_seq_len = " + max + preset_origin(ctx, m, "max_seq_len"),
             "1.." + max + " (or raise model.max_seq_len)");
  }
}

// The sizes derived from the model's shape, in overflow-checked arithmetic: every parameter
// matrix, the parameter count, the rotary tables and the largest per-step activations (logits,
// attention scores) must stay within kMaxElements. A size beyond it is named with the key that
// made it so, before anything multiplies it into a byte count or allocates it. (The engine checks
// the layout it builds again, with the tokenizer's actual vocabulary: model/layout.cpp.)
void check_model_sizes(const Context& ctx, const Config& cfg) {
  const ModelConfig& m = cfg.model;
  // The vocabulary when known: model.vocab_size, else the tokenizer trained from the inputs.
  const bool trained = cfg.data.tokenizer.empty() && cfg.data.shards.empty();
  const int64_t vocab = m.vocab_size != 0 ? m.vocab_size : trained ? cfg.data.tokenizer_vocab : 1;
  const int64_t h = m.hidden, kv = m.kv_heads != 0 ? m.kv_heads : m.heads, hd = m.hidden / m.heads;
  auto value_of = [&](const std::string& key) -> std::string {
    for (auto [k, v] : {std::pair<const char*, int64_t>{"model.hidden", m.hidden},
                        {"model.intermediate", m.intermediate}, {"model.layers", m.layers},
                        {"model.vocab_size", m.vocab_size}, {"model.heads", m.heads},
                        {"model.max_seq_len", m.max_seq_len}, {"data.seq_len", cfg.data.seq_len},
                        {"train.micro_batch", cfg.train.micro_batch}})
      if (key == k) {
        std::string origin = key.rfind("model.", 0) == 0 ? preset_origin(ctx, m, key.substr(6))
                                                         : given_or_default(ctx, key);
        return std::to_string(v) + origin;
      }
    return "";
  };
  auto too_large = [&](const std::string& key, const std::string& what) {
    std::vector<std::string> keys = {key};
    if (!m.init_from.empty() && key.rfind("model.", 0) == 0) keys.insert(keys.begin(), "model.init_from");
    keys.push_back("model.preset");
    keys.push_back(key.substr(0, key.find('.')));
    ctx.fail(ctx.first_given(keys), key,
             value_of(key) + " makes " + what + " larger than 2^53 elements (9.0e15)",
             "a smaller " + key + " (sizes derived from the model's shape stay below 2^53)");
  };
  auto mul = [&](int64_t a, int64_t b, const std::string& key, const std::string& what) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r) || r > kMaxElements) too_large(key, what);
    return r;
  };
  auto add = [&](int64_t a, int64_t b, const std::string& key, const std::string& what) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r) || r > kMaxElements) too_large(key, what);
    return r;
  };
  const int64_t square = mul(h, h, "model.hidden", "q_proj (hidden x hidden)");
  const int64_t embed = mul(vocab, h, m.vocab_size > h ? "model.vocab_size" : "model.hidden",
                            "the embedding (vocab_size x hidden)");
  const int64_t kv_proj = mul(kv * hd, h, "model.hidden", "k_proj (kv_heads x head_dim x hidden)");
  const int64_t mlp = mul(m.intermediate, h, "model.intermediate", "gate_proj (intermediate x hidden)");
  const std::string block_what = "one transformer block";
  int64_t block = add(mul(2, square, "model.hidden", block_what),
                      mul(2, kv_proj, "model.hidden", block_what), "model.hidden", block_what);
  block = add(block, mul(3, mlp, "model.intermediate", block_what), "model.intermediate", block_what);
  block = add(block, 2 * h, "model.hidden", block_what);
  const int64_t blocks = mul(m.layers, block, "model.layers", "the parameter count (layers x block)");
  add(add(blocks, mul(2, embed, "model.hidden", "the parameter count"), "model.hidden",
          "the parameter count"),
      h, "model.hidden", "the parameter count");
  mul(m.max_seq_len, hd, "model.max_seq_len", "the rotary tables (max_seq_len x head_dim)");
  const int64_t tokens = mul(cfg.train.micro_batch, cfg.data.seq_len, "train.micro_batch",
                             "a micro-batch (micro_batch x seq_len tokens)");
  mul(tokens, vocab, "train.micro_batch", "the logits of a micro-batch (tokens x vocab_size)");
  mul(mul(tokens, cfg.data.seq_len, "data.seq_len", "the attention scores (tokens x seq_len x heads)"),
      m.heads, "data.seq_len", "the attention scores (tokens x seq_len x heads)");
  mul(tokens, std::max(h, m.intermediate), "train.micro_batch",
      "the activations of a micro-batch (tokens x intermediate)");
}

void check_training(const Context& ctx, const Config& cfg) {
  const OptimizerConfig& o = cfg.optimizer;
  if (o.min_lr > o.lr) {
    ctx.fail(ctx.first_given({"optimizer.min_lr", "optimizer.lr", "optimizer"}), "optimizer.min_lr",
             fmt_double(o.min_lr) + given_or_default(ctx, "optimizer.min_lr") +
                 " exceeds optimizer.lr = " + fmt_double(o.lr) +
                 given_or_default(ctx, "optimizer.lr") +
                 " (the schedule decays from lr down to min_lr)",
             "0 <= min_lr <= " + fmt_double(o.lr));
  }
  if (o.warmup_steps > cfg.train.steps) {
    std::string steps = std::to_string(cfg.train.steps);
    ctx.fail(ctx.first_given({"optimizer.warmup_steps", "train.steps", "optimizer"}),
             "optimizer.warmup_steps",
             std::to_string(o.warmup_steps) + given_or_default(ctx, "optimizer.warmup_steps") +
                 " exceeds train.steps = " + steps + given_or_default(ctx, "train.steps") +
                 " (the run would end before reaching the peak learning rate)",
             "0.." + steps);
  }
}

void check_topology(const Context& ctx, const TopologyConfig& topo) {
  for (size_t i = 0; i < topo.nodes.size(); ++i) {
    const NodeSpec& a = topo.nodes[i];
    std::string key = "topology.nodes[" + std::to_string(i) + "]";
    if (a.port == 0 && topo.nodes.size() > 1) {
      ctx.fail(ctx.first_given({key + ".port", key + ".host"}), key + ".port",
               "0 (pick a free port) only works with a single node; peers must know where to dial",
               "a port in 1..65534");
    }
    for (size_t j = 0; j < i; ++j) {
      const NodeSpec& b = topo.nodes[j];
      if (a.port == 0 || a.host != b.host || a.port != b.port) continue;
      ctx.fail(ctx.first_given({key + ".port", key + ".host"}), key,
               a.host + ":" + std::to_string(a.port) + " is already used by topology.nodes[" +
                   std::to_string(j) + "]",
               "a distinct host:port per node");
    }
  }
  // Node 0 serves the rendezvous store on its port + 1: no other node of that host may use it.
  for (size_t i = 1; i < topo.nodes.size(); ++i) {
    const NodeSpec &n0 = topo.nodes[0], &a = topo.nodes[i];
    if (n0.port == 0 || a.host != n0.host || a.port != n0.port + 1) continue;
    std::string key = "topology.nodes[" + std::to_string(i) + "]";
    ctx.fail(ctx.first_given({key + ".port", key + ".host"}), key + ".port",
             a.host + ":" + std::to_string(a.port) + " is node 0's rendezvous store (topology.nodes[0]"
             ".port + 1)",
             "a port other than " + std::to_string(a.port) + " on " + a.host);
  }
  int64_t world = 0;
  for (const NodeSpec& node : topo.nodes) world += node.devices;
  if (world > kMaxWorld)
    ctx.fail(ctx.first_given({"topology.nodes", "topology"}), "topology.nodes",
             "the devices add up to " + std::to_string(world) + " ranks",
             "at most " + std::to_string(kMaxWorld) + " ranks in one job");
  size_t count = topo.nodes.empty() ? 1 : topo.nodes.size();
  if (static_cast<size_t>(topo.node_index) >= count) {
    ctx.fail(ctx.first_given({"topology.node_index", "topology"}), "topology.node_index",
             std::to_string(topo.node_index) + " but topology.nodes lists " +
                 std::to_string(count) + (count == 1 ? " node" : " nodes"),
             "0.." + std::to_string(count - 1));
  }
}

}  // namespace

ModelConfig model_preset(const std::string& name) {
  ModelConfig m;  // rms_eps 1e-5, rope_theta 10000, max_seq_len 4096 unless set below
  m.preset = name;
  m.vocab_size = 32000;
  auto shape = [&m](int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                    int64_t kv_heads) {
    m.hidden = hidden;
    m.intermediate = intermediate;
    m.layers = layers;
    m.heads = heads;
    m.kv_heads = kv_heads;
  };
  if (name == "tiny") {
    shape(256, 688, 4, 8, 8);
  } else if (name == "1b") {
    shape(2048, 5504, 24, 16, 16);
  } else if (name == "3b") {
    shape(3200, 8640, 26, 32, 32);
  } else if (name == "7b") {  // Llama-2-7B
    shape(4096, 11008, 32, 32, 32);
    m.max_seq_len = 4096;
    m.rms_eps = 1e-5;
  } else if (name == "xuanyuan-6b") {
    // Follows the published XuanYuan-6B config (Du Xiaoman): a Llama-2 architecture with 30 layers
    // and a vocabulary extended for Chinese, hidden 4096, intermediate 11008, 32 heads.
    shape(4096, 11008, 30, 32, 32);
    m.vocab_size = 39438;
    m.max_seq_len = 4096;
    m.rms_eps = 1e-5;
  } else if (name == "custom") {
    shape(0, 0, 0, 0, 0);  // every shape must be given in [model]
    m.vocab_size = 0;
  } else {
    std::string near = closest(name, kPresets);
    throw ConfigError("model.preset: " + quoted(name) + " is not a preset" +
                      (near.empty() ? "" : " (did you mean " + quoted(near) + "?)") +
                      "; valid: " + join(kPresets));
  }
  return m;
}

Config parse_config(const std::string& toml_text, const std::string& source_name) {
  Context ctx(source_name);
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    ctx.fail(e.source().begin, "", "TOML syntax error: " + std::string(e.description()));
  } catch (const TomlInternalError&) {
    ctx.fail({first_line_toml_trips_on(toml_text), 0}, "",
             "TOML syntax error: toml++ cannot parse this line (look for a stray or unclosed "
             "bracket, brace or quote)");
  }
  auto tables = top_level_tables(ctx, root);
  auto table = [&tables](const char* name) -> const toml::table* {
    auto it = tables.find(name);
    return it == tables.end() ? nullptr : it->second;
  };

  Config cfg;
  read_topology(ctx, table("topology"), cfg.topology);
  read_model(ctx, table("model"), cfg.model);
  read_data(ctx, table("data"), cfg.data);
  read_train(ctx, table("train"), cfg.train);
  read_optimizer(ctx, table("optimizer"), cfg.optimizer);
  read_actors(ctx, table("actors"), cfg.actors);
  read_deadlines(ctx, table("deadlines"), cfg.deadlines);
  read_checkpoint(ctx, table("checkpoint"), cfg.checkpoint);
  read_control(ctx, table("control"), cfg.control);
  {
    TableReader r(ctx, table("faults"), "faults", keys_of("faults"));
    r.string("inject", cfg.faults.inject);
  }

  check_topology(ctx, cfg.topology);
  check_model(ctx, cfg);
  check_model_sizes(ctx, cfg);
  check_training(ctx, cfg);
  // Node i's status server listens on control.http_port + i.
  if (cfg.control.http_port > 0) {
    const int64_t nodes = cfg.topology.nodes.empty() ? 1 : static_cast<int64_t>(cfg.topology.nodes.size());
    if (cfg.control.http_port + nodes - 1 > 65535)
      ctx.fail(ctx.first_given({"control.http_port"}), "control.http_port",
               std::to_string(cfg.control.http_port) + " + node index reaches " +
                   std::to_string(cfg.control.http_port + nodes - 1) + " for the last of " +
                   std::to_string(nodes) + " nodes (node i serves on http_port + i)",
               "1.." + std::to_string(65535 - nodes + 1) + ", or 0 (off)");
  }

  // Fill the documented defaults that depend on other fields.
  if (cfg.topology.nodes.empty()) cfg.topology.nodes.push_back(NodeSpec{});
  if (cfg.model.kv_heads == 0) cfg.model.kv_heads = cfg.model.heads;
  if (cfg.checkpoint.dir.empty()) cfg.checkpoint.dir = cfg.data.work_dir + "/checkpoints";
  cfg.source = source_name;
  return cfg;
}

Config load_config(const std::string& path) {
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw ConfigError("cannot read config file '" + path + "': " + std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  int err = std::ferror(f) ? errno : 0;
  std::fclose(f);
  if (err) throw ConfigError("cannot read config file '" + path + "': " + std::strerror(err));
  return parse_config(text, path);
}

}  // namespace xy
