// `xy-node doctor`: preflight checks of this node and its peers, printed as a pass/fail table with
// the fix for each failure (docs/OPERATIONS.md, "Preflight doctor"). `train` runs it first.
//
// Peers: while it runs, the doctor listens on this node's control port (topology.nodes[i].port)
// and answers each connection with one JSON line of its facts (versions, wall clock); it asks
// every other node's doctor the same, so that the checks cover versions, reachability of each
// node's interface, the ports and the clock skew. Run it on every node at about the same time.
#include <arpa/inet.h>
#include <climits>
#include <link.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
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
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "io/threads.hpp"
#include "apps/commands.hpp"
#include "io/config.hpp"
#include "model/layout.hpp"

#ifdef XY_WITH_CUDA
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace xy {
namespace {

using json = nlohmann::json;

// Seconds each GPU gets to answer the probe: --gpu-timeout when given (set here), else
// XY_DOCTOR_GPU_TIMEOUT, else 20.
std::optional<double> g_gpu_timeout_flag_s;
// The longest wait or timeout the doctor takes (as the config's deadlines): 30 days.
constexpr double kDoctorMaxSeconds = 30 * 24 * 3600.0;

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

// The versions compared between nodes: facts key, and its name in the table.
const std::pair<const char*, const char*> kVersions[] = {
    {"xy", "xy"}, {"torch", "torch"}, {"cuda", "CUDA runtime"}, {"cuda_driver", "CUDA driver"},
    {"nccl", "NCCL"}};

// What is wrong with a peer's facts (local_facts() of another node), or "" when they have every
// field the checks read, with its type.
std::string peer_facts_problem(const json& j) {
  if (!j.is_object()) return "expected a JSON object, got " + std::string(j.type_name());
  for (const char* k : {"xy", "torch", "cuda", "cuda_driver", "nccl", "hostname"})
    if (!j.contains(k) || !j[k].is_string()) return std::string("no string '") + k + "'";
  if (!j.contains("time_us") || !j["time_us"].is_number()) return "no number 'time_us'";
  return "";
}

// Text from the network as it may be printed: control characters as '?', at most 200 bytes.
std::string printable(std::string s) {
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

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

bool g_gpu_hung = false;  // a GPU probe did not return: its thread is still in the driver

// XY_DOCTOR_GPU_TIMEOUT as seconds (checked by doctor_environment_problem), else `dflt`.
[[maybe_unused]] double env_gpu_timeout_s(double dflt) {
  const char* v = std::getenv("XY_DOCTOR_GPU_TIMEOUT");
  if (!v) return dflt;
  const std::optional<double> s = parse_finite(v);
  return s && *s > 0 && *s <= kDoctorMaxSeconds ? *s : dflt;
}

struct Row {
  std::string check, node, result, detail, fix;
};

// A listening socket on host:port, or -1 with errno.
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

// Connects to host:port within timeout_s and reads one line; "" + err on failure.
std::string ask_peer(const std::string& host, int port, double timeout_s, std::string* err) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  do {
    addrinfo hints{}, *res = nullptr;
    hints.ai_socktype = SOCK_STREAM;
    if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
      *err = gai_strerror(rc);
      return "";
    }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    const bool ok = connect(fd, res->ai_addr, res->ai_addrlen) == 0;
    freeaddrinfo(res);
    if (ok) {
      std::string line;
      char buf[4096];
      pollfd p{fd, POLLIN, 0};
      // One line of facts is ~300 bytes: a peer sending more without a newline is not a doctor.
      while (line.find('\n') == std::string::npos && line.size() < 65536 && poll(&p, 1, 2000) > 0) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        line.append(buf, n);
      }
      close(fd);
      if (!line.empty()) return line.substr(0, line.find('\n'));
      *err = "connected, but no answer (not an xy doctor?)";
      return "";
    }
    *err = std::strerror(errno);
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < until);
  return "";
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

}  // namespace

bool doctor_probe_hung() { return g_gpu_hung; }

