// Loads the job configuration from TOML (toml++) and validates it once, with messages that name
// the file, line, column and dotted key of the mistake and say what would be valid. What the keys
// are, their rules and their docs: the field tables (io/config_fields.cpp); this file reads a TOML
// file by them, then runs the rules between keys (io/config_checks.cpp).
#include "io/config.hpp"

#include <stdexcept>

#include "io/config_fields.hpp"
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
#include <type_traits>
#include <vector>


namespace xy {

int TopologyConfig::world_size() const {
  int total = 0;
  for (const NodeSpec& node : nodes) total += node.devices;
  return total;
}

double placement_fraction(const std::string& placement) {
  if (placement == "cpu") return 0;
  if (placement == "gpu") return 1;
  if (placement == "auto") return -1;
  // A plain decimal: digits, at most one point (no sign, exponent, inf or nan).
  const bool digits = !placement.empty() && placement.find_first_not_of("0123456789.") == std::string::npos &&
                      std::count(placement.begin(), placement.end(), '.') <= 1 && placement != ".";
  const double f = digits ? std::strtod(placement.c_str(), nullptr) : -1;
  if (!digits || f < 0 || f > 1)
    throw std::invalid_argument("optimizer.placement = \"" + placement +
                                "\": not \"cpu\", \"gpu\", \"auto\" or a fraction in [0, 1]");
  return f;
}

namespace {

using namespace config_fields;

// ---- what a value is, in words -----------------------------------------------------------------

Pos pos(const toml::source_position& p) { return {p.line, p.column}; }
Pos pos(const toml::node& n) { return pos(n.source().begin); }

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

// ---- reading a table by its field table --------------------------------------------------------

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
  for (const TableKeys& t : schema()) {
    if (t.name == prefix) continue;
    if (std::find(t.keys.begin(), t.keys.end(), name) != t.keys.end())
      return " (" + quoted(name) + " belongs in [" + t.name + "])";
  }
  return "";
}

// Reads the keys of one table, each by its rule. The constructor rejects keys not in `keys` first,
// since a misspelled key is the likeliest cause of any later surprise.
class TableReader {
 public:
  TableReader(Context& ctx, const toml::table* table, std::string prefix,
              std::vector<std::string> keys)
      : ctx_(ctx), table_(table), prefix_(std::move(prefix)), keys_(std::move(keys)) {
    if (!table_) return;
    for (const auto& [k, node] : in_file_order(*table_)) {
      const std::string name(k->str());
      if (std::find(keys_.begin(), keys_.end(), name) != keys_.end()) continue;
      ctx_.fail(pos(k->source().begin), dotted(name),
                "unknown key" + unknown_key_hint(name, keys_, prefix_), join(keys_));
    }
  }

  Context& ctx() { return ctx_; }
  std::string dotted(const std::string& key) const { return prefix_ + "." + key; }

  // The node of `key` if present (recording its position), else nullptr.
  const toml::node* node(const std::string& key) {
    if (!table_) return nullptr;
    const toml::node* n = table_->get(key);
    if (n) ctx_.given(dotted(key), pos(*n));
    return n;
  }

  [[noreturn]] void fail(const toml::node& n, const std::string& key, const std::string& problem,
                         const std::string& valid) const {
    ctx_.fail(pos(n), dotted(key), problem, valid);
  }

  // An integer in [min, max] (max: the rule's, at most the member type's).
  void integer(const std::string& key, int64_t& out, const Rule& rule, int64_t max) {
    const toml::node* n = node(key);
    if (!n) return;
    std::string valid = rule.valid();
    if (!n->is_integer()) fail(*n, key, "expected an integer, got " + got_phrase(*n), valid);
    int64_t v = n->as_integer()->get();
    // The type's own limit is not stated in `valid` unless the value exceeds it.
    if (v > max) valid = "an integer in " + std::to_string(rule.min) + ".." + std::to_string(max);
    if (v < rule.min || v > max) fail(*n, key, std::to_string(v) + " is out of range", valid);
    out = v;
  }

  // A finite number (float or integer) accepted by the rule.
  void number(const std::string& key, double& out, const Rule& rule) {
    const toml::node* n = node(key);
    if (!n) return;
    const std::string valid = rule.valid();
    double v = 0;
    if (n->is_floating_point()) {
      v = n->as_floating_point()->get();
    } else if (n->is_integer()) {
      v = static_cast<double>(n->as_integer()->get());
    } else {
      fail(*n, key, "expected a number, got " + got_phrase(*n), valid);
    }
    if (!std::isfinite(v)) fail(*n, key, value_text(*n) + " is not a finite number", valid);
    if (!rule.ok(v)) fail(*n, key, value_text(*n) + " is out of range", valid);
    out = v;
  }

