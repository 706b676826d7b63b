// The in-flight operation registry and the stall report (see registry.hpp).
#include "health/registry.hpp"

#include <algorithm>
#include <set>
#include <sstream>

namespace xy {
namespace {
bool is_collective(const std::string& kind) {
  return kind == "all-gather" || kind == "reduce-scatter" || kind == "all-reduce" || kind == "broadcast";
}
// Waiting (in a collective, for a gathered unit, for a batch) rather than working (compute, Adam, a
// batch read, a checkpoint write): an overdue wait is usually the consequence of overdue work.
bool is_wait(const std::string& kind) {
  return is_collective(kind) || kind == "wait-gather" || kind == "batch";
}
}  // namespace

uint64_t OpRegistry::begin(std::string kind, int rank, int unit, uint64_t seq, int64_t step,
                           double deadline_s) {
  OpRecord r;
  r.kind = std::move(kind);
  r.rank = rank;
  r.unit = unit;
  r.seq = seq;
  r.step = step;
  r.start = Clock::now();
  r.deadline = r.start + std::chrono::microseconds(static_cast<int64_t>(deadline_s * 1e6));
  std::lock_guard<std::mutex> lock(mu_);
  r.id = ++next_id_;
  if (seq > 0) {
    uint64_t& last = last_seq_[rank];
    last = std::max(last, seq);
    auto& recent = recent_[rank];
    recent.push_back({seq, r.kind, unit, step});
    if (recent.size() > 64) recent.pop_front();
  }
  ops_.emplace(r.id, std::move(r));
  return next_id_;
}

void OpRegistry::end(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  ops_.erase(id);
}

std::vector<OpRecord> OpRegistry::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<OpRecord> out;
  for (const auto& [id, r] : ops_) out.push_back(r);
  return out;
}

std::optional<OpRecord> OpRegistry::first_overdue(Clock::time_point now) const {
  // Work before waits (is_wait).
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<OpRecord> best;
  for (const auto& [id, r] : ops_) {
    if (r.deadline >= now) continue;
    if (!best || std::make_pair(is_wait(r.kind), r.start) < std::make_pair(is_wait(best->kind), best->start))
      best = r;
  }
  return best;
}

void OpRegistry::set_status(const RankStatus& s) {
  std::lock_guard<std::mutex> lock(mu_);
  status_[s.rank] = s;
}

std::vector<RankStatus> OpRegistry::statuses() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RankStatus> out;
  for (const auto& [r, s] : status_) out.push_back(s);
  return out;
}

namespace {
std::string describe(const OpRecord& r) {
  std::ostringstream o;
  o << r.kind;
  if (r.seq) o << " #" << r.seq;
  if (r.unit >= 0) o << " of unit " << r.unit;
  o << " (step " << r.step << ")";
  return o.str();
}
double age_s(const OpRecord& r, Clock::time_point now) {
  return std::chrono::duration<double>(now - r.start).count();
}
}  // namespace

std::string OpRegistry::stall_report(const OpRecord& overdue, Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream o;
  const double limit = std::chrono::duration<double>(overdue.deadline - overdue.start).count();
  o << "STALL: rank " << overdue.rank << ": " << describe(overdue) << " missed its " << limit
    << " s deadline (running for " << age_s(overdue, now) << " s)\n";
  if (overdue.seq > 0) {
    std::vector<int> joined, missing;
    for (const auto& [rank, last] : last_seq_) (last >= overdue.seq ? joined : missing).push_back(rank);
    for (const auto& [rank, st] : status_)
      if (!last_seq_.count(rank)) missing.push_back(rank);
    auto list = [](const std::vector<int>& v) {
      std::ostringstream s;
      for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
      return v.empty() ? std::string("none") : s.str();
    };
    o << "collective #" << overdue.seq << ": issued by ranks [" << list(joined)
      << "]; not issued by ranks [" << list(missing) << "]\n";
  }
  o << "ranks:\n";
  for (const auto& [rank, st] : status_) {
    o << "  rank " << rank << ": step " << st.step << ", " << st.phase;
    if (st.unit >= 0) o << " of unit " << st.unit;
    o << "\n";
  }
  o << "in-flight operations:\n";
  for (const auto& [id, r] : ops_)
    o << "  rank " << r.rank << ": " << describe(r) << ", " << age_s(r, now) << " s\n";
  return o.str();
}

nlohmann::json OpRegistry::op_json(const OpRecord& r, Clock::time_point now) {
  return {{"kind", r.kind}, {"rank", r.rank}, {"unit", r.unit}, {"seq", r.seq}, {"step", r.step},
          {"age_s", age_s(r, now)},
          {"limit_s", std::chrono::duration<double>(r.deadline - r.start).count()}};
}

