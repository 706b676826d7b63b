// The control plane between node supervisors (docs/OPERATIONS.md): the job's secret handshake,
// heartbeats, and the job-wide stall report. It runs over the job's TCP store (comm/net_store.hpp,
// served by node 0 on nodes[0].port + 1; with the job's secret only connections that proved it
// can read or write a key), on a store connection of its own and a thread of its own, so that
// nothing it does waits behind the data plane or another actor.
//
// Keys (all under "xy/"):
//   auth/nonce, auth/server, auth/node/<i>, auth/verdict/<i>   the secret handshake
//   hb/<i>                    node i's heartbeat counter (add 1 every heartbeat interval)
//   stall                     counter: > 0 once any node declared a stall; the node that made it 1 leads
//   stall/op                  the overdue operation (JSON), written by the leader
//   stall/node/<i>            node i's registry (OpRegistry::to_json) at the time of the stall
//   stall/report              the merged report, written by the leader for every node
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "health/registry.hpp"
#include "comm/comm.hpp"
#include "io/config.hpp"

namespace xy {

// Exit codes of the control plane (the same as ExitCode in engine.hpp; repeated here so that this
// header does not need the engine's).
constexpr int kControlExitStall = 3;
constexpr int kControlExitPeerLost = 4;
constexpr int kControlExitWatchdogStuck = 5;

// HMAC-SHA256(key, msg) as lowercase hex.
std::string hmac_sha256_hex(const std::string& key, const std::string& msg);

// The secret handshake, run on the store before the data plane's rendezvous. Node 0 posts a fresh
// nonce and proves it knows the secret; every other node proves it too; node 0 checks each proof
// and posts a verdict. Throws std::runtime_error with a clear message on either side when a proof
// is wrong ("node 1 (10.0.0.2) presented a wrong or missing secret ..."). A node whose secret
// differs is already refused by the store's connection handshake and posts no proof: node 0 then
// names it once its store refused a connection from that node's address that said it was that
// node (after a 2 s grace), or at the timeout. The secret is never logged or sent.
void secret_handshake(KeyValueStore& store, const Config& cfg, int node_index, double timeout_s);

// Writes `report` to stderr and <work_dir>/stall-report.txt and ends the process with `code`.
[[noreturn]] void write_report_and_exit(const Config& cfg, const std::string& report, int code);

// One per process of a multi-node job (started by the watchdog).
class ControlPlane : public std::enable_shared_from_this<ControlPlane> {
 public:
  // Connects its own store client and starts the heartbeat thread (which holds a reference, so
  // that a thread stuck in a store call never outlives its object). Throws if the store is
  // unreachable.
  static std::shared_ptr<ControlPlane> start(const Config& cfg, int node_index, OpRegistry* registry);
  // Stops the thread: joins it, or after 2 s leaves it (stuck in a store call on a frozen node 0).
  void stop();

  // The watchdog found `overdue` past its deadline on this node: the control thread gathers every
  // node's registry, writes the report and ends the process (kControlExitStall) within a few
  // seconds. Returns at once.
  void declare_stall(const nlohmann::json& overdue);
  // Seconds since the last store round trip completed (a frozen node 0 makes this grow).
  double store_silence_s() const;
  // Ends the process with a PEER LOST report if a peer is lost (or node 0's store is silent).
  void check_peers_or_exit();
  std::string node_name(int n) const;

 private:
  void loop();
  void stall_protocol(bool leader_candidate, nlohmann::json overdue);
  [[noreturn]] void peer_lost(const std::string& what);

  const Config cfg_;
  const int me_, nodes_;
  OpRegistry* registry_;
  std::shared_ptr<KeyValueStore> store_;
  std::thread thread_;
  ControlPlane(const Config& cfg, int node_index, OpRegistry* registry);
  std::atomic<bool> stop_{false}, stopped_{false};
  std::atomic<int64_t> last_ok_us_{0};  // steady clock of the last completed store round
  std::mutex mu_;
  std::condition_variable cv_;
  nlohmann::json pending_stall_;        // guarded by mu_; set by declare_stall
  std::string store_error_;             // guarded by mu_
  std::vector<int64_t> beat_;           // control thread only: last counter seen per node
  std::vector<Clock::time_point> seen_; // guarded by mu_: when node n's counter last moved
};

}  // namespace xy
