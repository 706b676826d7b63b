// `xy-node doctor`, the checks of this node (see apps/doctor.hpp): versions, libraries loaded
// twice, GPUs, interface, ports, ulimits, memory and disk. One function per check, each returning
// its row; apps/cmd_doctor.cpp runs them, asks the peers and prints the table.
#include "apps/doctor.hpp"

#include <arpa/inet.h>
#include <climits>
#include <link.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <torch/version.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "apps/commands.hpp"
#include "io/threads.hpp"
#include "model/layout.hpp"
#include "optim/placement.hpp"

#ifdef XY_WITH_CUDA
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace xy {
namespace doctor {

using json = nlohmann::json;

std::optional<double> g_gpu_timeout_flag_s;
bool g_gpu_hung = false;

namespace {

#ifdef XY_WITH_CUDA
// cudaRuntimeGetVersion / cudaDriverGetVersion encode 1000 * major + 10 * minor.
std::string cuda_version(int v) {
  if (v <= 0) return "none (no driver)";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}
// ncclGetVersion: 1000 * major + 100 * minor + patch up to 2.8, 10000 * major + 100 * minor + patch
// after.
std::string nccl_version(int v) {
  const int major = v >= 10000 ? v / 10000 : v / 1000;
  const int minor = v >= 10000 ? (v % 10000) / 100 : (v % 1000) / 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(v % 100);
}
#endif

// The shared objects loaded in this process, by their real paths (dl_iterate_phdr: what the
// dynamic loader holds, whichever way it came: DT_NEEDED, LD_PRELOAD or dlopen).
std::vector<std::string> loaded_objects() {
  std::vector<std::string> names;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name && info->dlpi_name[0])
          static_cast<std::vector<std::string>*>(data)->push_back(info->dlpi_name);
        return 0;
      },
      &names);
  std::vector<std::string> out;
  for (const auto& n : names) {
    char real[PATH_MAX];
    out.push_back(realpath(n.c_str(), real) ? std::string(real) : n);
  }
  return out;
}

#ifdef XY_WITH_CUDA
// Runs fn (returning "" or what went wrong) in a thread of its own; false when it has not returned
// within timeout_s. A call hung in the driver cannot be cancelled: its thread is left behind.
bool run_with_timeout(double timeout_s, std::function<std::string()> fn, std::string* result) {
  auto done = std::make_shared<std::promise<std::string>>();
  std::future<std::string> f = done->get_future();
  start_thread("the doctor's GPU probe", [done, fn = std::move(fn)] {
    try {
      done->set_value(fn());
    } catch (const std::exception& e) {
      done->set_value(e.what());
    }
  }).detach();
  if (f.wait_for(std::chrono::duration<double>(timeout_s)) != std::future_status::ready) return false;
  *result = f.get();
  return true;
}
#endif

// XY_DOCTOR_GPU_TIMEOUT as seconds (checked by doctor_environment_problem), else `dflt`.
[[maybe_unused]] double env_gpu_timeout_s(double dflt) {
  const char* v = std::getenv("XY_DOCTOR_GPU_TIMEOUT");
  if (!v) return dflt;
  const std::optional<double> s = parse_finite(v);
  return s && *s > 0 && *s <= kMaxSeconds ? *s : dflt;
}

std::vector<std::string> local_addresses() {
  std::vector<std::string> out;
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    out.push_back(std::string(i->ifa_name) + " " + buf);
  }
  freeifaddrs(ifs);
  return out;
}

std::string mib(double b) {
  char s[64];
  std::snprintf(s, sizeof s, "%.1f MiB", b / 1048576.0);
  return s;
}

// The shared objects of the kinds that must be loaded once, by kind ("libnccl", "libtorch_cpu",
// "libc10.so", "libcudart"): their real paths.
std::map<std::string, std::set<std::string>> loaded_libraries() {
  std::map<std::string, std::set<std::string>> libs;  // kind -> real paths
  for (const auto& path : loaded_objects()) {
    const std::string base = std::filesystem::path(path).filename().string();
    for (const char* kind : {"libnccl", "libtorch_cpu", "libc10.so", "libcudart"})
      if (base.rfind(kind, 0) == 0) libs[kind].insert(path);
  }
  return libs;
}

// " path1 path2" of one kind.
std::string list_paths(const std::set<std::string>& paths) {
  std::string l;
  for (const auto& p : paths) l += " " + p;
  return l;
}

}  // namespace