  // A string; one of the rule's `allowed` when that is not empty; not empty when `required`.
  void string(const std::string& key, std::string& out, const Rule& rule) {
    const toml::node* n = node(key);
    if (!n) return;
    const std::string valid = rule.valid();
    if (!n->is_string()) fail(*n, key, "expected a string, got " + got_phrase(*n), valid);
    const std::string& v = n->as_string()->get();
    if (rule.required && v.empty()) fail(*n, key, "must not be empty", valid);
    const std::vector<std::string>& allowed = rule.allowed;
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
  void boolean(const std::string& key, bool& out, const Rule& rule) {
    const toml::node* n = node(key);
    if (!n) return;
    if (!n->is_boolean()) fail(*n, key, "expected a boolean, got " + got_phrase(*n), rule.valid());
    out = n->as_boolean()->get();
  }

  // An array of strings; each non-empty; the array itself non-empty when `required`.
  void strings(const std::string& key, std::vector<std::string>& out, const Rule& rule) {
    const toml::node* n = node(key);
    if (!n) return;
    const std::string valid = rule.valid();
    if (!n->is_array()) fail(*n, key, "expected an array of strings, got " + got_phrase(*n), valid);
    const toml::array& arr = *n->as_array();
    if (rule.required && arr.empty()) fail(*n, key, "the list is empty", valid);
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
  std::vector<std::string> keys_;
};

template <class T>
void read_table(Context& ctx, const toml::table* t, const Table<T>& table, const std::string& prefix,
                T& out);

// One key into its member, by the member's type; the rule must be of that type (a field table
// that pairs them wrongly is a programming error, found by any test that reads the key).
template <class V>
void read_value(TableReader& r, const std::string& key, const Rule& rule, V& out) {
  auto expect = [&](Kind kind) {
    if (rule.kind != kind)
      throw std::logic_error("config field table: " + r.dotted(key) + ": rule does not fit the member");
  };
  if constexpr (std::is_same_v<V, int64_t>) {
    expect(Kind::kInteger);
    r.integer(key, out, rule, rule.max);
  } else if constexpr (std::is_same_v<V, int> || std::is_same_v<V, uint64_t>) {
    expect(Kind::kInteger);
    int64_t v = static_cast<int64_t>(out);
    r.integer(key, v, rule, std::is_same_v<V, int> ? std::min<int64_t>(rule.max, INT_MAX) : rule.max);
    out = static_cast<V>(v);
  } else if constexpr (std::is_same_v<V, double>) {
    expect(Kind::kNumber);
    r.number(key, out, rule);
  } else if constexpr (std::is_same_v<V, bool>) {
    expect(Kind::kBoolean);
    r.boolean(key, out, rule);
  } else if constexpr (std::is_same_v<V, std::string>) {
    expect(Kind::kString);
    r.string(key, out, rule);
  } else if constexpr (std::is_same_v<V, std::vector<std::string>>) {
    expect(Kind::kStrings);
    r.strings(key, out, rule);
  } else {
    static_assert(std::is_same_v<V, std::vector<NodeSpec>>);
    expect(Kind::kTables);
    // [[topology.nodes]]: an array of tables, each read by node_table().
    const toml::node* n = r.node(key);
    if (!n) return;
    const std::string valid = rule.valid();
    if (!n->is_array())
      r.fail(*n, key, "expected an array of tables, got " + got_phrase(*n), valid);
    const toml::array& arr = *n->as_array();
    if (arr.empty()) r.fail(*n, key, "the list is empty, but at least one node is needed", valid);
    out.clear();
    for (size_t i = 0; i < arr.size(); ++i) {
      std::string prefix = r.dotted(key) + "[" + std::to_string(i) + "]";
      if (!arr[i].is_table())
        r.ctx().fail(pos(arr[i]), prefix, "expected a table, got " + got_phrase(arr[i]), valid);
      NodeSpec node;
      read_table(r.ctx(), arr[i].as_table(), node_table(), prefix, node);
      out.push_back(node);
    }
  }
}

// Every key of `table` in its order, each followed by its `then`, and the table's `after` last.
template <class T>
void read_table(Context& ctx, const toml::table* t, const Table<T>& table, const std::string& prefix,
                T& out) {
  TableReader r(ctx, t, prefix, table.keys());
  for (const Field<T>& f : table.fields) {
    std::visit([&](auto member) { read_value(r, f.key, f.rule, out.*member); }, f.member);
    if (f.then) f.then(ctx, prefix, out);
  }
  if (table.after) table.after(ctx, prefix, out);
}

// Checks the top level: only the known tables, each a table. Returns each table (or nullptr).
std::map<std::string, const toml::table*> top_level_tables(Context& ctx, const toml::table& root) {
  std::vector<std::string> names, headers;
  for (const TableKeys& t : schema()) {
    names.push_back(t.name);
    headers.push_back("[" + t.name + "]");
  }
  std::map<std::string, const toml::table*> tables;
  for (const auto& [k, node] : in_file_order(root)) {
    const std::string name(k->str());
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::string near = closest(name, names);
      std::string hint = near.empty() ? "" : " (did you mean [" + near + "]?)";
      if (node->is_table())
        ctx.fail(pos(k->source().begin), name, "unknown table" + hint, join(headers));
      if (hint.empty()) hint = unknown_key_hint(name, {}, "");
      ctx.fail(pos(k->source().begin), name, "unknown key at the top level" + hint,
               "the tables " + join(headers));
    }
    if (!node->is_table())
      ctx.fail(pos(*node), name, "expected a table, got " + got_phrase(*node),
               "a table [" + name + "] with the keys " + join(keys_of(name)));
    tables[name] = node->as_table();
    ctx.given(name, pos(*node));
  }
  return tables;
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

}  // namespace

Config parse_config(const std::string& toml_text, const std::string& source_name) {
  Context ctx(source_name);
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    ctx.fail(pos(e.source().begin), "", "TOML syntax error: " + std::string(e.description()));
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
  for_each_table(cfg, [&](const auto& fields, auto& out) {
    read_table(ctx, table(fields.name.c_str()), fields, fields.name, out);
  });
  // A pretrained model's embedding rows mean its own tokenizer's ids: model.init_from's tokenizer
  // (tokenizer.json or tokenizer.model in the folder) is the run's when data.tokenizer is empty.
  // Resolved here, so that every command (train, doctor, preprocess) and check sees the same one.
  if (cfg.data.tokenizer.empty()) cfg.data.tokenizer = hf_folder_tokenizer(cfg.model.init_from);
  check_config(ctx, cfg);

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