std::string doctor_environment_problem() {
  if (const char* v = std::getenv("XY_DOCTOR_GPU_TIMEOUT")) {
    const std::optional<double> s = parse_finite(v);
    if (!s || !(*s > 0 && *s <= kDoctorMaxSeconds))
      return std::string("XY_DOCTOR_GPU_TIMEOUT = '") + v +
             "' (environment): valid: seconds > 0 and <= 2592000 (30 days)";
  }
  if (const char* v = std::getenv("XY_DOCTOR_GPU_STALL")) {
    const std::optional<long long> d = parse_integer(v);
    if (!d || *d < 0 || *d > INT_MAX)
      return std::string("XY_DOCTOR_GPU_STALL = '") + v + "' (environment): valid: a device index >= 0";
  }
  return "";
}

int run_doctor(const Config& cfg, int me, double wait_s, std::ostream& out, bool as_json) {
  std::vector<Row> rows;
  const int nodes = static_cast<int>(cfg.topology.nodes.size());
  const NodeSpec& self = cfg.topology.nodes.at(me);
  const std::string n = std::to_string(me);
  const json facts = local_facts(me);

  // Versions of this node; a CPU build cannot drive GPU ranks.
  {
    const std::string d = "xy " + facts["xy"].get<std::string>() + ", LibTorch " +
                          facts["torch"].get<std::string>() + ", CUDA runtime " +
                          facts["cuda"].get<std::string>() + ", CUDA driver " +
                          facts["cuda_driver"].get<std::string>() + ", NCCL " + facts["nccl"].get<std::string>();
#ifdef XY_WITH_CUDA
    const bool cuda_missing = false;
#else
    const bool cuda_missing = cfg.topology.device == "cuda";
#endif
    if (!cuda_missing)
      rows.push_back({"versions", n, "PASS", d, ""});
    else
      rows.push_back({"versions", n, "FAIL", d + "; but topology.device = \"cuda\"",
                      "this xy-node was built without CUDA; rebuild with -DXY_CUDA=ON (README: "
                      "Building with CUDA)"});
  }

  // Libraries loaded twice: two NCCLs (or LibTorches) in one process. NCCL 2.x keeps its state in
  // the library: two copies give two sets of communicators that hang or corrupt each other.
  {
    std::map<std::string, std::set<std::string>> libs;  // kind -> real paths
    for (const auto& path : loaded_objects()) {
      const std::string base = std::filesystem::path(path).filename().string();
      for (const char* kind : {"libnccl", "libtorch_cpu", "libc10.so", "libcudart"})
        if (base.rfind(kind, 0) == 0) libs[kind].insert(path);
    }
    auto list = [&](const std::string& kind) {
      std::string l;
      for (const auto& p : libs[kind]) l += " " + p;
      return l;
    };
    const auto& nccl = libs["libnccl"];
    if (nccl.size() <= 1)
      rows.push_back({"one NCCL loaded", n, "PASS",
                      nccl.empty() ? std::string("no NCCL loaded") : "libnccl:" + list("libnccl"), ""});
    else
      rows.push_back({"one NCCL loaded", n, "FAIL",
                      std::to_string(nccl.size()) + " NCCLs loaded in this process: libnccl:" + list("libnccl"),
                      "one NCCL per process: point LD_LIBRARY_PATH at the NCCL that LibTorch loads "
                      "(PyTorch's nvidia/nccl/lib) and remove the others from it; unset LD_PRELOAD of "
                      "another libnccl"});
    std::string dup;
    for (const char* kind : {"libtorch_cpu", "libc10.so", "libcudart"})
      if (libs[kind].size() > 1) dup += std::string(dup.empty() ? "" : "; ") + kind + ":" + list(kind);
    if (dup.empty())
      rows.push_back({"one LibTorch loaded", n, "PASS",
                      "libtorch_cpu:" + (libs["libtorch_cpu"].empty() ? std::string(" none") : list("libtorch_cpu")), ""});
    else
      rows.push_back({"one LibTorch loaded", n, "FAIL", "loaded more than once: " + dup,
                      "remove the second copy from LD_LIBRARY_PATH / LD_PRELOAD (or the Python "
                      "environment) so that exactly one LibTorch and one CUDA runtime are loaded"});
  }

  // The GPUs this node drives (local rank l uses device l): visible, and each one computes.
  {
    const std::string check = "GPU visible and responsive";
    if (cfg.topology.device != "cuda") {
      rows.push_back({check, n, "SKIP", "skipped (CPU ranks)", ""});
    } else {
#ifndef XY_WITH_CUDA
      rows.push_back({check, n, "SKIP", "skipped (this xy-node has no CUDA: see versions)", ""});
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
        rows.push_back({check, n, "FAIL", "counting the GPUs (cudaGetDeviceCount) did not return within " +
                        timeout.str(), fix});
      } else if (!res.empty()) {
        rows.push_back({check, n, "FAIL", res, fix});
      } else if (const int count = *count_p; count < want) {
        rows.push_back({check, n, "FAIL", std::to_string(count) + " GPUs visible; topology.nodes[" + n +
                        "].devices = " + std::to_string(want) + " needs " + std::to_string(want),
                        fix + "; or lower topology.nodes[" + n + "].devices"});
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
          rows.push_back({check, n, "PASS", std::to_string(want) + " of " + std::to_string(count_p->load()) +
                          " visible GPUs answered (ones, sum, copy to the host)", ""});
        else
          rows.push_back({check, n, "FAIL", failed, fix});
      }
#endif
    }
  }

  // The interface: the configured host must be an address of this machine.
  std::string err;
  {
    int fd = listen_on(self.host, 0, &err);
    if (fd >= 0) {
      close(fd);
      rows.push_back({"interface", n, "PASS", self.host + " is an address of this machine", ""});
    } else {
      std::string addrs;
      for (const auto& a : local_addresses()) addrs += (addrs.empty() ? "" : ", ") + a;
      rows.push_back({"interface", n, "FAIL", "cannot bind " + self.host + ": " + err,
                      "set topology.nodes[" + n + "].host to this node's address on the network the "
                      "nodes share; this machine has: " + addrs});
    }
  }

  // Ports: the control port (listened on below) and, on node 0, the store port.
  int listener = -1;
  if (self.port > 0) {
    listener = listen_on(self.host, self.port, &err);
    if (listener >= 0)
      rows.push_back({"control port free", n, "PASS", self.host + ":" + std::to_string(self.port), ""});
    else
      rows.push_back({"control port free", n, "FAIL",
                      self.host + ":" + std::to_string(self.port) + " cannot be bound: " + err,
                      "another process holds it (see `ss -ltnp 'sport = :" + std::to_string(self.port) +
                          "'`): stop it or choose another topology.nodes[" + n + "].port"});
  }
  if (me == 0 && nodes > 1) {
    const int store_port = self.port + 1;
    int fd = listen_on(self.host, store_port, &err);
    if (fd >= 0) {
      close(fd);
      rows.push_back({"rendezvous port free", n, "PASS", self.host + ":" + std::to_string(store_port), ""});
    } else {
      rows.push_back({"rendezvous port free", n, "FAIL",
                      self.host + ":" + std::to_string(store_port) + " cannot be bound: " + err,
                      "the store listens on topology.nodes[0].port + 1: stop the process holding "
                      "it (`ss -ltnp 'sport = :" + std::to_string(store_port) +
                          "'`) or choose another topology.nodes[0].port"});
    }
  }

  // ulimits.
  {
    rlimit r{};
    getrlimit(RLIMIT_NOFILE, &r);
    // Sockets (Gloo opens a few per peer rank), checkpoint and data files.
    const rlim_t need = std::max<rlim_t>(1024, 64 + 8 * static_cast<rlim_t>(cfg.topology.world_size()));
    if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= need)
      rows.push_back({"ulimit -n", n, "PASS", std::to_string(r.rlim_cur) + " open files", ""});
    else
      rows.push_back({"ulimit -n", n, "FAIL",
                      std::to_string(r.rlim_cur) + " open files; at least " + std::to_string(need) + " needed",
                      "raise it before starting xy-node: `ulimit -n 65536` (hard limit " +
                          (r.rlim_max == RLIM_INFINITY ? std::string("unlimited") : std::to_string(r.rlim_max)) +
                          "; permanently: nofile in /etc/security/limits.conf or LimitNOFILE= in the "
                          "systemd unit)"});
    getrlimit(RLIMIT_MEMLOCK, &r);
    const bool cuda = cfg.topology.device == "cuda";
    const rlim_t need_l = cuda ? rlim_t{1} << 30 : 0;  // pinned host buffers on GPU nodes
    const std::string have = r.rlim_cur == RLIM_INFINITY ? "unlimited" : mib(static_cast<double>(r.rlim_cur));
    if (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= need_l)
      rows.push_back({"ulimit -l", n, "PASS", have + (cuda ? "" : " (CPU ranks pin nothing)"), ""});
    else
      rows.push_back({"ulimit -l", n, "FAIL", have + " of locked memory; GPU nodes pin host buffers",
                      "`ulimit -l unlimited` (memlock in /etc/security/limits.conf, LimitMEMLOCK=infinity "
                      "for systemd, --ulimit memlock=-1 for Docker)"});
  }

  // Host memory and disk for the planned shards. (build_layout checks its arithmetic: a shape too
  // large to count is a failed check naming the key, not a wrapped-around size.)
  ModelLayout layout;
  try {
    ModelConfig m = cfg.model;
    if (m.vocab_size == 0) m.vocab_size = cfg.data.tokenizer_vocab;
    layout = build_layout(m, cfg.topology.world_size(), cfg.optimizer.no_decay);
  } catch (const std::exception& e) {
    rows.push_back({"host memory", n, "FAIL", e.what(), "choose a smaller model (model.*)"});
  }
  if (!layout.units.empty()) {
    const int world = cfg.topology.world_size();
    const double params = static_cast<double>(layout.total_numel());
    const double share = params * self.devices / world;
    // fp32 master, m, v, gradient; with parameter offload also the pinned working copies
    // (2 bytes a parameter in bf16/fp16, 4 in fp32; twice that with the delayed update).
    const double working = !cfg.actors.offload_params ? 0.0
                           : (cfg.train.precision == "fp32" ? 4.0 : 2.0) *
                                 (cfg.optimizer.delayed_update ? 2.0 : 1.0);
    const double per_param = 16.0 + working;
    const double need = per_param * share;
    int64_t avail_kb = 0;
    std::ifstream mi("/proc/meminfo");
    std::string key;
    int64_t val;
    std::string unit;
    while (mi >> key >> val >> unit)
      if (key == "MemAvailable:") avail_kb = val;
    const double avail = avail_kb * 1024.0;
    std::ostringstream d;
    d << static_cast<int64_t>(params) << " parameters; this node's share needs " << mib(need)
      << " (" << per_param << " B/parameter" << (working > 0 ? ", with the offloaded working copies" : "")
      << "); " << mib(avail) << " available";
    if (need <= avail)
      rows.push_back({"host memory", n, "PASS", d.str(), ""});
    else
      rows.push_back({"host memory", n, "FAIL", d.str(),
                      "add nodes or ranks (each holds 1/world of the state), choose a smaller model, "
                      "or free memory on this node"});
    namespace fs = std::filesystem;
    fs::path dir = fs::absolute(cfg.checkpoint.dir.empty() ? cfg.data.work_dir : cfg.checkpoint.dir);
    while (!dir.empty() && !fs::exists(dir) && dir != dir.root_path()) dir = dir.parent_path();
    struct statvfs sv{};
    const double per_ckpt = 16.0 * share;  // working (<= 4) + master + m + v
    const double disk_need = per_ckpt * (cfg.checkpoint.keep_last + 1.0);
    if (statvfs(dir.c_str(), &sv) == 0) {
      const double free_b = static_cast<double>(sv.f_bavail) * sv.f_frsize;
      std::ostringstream dd;
      dd << "checkpoints need " << mib(disk_need) << " (" << cfg.checkpoint.keep_last
         << " kept + 1 being written); " << mib(free_b) << " free under " << dir.string();
      if (disk_need <= free_b)
        rows.push_back({"disk for checkpoints", n, "PASS", dd.str(), ""});
      else
        rows.push_back({"disk for checkpoints", n, "FAIL", dd.str(),
                        "free space there, lower checkpoint.keep_last, or set checkpoint.dir to a "
                        "larger volume"});
    }
  }

  // Peers: serve our facts, ask theirs.
  std::atomic<bool> serving{true};
  std::thread server;
  if (listener >= 0) {
    server = start_thread("the doctor's answering thread", [&] {
      while (serving) {
        pollfd p{listener, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        int c = accept(listener, nullptr, nullptr);
        if (c < 0) continue;
        const std::string line = local_facts(me).dump() + "\n";
        (void)!write(c, line.data(), line.size());
        close(c);
      }
    });
  }
  for (int p = 0; p < nodes; ++p) {
    if (p == me) continue;
    const NodeSpec& peer = cfg.topology.nodes[p];
    const std::string pn = std::to_string(p);
    const auto t0 = std::chrono::system_clock::now();
    const std::string line = ask_peer(peer.host, peer.port, wait_s, &err);
    const auto t1 = std::chrono::system_clock::now();
    if (line.empty()) {
      rows.push_back({"reach node " + pn, n, "FAIL",
                      "no doctor answered at " + peer.host + ":" + std::to_string(peer.port) + ": " + err,
                      "run `xy-node doctor` on node " + pn + " at the same time; if it runs, check that " +
                          peer.host + " is node " + pn + "'s address on a network this node reaches "
                          "(firewall, wrong interface: set topology.nodes[" + pn + "].host)"});
      continue;
    }
    // What arrives from the network is checked before use: a malformed answer is a failed check
    // naming the peer and what is wrong, never an exception (nlohmann's type_error ended the
    // asker with exit 134 on an answer of `42`).
    json theirs;
    std::string problem;
    try {
      theirs = json::parse(line);
      problem = peer_facts_problem(theirs);
    } catch (const std::exception& e) {
      problem = "not JSON (" + std::string(e.what()) + ")";
    }
    if (!problem.empty()) {
      rows.push_back({"reach node " + pn, n, "FAIL",
                      "unreadable answer from " + peer.host + ":" + std::to_string(peer.port) + ": " +
                          problem + "; it sent: " + printable(line.substr(0, 80)),
                      "something else listens on " + peer.host + ":" + std::to_string(peer.port) +
                          " (or another xy version): check topology.nodes[" + pn + "]"});
      continue;
    }
    rows.push_back({"reach node " + pn, n, "PASS", peer.host + ":" + std::to_string(peer.port) + " (" +
                    printable(theirs["hostname"].get<std::string>()) + ")", ""});
    std::string diff;
    for (const auto& [k, name] : kVersions)
      if (theirs[k].get<std::string>() != facts[k].get<std::string>())
        diff += std::string(diff.empty() ? "" : "; ") + name + " " + printable(theirs[k].get<std::string>()) +
                " there, " + facts[k].get<std::string>() + " here";
    if (diff.empty())
      rows.push_back({"same versions as node " + pn, n, "PASS",
                      "xy, LibTorch, CUDA runtime, CUDA driver, NCCL match", ""});
    else
      rows.push_back({"same versions as node " + pn, n, "FAIL", diff,
                      "install the same xy build, LibTorch, CUDA runtime, CUDA driver and NCCL on "
                      "every node (a mismatch hangs or corrupts collectives)"});
    const double mid_us = std::chrono::duration_cast<std::chrono::microseconds>(
                              (t0.time_since_epoch() + t1.time_since_epoch()) / 2).count();
    const double skew = std::abs(theirs["time_us"].get<double>() - mid_us) / 1e6;
    std::ostringstream d;
    d << skew << " s";
    if (skew <= 1.0)
      rows.push_back({"clock skew to node " + pn, n, "PASS", d.str(), ""});
    else
      rows.push_back({"clock skew to node " + pn, n, "FAIL", d.str() + " (more than 1 s)",
                      "synchronise the clocks (chrony or systemd-timesyncd on every node)"});
  }
  // Keep answering for the peers that are still asking.
  if (listener >= 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(nodes > 1 ? 1500 : 0));
    serving = false;
    server.join();
    close(listener);
  }

  int failed = 0, skipped = 0;
  for (const auto& r : rows) {
    failed += r.result == "FAIL";
    skipped += r.result == "SKIP";
  }
  if (as_json) {
    json j = json::array();
    for (const auto& r : rows)
      j.push_back({{"check", r.check}, {"node", r.node}, {"result", r.result}, {"detail", r.detail}, {"fix", r.fix}});
    out << j.dump(2) << "\n";
  } else {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%-26s %-5s %-6s %s\n", "check", "node", "result", "detail");
    out << buf;
    for (const auto& r : rows) {
      std::snprintf(buf, sizeof buf, "%-26s %-5s %-6s ", r.check.c_str(), r.node.c_str(), r.result.c_str());
      out << buf << r.detail << "\n";
      if (!r.fix.empty()) out << "    fix: " << r.fix << "\n";
    }
    out << "doctor: " << rows.size() - failed - skipped << " passed, " << failed << " failed";
    if (skipped > 0) out << ", " << skipped << " skipped";
    out << "\n";
  }
  return failed;
}

}  // namespace xy