DeviceFacts available_memory(const Config& cfg) {
  int64_t avail_kb = 0;
  std::ifstream mi("/proc/meminfo");
  std::string key;
  int64_t val;
  std::string unit;
  while (mi >> key >> val >> unit)
    if (key == "MemAvailable:") avail_kb = val;
  DeviceFacts facts;  // the GPUs' memory is not asked here (check_gpus probes them)
  facts.kind = cfg.topology.device == "cuda" ? DeviceFacts::Kind::kCuda : DeviceFacts::Kind::kCpu;
  facts.host_bytes = avail_kb * 1024;
  facts.host_what = "available now";
  return facts;
}

namespace {

// This node's share of the model: its parameters and the bytes each needs (host memory and disk
// for the planned shards). build_layout checks its arithmetic: a shape too large to count is a
// failed check naming the key, not a wrapped-around size.
struct Share {
  std::string error;  // build_layout's, when it refused the shape
  bool known = false;
  double params = 0, share = 0;  // all parameters; this node's (devices / world of them)
  ModelLayout layout;
};

// The layout is that of the sharding `train` would choose here (optim/sharding.hpp): over the
// job's ranks, or over the node's with node sharding.
Share node_share(const Context& c) {
  const Config& cfg = c.cfg;
  Share s;
  ModelLayout& layout = s.layout;
  int shard_world = cfg.topology.world_size();
  try {
    ModelConfig m = cfg.model;
    if (m.vocab_size == 0) m.vocab_size = cfg.data.tokenizer_vocab;
    if (choose_sharding(cfg, m, available_memory(cfg)).node) shard_world = c.self.devices;
    layout = build_layout(m, shard_world, cfg.optimizer.no_decay);
  } catch (const std::exception& e) {
    s.error = e.what();
    return s;
  }
  if (layout.units.empty()) return s;
  s.known = true;
  s.params = static_cast<double>(layout.total_numel());
  s.share = s.params * c.self.devices / shard_world;
  return s;
}

}  // namespace

// What this node reports to its peers (and prints with --facts); the peers compare the versions.
json local_facts(int node) {
  json j;
  j["node"] = node;
  j["xy"] = XY_VERSION;
  j["torch"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
               std::to_string(TORCH_VERSION_PATCH);
#ifdef XY_WITH_CUDA
  int v = 0;
  j["cuda"] = cudaRuntimeGetVersion(&v) == cudaSuccess ? cuda_version(v) : "unknown";
  v = 0;
  j["cuda_driver"] = cudaDriverGetVersion(&v) == cudaSuccess ? cuda_version(v) : "unknown";
  v = 0;
  j["nccl"] = ncclGetVersion(&v) == ncclSuccess ? nccl_version(v) : "unknown";
#else
  j["cuda"] = "none (CPU build)";
  j["cuda_driver"] = "none (CPU build)";
  j["nccl"] = "none (CPU build)";
#endif
  j["time_us"] = std::chrono::duration_cast<std::chrono::microseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  j["hostname"] = host;
  return j;
}

int listen_on(const std::string& host, int port, std::string* err) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
    *err = gai_strerror(rc);
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 16) != 0) {
    *err = std::strerror(errno);
    close(fd);
    freeaddrinfo(res);
    return -1;
  }
  freeaddrinfo(res);
  return fd;
}

// Versions of this node; a CPU build cannot drive GPU ranks.
std::optional<Row> check_versions(Context& c) {
  [[maybe_unused]] const Config& cfg = c.cfg;
  const std::string& n = c.n;
  const json& facts = c.facts;
  const std::string d = "xy " + facts["xy"].get<std::string>() + ", LibTorch " +
                        facts["torch"].get<std::string>() + ", CUDA runtime " +
                        facts["cuda"].get<std::string>() + ", CUDA driver " +
                        facts["cuda_driver"].get<std::string>() + ", NCCL " + facts["nccl"].get<std::string>();
#ifdef XY_WITH_CUDA
  const bool cuda_missing = false;
#else
  const bool cuda_missing = cfg.topology.device == "cuda";
#endif
  if (!cuda_missing) return Row{"versions", n, "PASS", d, ""};
  return Row{"versions", n, "FAIL", d + "; but topology.device = \"cuda\"",
             "this xy-node was built without CUDA; rebuild with -DXY_CUDA=ON (README: "
             "Building with CUDA)"};
}


