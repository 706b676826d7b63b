// The control plane over the job's store: secret handshake, heartbeats, job-wide stall reports
// (see control.hpp).
#include "io/atomic_file.hpp"
#include "io/threads.hpp"
#include "health/control.hpp"
#include "comm/comm.hpp"

#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "health/faults.hpp"
#include "comm/store_auth.hpp"

namespace xy {
namespace {

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch()).count();
}

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

// get() that gives up after timeout_s (polls check(), so that a missing key never blocks long).
bool get_within(KeyValueStore& store, const std::string& key, double timeout_s, std::string* out) {
  const auto until = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (!store.check(key)) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  *out = store.get(key);
  return true;
}

std::string describe_node(const Config& cfg, int n) {
  const NodeSpec& s = cfg.topology.nodes.at(n);
  return s.host + ":" + std::to_string(s.port);
}

// Proofs compared in constant time (no timing hint on how much of a forged proof was right).
bool same_proof(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The numeric addresses that `host` (a topology entry) resolves to.
std::set<std::string> addresses_of(const std::string& host) {
  std::set<std::string> out;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return out;
  for (addrinfo* a = res; a; a = a->ai_next) {
    char h[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, h, sizeof h, nullptr, 0, NI_NUMERICHOST) == 0)
      out.insert(h);
  }
  freeaddrinfo(res);
  return out;
}

// Node 0 waits for node i's proof. The store already refuses, in its connection handshake
// (comm/net_store.hpp), a node whose secret differs, so such a node never posts one: once the
// store has refused a connection that came from node i's address and said it was node i, node 0
// gives up after a grace of 2 s (in which node i proper can still join: a stranger's attempt alone
// does not end the start), naming node i. At the deadline it names every refused connection.
std::string node_proof(KeyValueStore& store, const Config& cfg, int i, double timeout_s,
                       const std::string& fix) {
  using Steady = std::chrono::steady_clock;
  const std::string key = "xy/auth/node/" + std::to_string(i);
  const std::string label = "node " + std::to_string(i);
  const std::set<std::string> addrs = addresses_of(cfg.topology.nodes.at(i).host);
  const auto until = Steady::now() + std::chrono::duration_cast<Steady::duration>(
                                         std::chrono::duration<double>(timeout_s));
  while (!store.check(key)) {
    for (const StoreRefusal& r : store_refusals())
      if (r.secret_mismatch && r.label == label && addrs.count(r.peer_host) &&
          Steady::now() - r.when > std::chrono::seconds(2))
        throw std::runtime_error(
            "refused node " + std::to_string(i) + " (" + describe_node(cfg, i) + "): " +
            (cfg.control.secret.empty() ? "it presented a job secret and this node has none"
                                        : "it presented a wrong or missing job secret") +
            "; " + fix);
    if (Steady::now() > until) {
      std::string refused;
      for (const StoreRefusal& r : store_refusals())
        refused += "; the store refused a connection from " + r.peer +
                   (r.label.empty() ? "" : " (which said it was " + r.label + ")") + ": " + r.reason;
      throw std::runtime_error("node " + std::to_string(i) + " (" + describe_node(cfg, i) +
                               ") did not join within " + std::to_string(timeout_s) + " s" + refused);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return store.get(key);
}

}  // namespace

std::string hmac_sha256_hex(const std::string& key, const std::string& msg) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), md, &len);
  return hex(md, len);
}

void secret_handshake(KeyValueStore& store, const Config& cfg, int me, double timeout_s) {
  const int nodes = static_cast<int>(cfg.topology.nodes.size());
  const std::string& secret = cfg.control.secret;
  const std::string fix =
      "every node must be given the same secret (XY_SECRET in the environment or control.secret in "
      "the config)";
  if (secret.empty())
    std::fprintf(stderr, "xy: warning: this job has no secret (XY_SECRET or control.secret): any "
                         "process that reaches the store at %s can join it\n",
                 describe_node(cfg, 0).c_str());
  if (me == 0) {
    unsigned char nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) throw std::runtime_error("OpenSSL: RAND_bytes failed");
    const std::string n = hex(nonce, sizeof nonce);
    store.set("xy/auth/server", hmac_sha256_hex(secret, n + "/server"));
    store.set("xy/auth/nonce", n);
    std::string refused;
    for (int i = 1; i < nodes; ++i) {
      const std::string proof = node_proof(store, cfg, i, timeout_s, fix);
      const bool ok = same_proof(proof, hmac_sha256_hex(secret, n + "/node/" + std::to_string(i)));
      store.set("xy/auth/verdict/" + std::to_string(i), ok ? "ok" : "refused");
      if (!ok)
        refused += (refused.empty() ? "" : "; ") + std::string("node ") + std::to_string(i) + " (" +
                   describe_node(cfg, i) + ")";
    }
    if (!refused.empty()) {
      std::this_thread::sleep_for(std::chrono::seconds(1));  // let the refused node read its verdict
      throw std::runtime_error("refused " + refused +
                               ": it presented a wrong or missing job secret; " + fix);
    }
    return;
  }
  std::string n, server;
  if (!get_within(store, "xy/auth/nonce", timeout_s, &n) ||
      !get_within(store, "xy/auth/server", timeout_s, &server))
    throw std::runtime_error("node 0 (" + describe_node(cfg, 0) + ") posted no challenge within " +
                             std::to_string(timeout_s) + " s");
  store.set("xy/auth/node/" + std::to_string(me), hmac_sha256_hex(secret, n + "/node/" + std::to_string(me)));
  if (!same_proof(server, hmac_sha256_hex(secret, n + "/server")))
    throw std::runtime_error("node 0 (" + describe_node(cfg, 0) +
                             ") does not know this job's secret: refusing to join it; " + fix);
  std::string verdict;
  if (!get_within(store, "xy/auth/verdict/" + std::to_string(me), timeout_s, &verdict))
    throw std::runtime_error("node 0 gave no verdict on this node's secret within " +
                             std::to_string(timeout_s) + " s");
  if (verdict != "ok")
    throw std::runtime_error("node 0 (" + describe_node(cfg, 0) +
                             ") refused this node: wrong or missing job secret; " + fix);
}

