// The configuration's keys, each stated once: one field table per TOML table (io/config_fields.cpp)
// gives every key its struct member, its rule (type, range or allowed values), the default shown in
// the docs when the struct's own is not it, and its documentation. From the tables come
//   - the schema: the valid keys named by "unknown key; valid: ..." (schema()),
//   - the reader: io/config.cpp reads each key into its member by its rule (read_table),
//   - the key tables of docs/CONFIG.md (doc_table; tests/config_test.cpp checks the file).
// Rules between keys (warmup_steps <= steps, seq_len <= max_seq_len, ...) run after every table is
// read (check_config, io/config_checks.cpp).
//
// Internal to xy_io (and its tests): io/config.hpp is the interface. Nothing here needs toml++,
// which only io/config.cpp includes (see there).
#pragma once

#include <climits>
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "io/config.hpp"

namespace xy {
namespace config_fields {

// ---- limits ------------------------------------------------------------------------------------

// Upper bounds of numeric keys. Beyond them a value is a typo rather than a plan, and some would
// overflow where they are used: deadlines become c10d/Gloo timeouts in int64 milliseconds (1e300
// seconds wrapped to a negative timeout), thread counts start that many threads, token ids are
// int32, and node 0's rendezvous store listens on its port + 1.
constexpr double kMaxSeconds = 30 * 24 * 3600.0;  // any deadline or interval: 30 days
constexpr int kMaxPort = 65534;                   // a node's port + 1 (the store) is a port too
constexpr int kMaxDevices = 1024;                 // ranks (devices) of one node
constexpr int64_t kMaxWorld = 1 << 20;            // ranks of the whole job
constexpr int kMaxThreads = 1024;                 // train.threads, actors.adam_threads
constexpr int64_t kMaxVocab = INT32_MAX;          // token ids are int32
constexpr int64_t kMaxLayers = 1000000;           // units are int32-indexed
// Elements of any one tensor, of the parameter count and of per-step activations derived from
// the model's shape: 2^53 (exact in a double; 16 bytes per element still fit in int64). Checked
// with overflow-safe arithmetic (check_config).
constexpr int64_t kMaxElements = int64_t{1} << 53;

extern const std::vector<std::string> kPresets;  // model.preset's values, "custom" last

// ---- text --------------------------------------------------------------------------------------

std::string join(const std::vector<std::string>& items, const char* sep = ", ");
std::string quoted(const std::string& s);  // 'text'
// A double as a user would write it: the shortest text that reads back as exactly `v` (0.9, not
// 0.90000000000000002), integral values with ".0" (10.0), exponents without padding (1e-6).
std::string fmt_double(double v);
// The candidate closest to `word` (ASCII case-insensitive) within 3 edits; empty if none.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

// ---- where things are, and the error builder ---------------------------------------------------

// A position in the file; 0 = unknown (toml++'s source_position, without toml++).
struct Pos {
  uint32_t line = 0;
  uint32_t column = 0;
};

class Context {
 public:
  explicit Context(std::string source) : source_(std::move(source)) {}

  // Throws the ConfigError "SOURCE:LINE:COL: KEY: problem; valid: ..." (LINE:COL omitted when the
  // position is unknown, COL when only the line is known, KEY when empty, "; valid" when `valid`
  // is empty).
  [[noreturn]] void fail(Pos where, const std::string& key, const std::string& problem,
                         const std::string& valid = "") const;

  // Records that the dotted key (or table) was written in the file, at `where`.
  void given(const std::string& key, Pos where) { given_[key] = where; }
  bool was_given(const std::string& key) const { return given_.count(key) != 0; }

  // The position of the first of `keys` that was written in the file; none if none was.
  Pos first_given(const std::vector<std::string>& keys) const;

 private:
  std::string source_;
  std::map<std::string, Pos> given_;
};

// ---- rules and fields --------------------------------------------------------------------------

enum class Kind { kInteger, kNumber, kString, kBoolean, kStrings, kTables };

// What a key accepts. valid() is the text after "valid:" in the key's messages and in its row of
// docs/CONFIG.md.
struct Rule {
  Kind kind = Kind::kString;
  int64_t min = 0, max = INT64_MAX;  // integer: min..max (INT64_MAX / INT_MAX: the type's limit)
  bool (*ok)(double) = nullptr;      // number: accepted values, described by `range` ("> 0")
  std::string range;
  std::vector<std::string> allowed;  // string: one of these, when not empty
  bool required = false;             // string: not empty; list: at least one entry
  std::string list_valid;            // list: what it holds