int cmd_doctor(int argc, char** argv) {
  cxxopts::Options opts("xy-node doctor", "Preflight checks of this node and its peers.");
  opts.add_options()
      ("c,config", "configuration file (TOML)", cxxopts::value<std::string>())
      ("node-index", "this process's entry in [[topology.nodes]] (default as for train)",
       cxxopts::value<int>())
      ("wait", "seconds to wait for each peer's doctor", cxxopts::value<double>()->default_value("30"))
      ("gpu-timeout", "seconds each GPU gets to answer the probe (default 20, or XY_DOCTOR_GPU_TIMEOUT)",
       cxxopts::value<double>())
      ("json", "print the checks as JSON")
      ("facts", "print what this node reports to its peers (versions, host, clock) as JSON and exit")
      ("h,help", "show this help");
  cxxopts::ParseResult args;
  if (const int rc = parse_options(opts, argc, argv, "doctor", args); rc >= 0) return rc;
  if (args.count("facts")) {
    std::cout << xy::local_facts(-1).dump() << "\n";
    return 0;
  }
  // Seconds are > 0 and at most 30 days, as the config's deadlines (docs/CONFIG.md).
  const double wait_s = args["wait"].as<double>();
  if (!(wait_s >= 0 && wait_s <= xy::kDoctorMaxSeconds)) {
    std::cerr << "xy-node doctor: --wait " << wait_s << ": valid: seconds >= 0 and <= 2592000 (30 days)\n";
    return 2;
  }
  if (args.count("gpu-timeout")) {
    const double t = args["gpu-timeout"].as<double>();
    if (!(t > 0 && t <= xy::kDoctorMaxSeconds)) {
      std::cerr << "xy-node doctor: --gpu-timeout " << t
                << ": valid: seconds > 0 and <= 2592000 (30 days)\n";
      return 2;
    }
    xy::g_gpu_timeout_flag_s = t;
  }
  if (!args.count("config")) {
    std::cerr << "xy-node doctor: --config FILE is required\n";
    return 2;
  }
  xy::Config cfg;
  int me = 0;
  try {
    cfg = xy::load_config(args["config"].as<std::string>());
    me = node_index_from(cfg, args.count("node-index") ? std::optional<int>(args["node-index"].as<int>())
                                                       : std::nullopt);
    if (const std::string p = xy::doctor_environment_problem(); !p.empty()) throw xy::ConfigError(p);
  } catch (const xy::ConfigError& e) {
    std::cerr << "xy-node doctor: " << e.what() << "\n";
    return 2;
  }
  const int failed = xy::run_doctor(cfg, me, wait_s, std::cout, args.count("json") > 0);
  if (xy::g_gpu_hung) {
    // A probe thread is stuck in the driver: do not run exit handlers that may wait for it.
    std::cout.flush();
    std::fflush(nullptr);
    std::_Exit(1);
  }
  return failed == 0 ? 0 : 1;
}

int node_index_from(const xy::Config& cfg, std::optional<int> flag) {
  const int nodes = static_cast<int>(cfg.topology.nodes.size());
  const std::string valid = "; valid: 0.." + std::to_string(nodes - 1) + " (" + cfg.source + " has " +
                            std::to_string(nodes) + " [[topology.nodes]])";
  long long index = cfg.topology.node_index;
  std::string from = "topology.node_index";
  if (flag) {
    index = *flag;
    from = "--node-index";
  } else {
    for (const char* var : {"XY_NODE_INDEX", "NODE_RANK", "SLURM_NODEID"})
      if (const char* v = std::getenv(var)) {
        const std::optional<long long> parsed = parse_integer(v);
        if (!parsed)
          throw xy::ConfigError(std::string(var) + " = '" + v + "' (environment) is not an integer" + valid);
        index = *parsed;
        from = std::string(var) + " (environment)";
        break;
      }
  }
  if (index < 0 || index >= nodes)
    throw xy::ConfigError(from + " = " + std::to_string(index) + " is not a node index" + valid);
  return static_cast<int>(index);
}