void write_report_and_exit(const Config& cfg, const std::string& report, int code) {
  // Once per process: the control plane's thread, the watchdog's and its watcher can all get here;
  // the first one reports, aborts the communicators and exits, the others wait for that.
  static std::atomic<bool> reporting{false};
  if (reporting.exchange(true))
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  std::cerr << "\n" << report << std::flush;
  const auto path = std::filesystem::path(cfg.data.work_dir) / "stall-report.txt";
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  try {
    write_file_atomic(path.string(), report);
  } catch (const std::exception& e) {
    std::cerr << "xy: cannot write the stall report: " << e.what() << "\n";
  }
  // Collectives stuck on the device are cancelled (ncclCommAbort), not left spinning.
  // (Within 5 s: well inside the watchdog watcher's 10 s, which would end the process as stuck.)
  for (const auto& line : abort_communicators(5)) std::cerr << "xy: " << line << "\n";
  std::cerr << "xy: report written to " << path.string() << "; exiting with code " << code << "\n"
            << std::flush;
  std::fflush(nullptr);
  std::_Exit(code);  // collectives in flight cannot be joined: end the process
}

ControlPlane::ControlPlane(const Config& cfg, int node_index, OpRegistry* registry)
    : cfg_(cfg), me_(node_index), nodes_(static_cast<int>(cfg.topology.nodes.size())),
      registry_(registry) {
  const NodeSpec& n0 = cfg.topology.nodes[0];
  store_ = connect_store(n0.host, n0.port + 1, std::max(5.0, cfg.control.heartbeat_s));
  beat_.assign(nodes_, -1);
  seen_.assign(nodes_, Clock::now());
  last_ok_us_ = now_us();
}

std::shared_ptr<ControlPlane> ControlPlane::start(const Config& cfg, int node_index,
                                                  OpRegistry* registry) {
  std::shared_ptr<ControlPlane> c(new ControlPlane(cfg, node_index, registry));
  c->thread_ = start_thread("the control plane's thread", [self = c] { self->loop(); });
  return c;
}

void ControlPlane::stop() {
  stop_ = true;
  cv_.notify_all();
  if (!thread_.joinable()) return;
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (!stopped_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (stopped_) thread_.join();
  else thread_.detach();  // it holds its own reference
}

std::string ControlPlane::node_name(int n) const { return describe_node(cfg_, n); }

double ControlPlane::store_silence_s() const { return (now_us() - last_ok_us_) / 1e6; }

void ControlPlane::declare_stall(const nlohmann::json& overdue) {
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_stall_.is_null()) pending_stall_ = overdue;
  cv_.notify_all();
}

void ControlPlane::peer_lost(const std::string& what) {
  std::ostringstream o;
  o << "PEER LOST: " << what << "\n"
    << "this node (node " << me_ << ", " << node_name(me_) << ") ends its part of the job; restart "
    << "the job from the last checkpoint once the node is back\n"
    << "this node's ranks at that time:\n";
  const nlohmann::json j = registry_->to_json(Clock::now(), me_, node_name(me_));
  for (const auto& r : j["ranks"])
    o << "  rank " << r["rank"] << ": step " << r["step"] << ", " << r["phase"].get<std::string>()
      << (r["unit"].get<int>() >= 0 ? " of unit " + std::to_string(r["unit"].get<int>()) : "") << "\n";
  write_report_and_exit(cfg_, o.str(), kControlExitPeerLost);
}

