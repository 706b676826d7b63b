// The in-flight operation registry and the stall report (see registry.hpp).
#include "actors/registry.hpp"

#include <algorithm>
#include <sstream>

namespace xy {

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
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<OpRecord> best;
  for (const auto& [id, r] : ops_)
    if (r.deadline < now && (!best || r.start < best->start)) best = r;
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

}  // namespace xy