nlohmann::json OpRegistry::to_json(Clock::time_point now, int node, const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j;
  j["node"] = node;
  j["name"] = name;
  j["ranks"] = nlohmann::json::array();
  for (const auto& [rank, st] : status_)
    j["ranks"].push_back({{"rank", rank}, {"step", st.step}, {"phase", st.phase}, {"unit", st.unit}});
  j["ops"] = nlohmann::json::array();
  for (const auto& [id, r] : ops_) j["ops"].push_back(op_json(r, now));
  j["last_seq"] = nlohmann::json::object();
  for (const auto& [rank, seq] : last_seq_) j["last_seq"][std::to_string(rank)] = seq;
  j["recent"] = nlohmann::json::object();
  for (const auto& [rank, list] : recent_) {
    auto& a = j["recent"][std::to_string(rank)] = nlohmann::json::array();
    for (const auto& i : list) a.push_back({i.seq, i.kind, i.unit, i.step});
  }
  return j;
}

namespace {

using nlohmann::json;

std::string describe_json(const json& op) {
  std::ostringstream o;
  o << op.value("kind", std::string("?"));
  if (op.value("seq", uint64_t{0})) o << " #" << op["seq"].get<uint64_t>();
  if (op.value("unit", -1) >= 0) o << " of unit " << op["unit"].get<int>();
  o << " (step " << op.value("step", int64_t{0}) << ")";
  return o.str();
}

std::string list(const std::vector<int>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  return v.empty() ? std::string("none") : s.str();
}

bool is_int(const json& v) { return v.is_number_integer(); }
bool is_uint(const json& v) { return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0); }
bool is_rank_key(const std::string& k) {
  if (k.empty() || k.size() > 9) return false;
  for (char c : k)
    if (c < '0' || c > '9') return false;
  return true;
}

// What is wrong with an operation as op_json() writes it ("" if nothing).
std::string op_problem(const json& o) {
  if (!o.is_object()) return "an operation is not an object";
  if (!o.contains("kind") || !o["kind"].is_string()) return "an operation has no kind";
  for (const char* k : {"rank", "unit", "step"})
    if (!o.contains(k) || !is_int(o[k])) return std::string("an operation's ") + k + " is not an integer";
  if (!o.contains("seq") || !is_uint(o["seq"])) return "an operation's seq is not an integer";
  for (const char* k : {"age_s", "limit_s"})
    if (!o.contains(k) || !o[k].is_number()) return std::string("an operation's ") + k + " is not a number";
  return "";
}

// What is wrong with a node's registry as to_json() writes it ("" if nothing). The documents come
// from other nodes through the store: a malformed one is left out of the report (that node is
// shown as not having answered), never a crash of the node writing the report.
std::string registry_problem(const json& j) {
  if (!j.is_object()) return "not an object";
  if (!j.contains("ranks") || !j["ranks"].is_array()) return "no ranks";
  for (const auto& r : j["ranks"]) {
    if (!r.is_object() || !r.contains("rank") || !is_int(r["rank"]) || !r.contains("step") ||
        !is_int(r["step"]) || !r.contains("unit") || !is_int(r["unit"]) || !r.contains("phase") ||
        !r["phase"].is_string())
      return "a rank's status is malformed";
  }
  if (!j.contains("ops") || !j["ops"].is_array()) return "no ops";
  for (const auto& o : j["ops"])
    if (std::string why = op_problem(o); !why.empty()) return why;
  if (!j.contains("last_seq") || !j["last_seq"].is_object()) return "no last_seq";
  for (const auto& [rank, seq] : j["last_seq"].items())
    if (!is_rank_key(rank) || !is_uint(seq)) return "last_seq is malformed";
  if (!j.contains("recent") || !j["recent"].is_object()) return "no recent";
  for (const auto& [rank, list] : j["recent"].items()) {
    if (!is_rank_key(rank) || !list.is_array()) return "recent is malformed";
    for (const auto& i : list)
      if (!i.is_array() || i.size() < 3 || !is_uint(i[0]) || !i[1].is_string() || !is_int(i[2]))
        return "recent is malformed";
  }
  return "";
}

}  // namespace