// Libraries loaded twice: two NCCLs (or LibTorches) in one process. NCCL 2.x keeps its state in
// the library: two copies give two sets of communicators that hang or corrupt each other.
std::optional<Row> check_one_nccl(Context& c) {
  auto libs = loaded_libraries();
  const auto& nccl = libs["libnccl"];
  if (nccl.size() <= 1)
    return Row{"one NCCL loaded", c.n, "PASS",
               nccl.empty() ? std::string("no NCCL loaded") : "libnccl:" + list_paths(nccl), ""};
  return Row{"one NCCL loaded", c.n, "FAIL",
             std::to_string(nccl.size()) + " NCCLs loaded in this process: libnccl:" + list_paths(nccl),
             "one NCCL per process: point LD_LIBRARY_PATH at the NCCL that LibTorch loads "
             "(PyTorch's nvidia/nccl/lib) and remove the others from it; unset LD_PRELOAD of "
             "another libnccl"};
}

std::optional<Row> check_one_libtorch(Context& c) {
  auto libs = loaded_libraries();
  std::string dup;
  for (const char* kind : {"libtorch_cpu", "libc10.so", "libcudart"})
    if (libs[kind].size() > 1) dup += std::string(dup.empty() ? "" : "; ") + kind + ":" + list_paths(libs[kind]);
  if (dup.empty())
    return Row{"one LibTorch loaded", c.n, "PASS",
               "libtorch_cpu:" + (libs["libtorch_cpu"].empty() ? std::string(" none")
                                                                : list_paths(libs["libtorch_cpu"])),
               ""};
  return Row{"one LibTorch loaded", c.n, "FAIL", "loaded more than once: " + dup,
             "remove the second copy from LD_LIBRARY_PATH / LD_PRELOAD (or the Python "
             "environment) so that exactly one LibTorch and one CUDA runtime are loaded"};
}

// The GPUs this node drives (local rank l uses device l): visible, and each one computes. Each
// probe runs in a thread of its own with a timeout: a GPU hung in the driver is a failed check,
// not a hung doctor.
std::optional<Row> check_gpus(Context& c) {
  const Config& cfg = c.cfg;
  const std::string& n = c.n;
  [[maybe_unused]] const json& facts = c.facts;
  [[maybe_unused]] const NodeSpec& self = c.self;
  const std::string check = "GPU visible and responsive";
  if (cfg.topology.device != "cuda") return Row{check, n, "SKIP", "skipped (CPU ranks)", ""};
#ifndef XY_WITH_CUDA
  return Row{check, n, "SKIP", "skipped (this xy-node has no CUDA: see versions)", ""};
#else
  const int want = self.devices;
  const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string fix =
      "run `nvidia-smi` (a GPU missing, in error or hung; Xid errors in `dmesg`); check that the "
      "NVIDIA driver is loaded and supports this CUDA runtime (" + facts["cuda"].get<std::string>() +
      ", driver " + facts["cuda_driver"].get<std::string>() + "); check CUDA_VISIBLE_DEVICES (" +
      (cvd ? std::string("now \"") + cvd + "\"" : std::string("unset")) + "): this node's ranks use "
      "devices 0.." + std::to_string(want - 1) + " of the visible ones";
  const double limit_s = g_gpu_timeout_flag_s ? *g_gpu_timeout_flag_s : env_gpu_timeout_s(20.0);
  std::string res;
  std::ostringstream timeout;
  timeout << limit_s << " s";
  auto count_p = std::make_shared<std::atomic<int>>(-1);  // outlives a hung probe thread
  if (!run_with_timeout(limit_s, [count_p]() -> std::string {
        int c = 0;
        const cudaError_t e = cudaGetDeviceCount(&c);
        if (e != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
        *count_p = c;
        return "";
      }, &res)) {
    g_gpu_hung = true;
    return Row{check, n, "FAIL", "counting the GPUs (cudaGetDeviceCount) did not return within " +
                    timeout.str(), fix};
  } else if (!res.empty()) {
    return Row{check, n, "FAIL", res, fix};
  } else if (const int count = *count_p; count < want) {
    return Row{check, n, "FAIL", std::to_string(count) + " GPUs visible; topology.nodes[" + n +
                    "].devices = " + std::to_string(want) + " needs " + std::to_string(want),
                    fix + "; or lower topology.nodes[" + n + "].devices"};
  } else {
    std::string failed;
    for (int dev = 0; dev < want && failed.empty(); ++dev) {
      const bool answered = run_with_timeout(limit_s, [dev]() -> std::string {
        // XY_DOCTOR_GPU_STALL=<device>: that device's probe never returns (the doctor's test).
        if (const char* s = std::getenv("XY_DOCTOR_GPU_STALL"); s && parse_integer(s) == dev)
          for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
        const int64_t len = 1 << 20;
        const at::Tensor t = at::ones({len}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, dev));
        const double sum = t.sum().to(at::kCPU).item<double>();
        if (sum != static_cast<double>(len))
          return "summed " + std::to_string(len) + " ones to " + std::to_string(sum);
        return "";
      }, &res);
      if (!answered) {
        g_gpu_hung = true;
        failed = "GPU " + std::to_string(dev) + " did not finish a small computation (ones, sum, "
                 "copy to the host) within " + timeout.str() +
                 (dev + 1 < want ? "; GPUs after it not probed" : "");
      } else if (!res.empty()) {
        failed = "GPU " + std::to_string(dev) + ": " + res;
      }
    }
    if (failed.empty())
      return Row{check, n, "PASS", std::to_string(want) + " of " + std::to_string(count_p->load()) +
                      " visible GPUs answered (ones, sum, copy to the host)", ""};
    else
      return Row{check, n, "FAIL", failed, fix};
  }
#endif
}