void ControlPlane::check_peers_or_exit() {
  const double limit = cfg_.control.heartbeat_s;
  std::string err;
  std::vector<Clock::time_point> seen;
  {
    std::lock_guard<std::mutex> lock(mu_);
    err = store_error_;
    seen = seen_;
  }
  if (!err.empty()) {
    if (me_ == 0) peer_lost("this node's own store failed: " + err);
    peer_lost("node 0 (" + node_name(0) + "), which serves the job's store, is gone (killed or "
              "unreachable): " + err);
  }
  const double silence = store_silence_s();
  if (me_ != 0 && silence > limit) {
    std::ostringstream o;
    o << "node 0 (" << node_name(0) << "), which serves the job's store, has not answered for "
      << silence << " s (frozen, e.g. SIGSTOP, or partitioned)";
    peer_lost(o.str());
  }
  const auto now = Clock::now();
  for (int n = 0; n < nodes_; ++n) {
    if (n == me_) continue;
    const double quiet = std::chrono::duration<double>(now - seen[n]).count();
    if (quiet > limit) {
      std::ostringstream o;
      o << "node " << n << " (" << node_name(n) << ") sent no heartbeat for " << quiet
        << " s (limit control.heartbeat_s = " << limit << " s): killed, frozen (SIGSTOP) or partitioned";
      peer_lost(o.str());
    }
  }
}

void ControlPlane::loop() {
  const double interval = std::min(0.25, cfg_.control.heartbeat_s / 8);
  const std::string mine = "xy/hb/" + std::to_string(me_);
  try {
    while (!stop_) {
      store_->add(mine, 1);
      for (int n = 0; n < nodes_; ++n) {
        if (n == me_) continue;
        const int64_t v = store_->add("xy/hb/" + std::to_string(n), 0);
        if (v != beat_[n]) {
          beat_[n] = v;
          std::lock_guard<std::mutex> lock(mu_);
          seen_[n] = Clock::now();
        }
      }
      const int64_t stalls = store_->add("xy/stall", 0);
      last_ok_us_ = now_us();
      nlohmann::json pending;
      {
        std::lock_guard<std::mutex> lock(mu_);
        pending = pending_stall_;
      }
      if (!pending.is_null()) stall_protocol(true, pending);
      if (stalls > 0) stall_protocol(false, nullptr);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(interval),
                   [this] { return stop_.load() || !pending_stall_.is_null(); });
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mu_);
    store_error_ = e.what();
  }
  stopped_ = true;
}

void ControlPlane::stall_protocol(bool candidate, nlohmann::json overdue) {
  const auto now = Clock::now();
  bool leader = false;
  if (candidate) {
    overdue["node"] = me_;
    leader = store_->add("xy/stall", 1) == 1;
    if (leader) store_->set("xy/stall/op", overdue.dump());
  }
  const nlohmann::json mine = registry_->to_json(now, me_, node_name(me_));
  store_->set("xy/stall/node/" + std::to_string(me_), mine.dump());
  // Everyone else answers within one heartbeat interval; wait a little longer.
  const double gather_s = 2.0;
  std::string text;
  if (leader) {
    std::vector<nlohmann::json> all(nodes_);
    std::vector<std::string> names;
    for (int n = 0; n < nodes_; ++n) names.push_back(node_name(n));
    const auto until = Clock::now() + std::chrono::duration<double>(gather_s);
    for (int n = 0; n < nodes_; ++n) {
      const double left = std::max(0.0, std::chrono::duration<double>(until - Clock::now()).count());
      if (get_within(*store_, "xy/stall/node/" + std::to_string(n), left, &text))
        all[n] = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);  // checked in the report
    }
    const std::string report = stall_report_json(overdue, all, names);
    store_->set("xy/stall/report", report);
    // Node 0 serves the store: let the others read the report before it goes away.
    if (me_ == 0) {
      const auto read_until = Clock::now() + std::chrono::milliseconds(1500);
      while (store_->add("xy/stall/read", 0) < nodes_ - 1 && Clock::now() < read_until)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    write_report_and_exit(cfg_, report, kControlExitStall);
  }
  if (get_within(*store_, "xy/stall/report", gather_s + 2.0, &text)) {
    store_->add("xy/stall/read", 1);
    write_report_and_exit(cfg_, text, kControlExitStall);
  }
  // The leader vanished before reporting: say what this node knows.
  std::string op;
  nlohmann::json o = overdue;
  if (o.is_null() && get_within(*store_, "xy/stall/op", 0.1, &op)) o = nlohmann::json::parse(op, nullptr, /*allow_exceptions=*/false);
  if (!o.is_object()) o = {{"kind", "unknown"}, {"rank", -1}};
  std::vector<nlohmann::json> all(nodes_);
  std::vector<std::string> names;
  for (int n = 0; n < nodes_; ++n) names.push_back(node_name(n));
  all[me_] = mine;
  write_report_and_exit(cfg_, stall_report_json(o, all, names) +
                                  "(the leading node's report did not arrive: this is node " +
                                  std::to_string(me_) + "'s view only)\n",
                        kControlExitStall);
}

}  // namespace xy
