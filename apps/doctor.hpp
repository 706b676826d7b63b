// Internals of `xy-node doctor` shared by apps/cmd_doctor.cpp (the command, the peers, the
// printing) and apps/doctor_checks.cpp (the checks of this node). Each check is one function that
// returns its row of the table; run_doctor() runs them in order and prints the rows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/config.hpp"
#include "optim/sharding.hpp"

namespace xy {
struct ModelLayout;
namespace doctor {

// The longest wait or timeout the doctor takes (as the config's deadlines): 30 days.
constexpr double kMaxSeconds = 30 * 24 * 3600.0;

// Seconds each GPU gets to answer the probe: --gpu-timeout when given (set by cmd_doctor), else
// XY_DOCTOR_GPU_TIMEOUT, else 20.
extern std::optional<double> g_gpu_timeout_flag_s;
// A GPU probe did not return: its thread is still in the driver.
extern bool g_gpu_hung;

// One line of the table: result "PASS", "FAIL" or "SKIP"; fix is what to do about a FAIL.
struct Row {
  std::string check, node, result, detail, fix;
};

// What every check reads: the configuration and this node.
struct Context {
  const Config& cfg;
  int me;                 // this node's index
  std::string n;          // the same as text (the table's node column)
  const NodeSpec& self;   // cfg.topology.nodes[me]
  nlohmann::json facts;   // local_facts(me)
  int listener = -1;      // the control port, bound by check_control_port (the peers ask it)
  nlohmann::json transport;  // transport_facts(cfg, me)
  std::string no_probe;      // why this node runs no link probe; "" = it does
};

// The host memory available now (MemAvailable), as the placement plan's facts; the GPUs' memory is
// not asked (check_gpus probes them). The host-memory row and the sharding the doctor assumes use it.
DeviceFacts available_memory(const Config& cfg);

// What this node reports to its peers (and prints with --facts); the peers compare the versions.
nlohmann::json local_facts(int node);

// The checks of this node (apps/doctor_checks.cpp), in the order of the table. A check that does
// not apply (a port this node does not use, a disk it cannot measure) returns no row.
using Check = std::optional<Row> (*)(Context& c);
std::optional<Row> check_versions(Context& c);
std::optional<Row> check_one_nccl(Context& c);
std::optional<Row> check_one_libtorch(Context& c);
std::optional<Row> check_gpus(Context& c);
std::optional<Row> check_interface(Context& c);
std::optional<Row> check_control_port(Context& c);  // binds c.listener
std::optional<Row> check_rendezvous_port(Context& c);
std::optional<Row> check_open_files(Context& c);
std::optional<Row> check_locked_memory(Context& c);
std::optional<Row> check_host_memory(Context& c);
std::optional<Row> check_checkpoint_disk(Context& c);

// A listening socket on host:port, or -1 with the reason in *err.
int listen_on(const std::string& host, int port, std::string* err);

// Text from the network as it may be printed: control characters as '?', at most 200 bytes.
std::string printable(std::string s);

// The checks between nodes (apps/doctor_links.cpp). This node's transport settings, which the
// doctor adds to the facts it serves under "transport": its topology address and the interface
// owning it, the user's NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME ("" = unset: xy sets both to that
// interface), and the NCCL settings every node must share.
nlohmann::json transport_facts(const Config& cfg, int me);
// "same transport as node p": p's transport facts (in its answer `theirs`) against ours; a FAIL
// names both nodes and both values.
Row check_transport(const Context& c, int p, const nlohmann::json& theirs);

// StepTraffic and step_traffic(): optim/sharding.hpp (the runtime's `auto` reads them too).

// The link probe: node 0 and each other node time a ping-pong and a transfer each way over Gloo
// (the job's rendezvous on node 0's port + 1, bound to the topology addresses), and say what one
// step moves across the link (step_traffic). `peers[p]` is node p's answer (null if none); a
// node probes only when the node(s) it pairs with said they would ("probe" in their facts).
std::vector<Row> probe_links(const Context& c, const std::vector<nlohmann::json>& peers, double timeout_s);

}  // namespace doctor
}  // namespace xy