std::string stall_report_json(const json& overdue_in, const std::vector<json>& nodes_in,
                              const std::vector<std::string>& node_names) {
  // Everything here may come from other nodes: drop what does not have the shape xy writes.
  const json overdue = op_problem(overdue_in).empty() && overdue_in.contains("rank")
                           ? overdue_in
                           : json{{"kind", "unknown"}, {"rank", -1}, {"unit", -1}, {"seq", 0},
                                  {"step", 0}, {"age_s", 0.0}, {"limit_s", 0.0}};
  std::vector<json> nodes = nodes_in;
  std::vector<std::string> malformed;
  for (size_t n = 0; n < nodes.size(); ++n)
    if (!nodes[n].is_null())
      if (std::string why = registry_problem(nodes[n]); !why.empty()) {
        malformed.push_back("node " + std::to_string(n) + "'s registry was malformed (" + why + ") and is left out");
        nodes[n] = json();
      }
  // Merge the nodes' views.
  std::map<int, json> status;                  // rank -> {step, phase, unit}
  std::map<int, int> node_of;                  // rank -> node
  std::map<int, uint64_t> last_seq;            // rank -> highest issued collective
  std::map<int, std::map<uint64_t, std::string>> issued;  // rank -> seq -> "kind of unit u"
  std::vector<json> ops;
  for (size_t n = 0; n < nodes.size(); ++n) {
    const json& j = nodes[n];
    if (j.is_null()) continue;
    for (const auto& r : j["ranks"]) {
      status[r["rank"].get<int>()] = r;
      node_of[r["rank"].get<int>()] = static_cast<int>(n);
    }
    for (const auto& op : j["ops"]) {
      json o = op;
      o["node"] = n;
      ops.push_back(o);
    }
    for (const auto& [rank, seq] : j["last_seq"].items()) last_seq[std::stoi(rank)] = seq.get<uint64_t>();
    for (const auto& [rank, list] : j["recent"].items())
      for (const auto& i : list) {
        std::string what = i[1].get<std::string>();
        if (i[2].get<int>() >= 0) what += " of unit " + std::to_string(i[2].get<int>());
        issued[std::stoi(rank)][i[0].get<uint64_t>()] = what;
      }
  }
  std::sort(ops.begin(), ops.end(),
            [](const json& a, const json& b) { return a["age_s"].get<double>() > b["age_s"].get<double>(); });
  auto where = [&](int rank) {
    if (rank < 0) return std::string("node ") + std::to_string(overdue.value("node", 0));
    std::ostringstream o;
    o << "rank " << rank;
    auto it = node_of.find(rank);
    if (it != node_of.end() && it->second < static_cast<int>(node_names.size()))
      o << " (node " << it->second << ", " << node_names[it->second] << ")";
    return o.str();
  };
  auto doing = [&](int rank) {
    std::ostringstream o;
    auto it = status.find(rank);
    if (it == status.end()) return std::string("unknown (its node did not answer)");
    o << "step " << it->second["step"].get<int64_t>() << ", " << it->second["phase"].get<std::string>();
    if (it->second["unit"].get<int>() >= 0) o << " of unit " << it->second["unit"].get<int>();
    for (const auto& op : ops)  // its oldest non-collective operation
      if (op["rank"].get<int>() == rank && !is_collective(op["kind"].get<std::string>())) {
        o << "; in " << describe_json(op) << " for " << op["age_s"].get<double>() << " s";
        break;
      }
    return o.str();
  };

  std::ostringstream o;
  o << "STALL: " << where(overdue.value("rank", -1)) << ": " << describe_json(overdue) << " missed its "
    << overdue.value("limit_s", 0.0) << " s deadline (running for " << overdue.value("age_s", 0.0)
    << " s)\n";

  // The culprit. 1) Two ranks that issued the same collective number differently.
  std::set<uint64_t> awaited;  // collective numbers some rank waits in
  for (const auto& op : ops)
    if (op.value("seq", uint64_t{0}) > 0) awaited.insert(op["seq"].get<uint64_t>());
  uint64_t report_seq = 0;
  bool culprit_named = false;
  for (uint64_t n : awaited) {
    std::map<std::string, std::vector<int>> by_what;
    for (const auto& [rank, m] : issued)
      if (auto it = m.find(n); it != m.end()) by_what[it->second].push_back(rank);
    if (by_what.size() > 1) {
      o << "CULPRIT: ORDER MISMATCH: ranks issued collective #" << n << " differently:";
      for (const auto& [what, ranks] : by_what) o << " " << what << " on ranks [" << list(ranks) << "];";
      o << " collectives must be issued in the same order on every rank\n";
      report_seq = n;
      culprit_named = true;
      break;
    }
  }
  // 2) Overdue work (not a wait): its owner, whoever waits for it. Work at 90% or more of its own
  // deadline counts too: a gather prefetched just before a compute that is stuck is registered a
  // few milliseconds earlier and expires first, though the compute is what everyone waits for.
  json work;
  if (!is_wait(overdue.value("kind", std::string()))) {
    work = overdue;
  } else {
    double most = 0.9;
    for (const auto& op : ops) {
      const double limit = op.value("limit_s", 0.0), age = op.value("age_s", 0.0);
      if (is_wait(op.value("kind", std::string())) || limit <= 0 || age / limit < most) continue;
      most = age / limit;
      work = op;
    }
  }
  if (!culprit_named && !work.is_null()) {
    const int wrank = work.value("rank", -1);
    o << "CULPRIT: "
      << (wrank >= 0 ? where(wrank) : "node " + std::to_string(work.value("node", 0))) << ": "
      << describe_json(work);
    if (wrank >= 0) o << "; it is at " << doing(wrank);
    o << "\n";
    culprit_named = true;
  }
  // 3) The oldest awaited collective that some rank has not issued (named the culprit unless the
  // overdue work above is).
  {
    for (uint64_t n : awaited) {
      std::vector<int> missing, waiting;
      for (const auto& [rank, st] : status) {
        auto it = last_seq.find(rank);
        if (it == last_seq.end() || it->second < n) missing.push_back(rank);
      }
      if (missing.empty()) continue;
      std::string what;
      for (const auto& op : ops)
        if (op.value("seq", uint64_t{0}) == n) {
          waiting.push_back(op["rank"].get<int>());
          what = describe_json(op);
        }
      // A rank's first missing collective is the one after its last issued. On NCCL the others
      // may have run well past it (a collective is enqueued, not waited for, by the host), so the
      // collective they wait in can be a later one.
      uint64_t first_missing = n;
      for (int m : missing) {
        auto it = last_seq.find(m);
        const uint64_t mine = it == last_seq.end() ? 1 : it->second + 1;
        first_missing = std::min(first_missing, mine);
        std::string first_what;
        std::vector<int> issuers;
        for (const auto& [rank, byseq] : issued)
          if (auto w = byseq.find(mine); w != byseq.end()) {
            first_what = w->second;
            issuers.push_back(rank);
          }
        o << (culprit_named ? "waiting: " : "CULPRIT: ") << where(m) << " has not issued collective #"
          << mine;
        if (mine == n)
          o << " (" << what << "); it is at " << doing(m) << "; ranks [" << list(waiting) << "] wait in it\n";
        else
          o << (first_what.empty() ? "" : " (" + first_what + " on ranks [" + list(issuers) + "])")
            << "; it is at " << doing(m) << "; ranks [" << list(waiting) << "] wait in collective #" << n
            << " (" << what << ")\n";
      }
      if (report_seq == 0) report_seq = first_missing;
      culprit_named = true;
      break;
    }
  }
  // 4) Otherwise the overdue operation's own rank.
  if (!culprit_named) {
    o << "CULPRIT: " << where(overdue.value("rank", -1)) << ": " << describe_json(overdue);
    if (overdue.value("rank", -1) >= 0) o << "; it is at " << doing(overdue["rank"].get<int>());
    o << "\n";
    if (overdue.value("seq", uint64_t{0}) > 0) report_seq = overdue["seq"].get<uint64_t>();
  }
  if (report_seq > 0) {
    std::vector<int> joined, missing;
    for (const auto& [rank, st] : status) {
      auto it = last_seq.find(rank);
      (it != last_seq.end() && it->second >= report_seq ? joined : missing).push_back(rank);
    }
    o << "collective #" << report_seq << ": issued by ranks [" << list(joined)
      << "]; not issued by ranks [" << list(missing) << "]\n";
  }
  o << "ranks:\n";
  for (const auto& [rank, st] : status) {
    o << "  " << where(rank) << ": step " << st["step"].get<int64_t>() << ", "
      << st["phase"].get<std::string>();
    if (st["unit"].get<int>() >= 0) o << " of unit " << st["unit"].get<int>();
    auto it = last_seq.find(rank);
    o << "; last collective issued #" << (it == last_seq.end() ? 0 : it->second) << "\n";
  }
  o << "in-flight operations (oldest first):\n";
  for (const auto& op : ops)
    o << "  " << (op["rank"].get<int>() >= 0 ? "rank " + std::to_string(op["rank"].get<int>())
                                              : "node " + std::to_string(op["node"].get<int>()))
      << ": " << describe_json(op) << ", " << op["age_s"].get<double>() << " s of "
      << op["limit_s"].get<double>() << " s\n";
  o << "nodes:\n";
  for (size_t n = 0; n < nodes.size(); ++n)
    o << "  node " << n << " (" << (n < node_names.size() ? node_names[n] : std::string("?")) << "): "
      << (nodes[n].is_null() ? "NO ANSWER (frozen, killed or partitioned)" : "reported") << "\n";
  for (const auto& m : malformed) o << "  " << m << "\n";
  return o.str();
}

}  // namespace xy
