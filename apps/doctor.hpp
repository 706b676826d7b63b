// Internals of `xy-node doctor` shared by apps/cmd_doctor.cpp (the command, the peers, the
// printing) and apps/doctor_checks.cpp (the checks of this node). Each check is one function that
// returns its row of the table; run_doctor() runs them in order and prints the rows.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/config.hpp"

namespace xy {
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
};

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

}  // namespace doctor
}  // namespace xy