// The interface: the configured host must be an address of this machine.
std::optional<Row> check_interface(Context& c) {
  const std::string& n = c.n;
  const NodeSpec& self = c.self;
  std::string err;
  int fd = listen_on(self.host, 0, &err);
  if (fd >= 0) {
    close(fd);
    return Row{"interface", n, "PASS", self.host + " is an address of this machine", ""};
  }
  std::string addrs;
  for (const auto& a : local_addresses()) addrs += (addrs.empty() ? "" : ", ") + a;
  return Row{"interface", n, "FAIL", "cannot bind " + self.host + ": " + err,
             "set topology.nodes[" + n + "].host to this node's address on the network the "
             "nodes share; this machine has: " + addrs};
}

// The control port: bound here and kept (c.listener), the peers' doctors ask it for our facts.
std::optional<Row> check_control_port(Context& c) {
  const std::string& n = c.n;
  const NodeSpec& self = c.self;
  if (self.port <= 0) return std::nullopt;
  std::string err;
  c.listener = listen_on(self.host, self.port, &err);
  if (c.listener >= 0)
    return Row{"control port free", n, "PASS", self.host + ":" + std::to_string(self.port), ""};
  return Row{"control port free", n, "FAIL",
             self.host + ":" + std::to_string(self.port) + " cannot be bound: " + err,
             "another process holds it (see `ss -ltnp 'sport = :" + std::to_string(self.port) +
                 "'`): stop it or choose another topology.nodes[" + n + "].port"};
}

// On node 0 of several, the store's port (the control port + 1).
std::optional<Row> check_rendezvous_port(Context& c) {
  const std::string& n = c.n;
  const NodeSpec& self = c.self;
  if (c.me != 0 || c.cfg.topology.nodes.size() <= 1) return std::nullopt;
  const int store_port = self.port + 1;
  std::string err;
  int fd = listen_on(self.host, store_port, &err);
  if (fd >= 0) {
    close(fd);
    return Row{"rendezvous port free", n, "PASS", self.host + ":" + std::to_string(store_port), ""};
  }
  return Row{"rendezvous port free", n, "FAIL",
             self.host + ":" + std::to_string(store_port) + " cannot be bound: " + err,
             "the store listens on topology.nodes[0].port + 1: stop the process holding "
             "it (`ss -ltnp 'sport = :" + std::to_string(store_port) +
                 "'`) or choose another topology.nodes[0].port"};
}

// Open files: sockets (Gloo opens a few per peer rank), checkpoint and data files.
std::optional<Row> check_open_files(Context& c) {
  const std::string& n = c.n;
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  const rlim_t need = std::max<rlim_t>(1024, 64 + 8 * static_cast<rlim_t>(c.cfg.topology.world_size()));
  if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= need)
    return Row{"ulimit -n", n, "PASS", std::to_string(r.rlim_cur) + " open files", ""};
  return Row{"ulimit -n", n, "FAIL",
             std::to_string(r.rlim_cur) + " open files; at least " + std::to_string(need) + " needed",
             "raise it before starting xy-node: `ulimit -n 65536` (hard limit " +
                 (r.rlim_max == RLIM_INFINITY ? std::string("unlimited") : std::to_string(r.rlim_max)) +
                 "; permanently: nofile in /etc/security/limits.conf or LimitNOFILE= in the "
                 "systemd unit)"};
}

