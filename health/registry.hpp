// The registry of in-flight operations and of what each rank is doing: the watchdog's eyes.
//
// Every asynchronous operation (collective, layer compute, CPU Adam on a unit, batch wait,
// checkpoint write) is registered with begin() and removed with end() (or by an OpScope).
// Thread-safe; begin/end cost one mutex each (a few hundred per step).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace xy {

using Clock = std::chrono::steady_clock;

struct OpRecord {
  uint64_t id = 0;
  std::string kind;    // "all-gather", "reduce-scatter", "all-reduce", "forward", "backward",
                       // "adam", "batch", "checkpoint", "wait-gather", ...
  int rank = -1;       // global rank, -1 for node-level work
  int unit = -1;       // unit index (0 = embedding, 1..L = blocks, L+1 = head), -1 if none
  uint64_t seq = 0;    // collective sequence number on the rank's communicator, 0 if none
  int64_t step = 0;    // training step (1-based)
  Clock::time_point start;
  Clock::time_point deadline;
};

struct RankStatus {
  int rank = -1;
  int64_t step = 0;
  std::string phase = "init";  // init | forward | backward | optimizer | done
  int unit = -1;
  double loss = 0;
  double tokens_per_s = 0;
};

class OpRegistry {
 public:
  uint64_t begin(std::string kind, int rank, int unit, uint64_t seq, int64_t step,
                 double deadline_s);
  void end(uint64_t id);
  std::vector<OpRecord> snapshot() const;
  // The overdue operation that started first, if any.
  std::optional<OpRecord> first_overdue(Clock::time_point now) const;

  void set_status(const RankStatus& s);
  std::vector<RankStatus> statuses() const;

  // A human-readable stall report: the overdue op, every in-flight op with its age, and per rank
  // its phase; for a collective, which ranks have and have not issued that sequence number.
  // (This node only: stall_report_json() below merges the snapshots of every node.)
  std::string stall_report(const OpRecord& overdue, Clock::time_point now) const;

  // This node's state as JSON (what crosses the control plane and what /status serves):
  // {"node", "name", "ranks": [{rank, step, phase, unit}], "ops": [{kind, rank, unit, seq, step,
  //  age_s, limit_s}], "last_seq": {rank: seq}, "recent": {rank: [[seq, kind, unit, step], ...]}}.
  nlohmann::json to_json(Clock::time_point now, int node, const std::string& name) const;
  static nlohmann::json op_json(const OpRecord& r, Clock::time_point now);

 private:
  mutable std::mutex mu_;
  uint64_t next_id_ = 0;                 // guarded by mu_
  std::map<uint64_t, OpRecord> ops_;     // guarded by mu_
  std::map<int, RankStatus> status_;     // guarded by mu_
  std::map<int, uint64_t> last_seq_;     // highest collective seq each rank issued; guarded by mu_
  // The last collectives each rank issued: (seq, kind, unit, step); guarded by mu_.
  struct Issued { uint64_t seq; std::string kind; int unit; int64_t step; };
  std::map<int, std::deque<Issued>> recent_;
};

// The stall report of a whole job from every node's to_json() (`nodes`; null entries for nodes
// that did not answer, named by `node_names`): the overdue operation `overdue` (op_json form plus
// "node"), the culprit (the rank that has not issued the oldest awaited collective, or whose own
// operation is overdue; or two ranks that issued collective #n differently), which ranks have and
// have not issued that collective, every rank's phase and every in-flight operation.
std::string stall_report_json(const nlohmann::json& overdue, const std::vector<nlohmann::json>& nodes,
                              const std::vector<std::string>& node_names);

// Registers an operation for the lifetime of the scope.
class OpScope {
 public:
  OpScope(OpRegistry* reg, std::string kind, int rank, int unit, uint64_t seq, int64_t step,
          double deadline_s)
      : reg_(reg), id_(reg ? reg->begin(std::move(kind), rank, unit, seq, step, deadline_s) : 0) {}
  ~OpScope() { if (reg_) reg_->end(id_); }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  OpRegistry* reg_;
  uint64_t id_;
};

}  // namespace xy