  std::string valid() const;
};

Rule integer(int64_t min, int64_t max = INT64_MAX);
Rule number(bool (*ok)(double), std::string range);
Rule positive();      // a number > 0
Rule non_negative();  // a number >= 0
Rule seconds();       // a deadline or interval: > 0 and at most kMaxSeconds
Rule string();        // any string
Rule non_empty();     // a string, not empty
Rule one_of(std::vector<std::string> allowed);
Rule boolean();
Rule strings(bool required, std::string valid);  // an array of non-empty strings
Rule tables(std::string valid);                  // an array of tables (the [[topology.nodes]])

// The struct member a key is read into.
template <class T>
using Member = std::variant<int T::*, int64_t T::*, uint64_t T::*, double T::*, bool T::*,
                            std::string T::*, std::vector<std::string> T::*,
                            std::vector<NodeSpec> T::*>;

// One key of the table whose struct is T. `then` runs right after the key is read (a check that
// needs the value, or its consequence: the preset fills the shape); `prefix` is the table's dotted
// name ("topology.nodes[1]").
template <class T>
struct Field {
  using Hook = void (*)(const Context& ctx, const std::string& prefix, T& out);
  Field(std::string key, Member<T> member, Rule rule, std::string doc, std::string shown_default = "",
        Hook then = nullptr)
      : key(std::move(key)), member(member), rule(std::move(rule)), doc(std::move(doc)),
        shown_default(std::move(shown_default)), then(then) {}

  std::string key;
  Member<T> member;
  Rule rule;
  std::string doc;            // its row in docs/CONFIG.md: what it means (markdown)
  std::string shown_default;  // the docs' default when not the member's in T{} (markdown)
  Hook then;
};

// One TOML table: its keys in reading order (the order of every "valid:" key list and of the
// docs), then `after`, run once all of them are read.
template <class T>
struct Table {
  std::string name;  // "model", "topology.nodes"
  std::vector<Field<T>> fields;
  void (*after)(const Context& ctx, const std::string& prefix, T& out) = nullptr;

  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    for (const Field<T>& f : fields) k.push_back(f.key);
    return k;
  }
};

const Table<TopologyConfig>& topology_table();
const Table<NodeSpec>& node_table();  // each [[topology.nodes]]
const Table<ModelConfig>& model_table();
const Table<DataConfig>& data_table();
const Table<TrainConfig>& train_table();
const Table<OptimizerConfig>& optimizer_table();
const Table<ActorsConfig>& actors_table();
const Table<DeadlinesConfig>& deadlines_table();
const Table<CheckpointConfig>& checkpoint_table();
const Table<ControlConfig>& control_table();
const Table<EvalConfig>& eval_table();
const Table<Config::FaultsConfig>& faults_table();

// Calls f(table, member of cfg) for each top-level table, in file order of the docs.
template <class F>
void for_each_table(Config& cfg, F&& f) {
  f(topology_table(), cfg.topology);
  f(model_table(), cfg.model);
  f(data_table(), cfg.data);
  f(train_table(), cfg.train);
  f(optimizer_table(), cfg.optimizer);
  f(actors_table(), cfg.actors);
  f(deadlines_table(), cfg.deadlines);
  f(checkpoint_table(), cfg.checkpoint);
  f(control_table(), cfg.control);
  f(eval_table(), cfg.eval);
  f(faults_table(), cfg.faults);
}

// The top-level tables and their keys.
struct TableKeys {
  std::string name;
  std::vector<std::string> keys;
};
const std::vector<TableKeys>& schema();
const std::vector<std::string>& keys_of(const std::string& table);  // throws logic_error if none

// ---- docs/CONFIG.md ----------------------------------------------------------------------------

// The tables with a key table in docs/CONFIG.md: each top-level one and "topology.nodes".
std::vector<std::string> doc_table_names();
// The markdown key table of `name` (a header row, then one row per key: key, default, valid,
// meaning), each line ending in '\n'. Throws logic_error for an unknown name.
std::string doc_table(const std::string& name);

// ---- rules between keys ------------------------------------------------------------------------

// The rules that involve keys of several tables, or keys and the preset (io/config_checks.cpp).
void check_config(const Context& ctx, const Config& cfg);

}  // namespace config_fields
}  // namespace xy