// Locked memory: GPU nodes pin host buffers.
std::optional<Row> check_locked_memory(Context& c) {
  const std::string& n = c.n;
  rlimit r{};
  getrlimit(RLIMIT_MEMLOCK, &r);
  const bool cuda = c.cfg.topology.device == "cuda";
  const rlim_t need_l = cuda ? rlim_t{1} << 30 : 0;  // pinned host buffers on GPU nodes
  const std::string have = r.rlim_cur == RLIM_INFINITY ? "unlimited" : mib(static_cast<double>(r.rlim_cur));
  if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= need_l)
    return Row{"ulimit -l", n, "PASS", have + (cuda ? "" : " (CPU ranks pin nothing)"), ""};
  return Row{"ulimit -l", n, "FAIL", have + " of locked memory; GPU nodes pin host buffers",
             "`ulimit -l unlimited` (memlock in /etc/security/limits.conf, LimitMEMLOCK=infinity "
             "for systemd, --ulimit memlock=-1 for Docker)"};
}

// Host memory for this node's share of the state: the placement plan's (optim/placement.hpp), the
// same figure `train` allocates and checks at start-up, against the memory available now.
std::optional<Row> check_host_memory(Context& c) {
  const Config& cfg = c.cfg;
  const std::string& n = c.n;
  const Share s = node_share(c);
  if (!s.error.empty()) return Row{"host memory", n, "FAIL", s.error, "choose a smaller model (model.*)"};
  if (!s.known) return std::nullopt;
  const DeviceFacts facts = available_memory(cfg);
  const int64_t avail_kb = facts.host_bytes / 1024;
  const PlacementPlan plan = plan_placement(cfg, s.layout, s.layout.world_size, c.self.devices, facts);
  const double need = static_cast<double>(plan.host_bytes) * c.self.devices;
  std::ostringstream d;
  d << static_cast<int64_t>(s.params) << " parameters; this node's share needs " << mib(need) << " ("
    << static_cast<int64_t>(need) << " bytes, " << std::setprecision(3) << need / s.share
    << " B/parameter; placement " << plan.bytes_text()
    << "); " << mib(avail_kb * 1024.0) << " available";
  if (plan.refused_host.empty()) return Row{"host memory", n, "PASS", d.str(), ""};
  return Row{"host memory", n, "FAIL", d.str(),
             "add nodes or ranks (each holds 1/world of the state), choose a smaller model, "
             "or free memory on this node"};
}

// Disk for the checkpoints kept and the one being written, under checkpoint.dir (or the nearest
// directory of it that exists).
std::optional<Row> check_checkpoint_disk(Context& c) {
  namespace fs = std::filesystem;
  const Config& cfg = c.cfg;
  const std::string& n = c.n;
  const Share s = node_share(c);
  if (!s.known) return std::nullopt;  // a shape build_layout refused is host memory's row
  fs::path dir = fs::absolute(cfg.checkpoint.dir.empty() ? cfg.data.work_dir : cfg.checkpoint.dir);
  while (!dir.empty() && !fs::exists(dir) && dir != dir.root_path()) dir = dir.parent_path();
  struct statvfs sv{};
  const double per_ckpt = 16.0 * s.share;  // working (<= 4) + master + m + v
  const double disk_need = per_ckpt * (cfg.checkpoint.keep_last + 1.0);
  if (statvfs(dir.c_str(), &sv) != 0) return std::nullopt;
  const double free_b = static_cast<double>(sv.f_bavail) * sv.f_frsize;
  std::ostringstream dd;
  dd << "checkpoints need " << mib(disk_need) << " (" << cfg.checkpoint.keep_last
     << " kept + 1 being written); " << mib(free_b) << " free under " << dir.string();
  if (disk_need <= free_b) return Row{"disk for checkpoints", n, "PASS", dd.str(), ""};
  return Row{"disk for checkpoints", n, "FAIL", dd.str(),
             "free space there, lower checkpoint.keep_last, or set checkpoint.dir to a "
             "larger volume"};
}

}  // namespace doctor
}  // namespace xy
