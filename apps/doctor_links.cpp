// `xy-node doctor`, the checks between nodes beyond reach, versions and clocks (see apps/doctor.hpp):
// that the nodes agree on their transport settings, and the link probe, which measures each
// cross-node link with the job's own transport (Gloo, bound to the topology addresses, rendezvous
// through node 0's store) and says what one training step moves across it (docs/CLUSTER.md, 1-2).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "apps/doctor.hpp"
#include "comm/c10d_store.hpp"
#include "comm/netif.hpp"
#include "comm/store_auth.hpp"
#include "model/layout.hpp"

namespace xy {
namespace doctor {

using json = nlohmann::json;

namespace {

// NCCL settings that every rank of a job must share: a difference hangs the first collective
// (IB on one side, sockets on the other) or picks different protocols. Unset is shown as "unset";
// NCCL_IB_DISABLE unset means 0.
const char* const kNcclSettings[] = {"NCCL_IB_DISABLE", "NCCL_NET", "NCCL_PROTO", "NCCL_ALGO"};

// t[key] when it is a string, else dflt: a peer's facts come from the network and are read only
// as the types expected (a number where a string belongs is the default, never an exception)
// and as printable text.
std::string sv(const json& t, const char* key, const std::string& dflt) {
  if (!t.is_object()) return dflt;
  const auto it = t.find(key);
  return it != t.end() && it->is_string() ? printable(it->get<std::string>()) : dflt;
}

std::string env_or(const char* name, const std::string& dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : dflt;
}

// Whether NCCL would take `ifname` under the interface list `spec` (NCCL_SOCKET_IFNAME's rules:
// comma-separated prefixes; a leading '^' excludes them, a leading '=' matches names exactly).
bool nccl_takes(const std::string& spec, const std::string& ifname) {
  std::string s = spec;
  const bool exclude = !s.empty() && s[0] == '^';
  if (exclude) s.erase(0, 1);
  const bool exact = !s.empty() && s[0] == '=';
  if (exact) s.erase(0, 1);
  bool match = false;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty() && (exact ? ifname == item : ifname.rfind(item, 0) == 0)) match = true;
  return exclude ? !match : match;
}

std::string mbit(double bytes_per_s) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f Mbit/s", bytes_per_s * 8 / 1e6);
  return s;
}

std::string fixed(double v, int digits) {
  char s[32];
  std::snprintf(s, sizeof s, "%.*f", digits, v);
  return s;
}

// The problems with one node's socket interfaces (its transport facts): the interface that NCCL
// (by NCCL_SOCKET_IFNAME) and the user's GLOO_SOCKET_IFNAME name must be the one that owns the
// node's topology address. "" when there are none.
std::string interface_problems(const json& t, int node) {
  const std::string owner = sv(t, "owner", "");
  const std::string host = sv(t, "host", "?");
  const std::string who = "node " + std::to_string(node);
  if (owner.empty()) return "no interface of " + who + " owns " + host + " (its topology address)";
  std::string p;
  const std::string nccl = sv(t, "nccl_ifname", "");
  if (!nccl.empty() && !nccl_takes(nccl, owner))
    p += "NCCL_SOCKET_IFNAME=" + nccl + " on " + who + " does not take " + owner + ", which owns " +
         host + " (its topology address)";
  const std::string gloo = sv(t, "gloo_ifname", "");
  if (!gloo.empty() && gloo != owner)
    p += std::string(p.empty() ? "" : "; ") + "GLOO_SOCKET_IFNAME=" + gloo + " on " + who + ", but " +
         owner + " owns " + host + " (its topology address)";
  return p;
}

// What a node's interface settings are, for the table: "xyl0 (xy's choice)" or "NCCL_SOCKET_IFNAME=x
// GLOO_SOCKET_IFNAME=y (set)".
std::string interface_text(const json& t) {
  const std::string nccl = sv(t, "nccl_ifname", ""), gloo = sv(t, "gloo_ifname", "");
  if (nccl.empty() && gloo.empty()) return sv(t, "owner", "none") + " (xy's choice)";
  return "NCCL_SOCKET_IFNAME=" + (nccl.empty() ? sv(t, "owner", "none") : nccl) +
         ", GLOO_SOCKET_IFNAME=" + (gloo.empty() ? sv(t, "owner", "none") : gloo) + " (set)";
}

}  // namespace

json transport_facts(const Config& cfg, int me) {
  json t;
  const std::string& host = cfg.topology.nodes.at(me).host;
  t["host"] = host;
  t["owner"] = interface_owning(host);
  t["nccl_ifname"] = env_or("NCCL_SOCKET_IFNAME", "");
  t["gloo_ifname"] = env_or("GLOO_SOCKET_IFNAME", "");
  for (const char* k : kNcclSettings) t[k] = env_or(k, std::string(k) == "NCCL_IB_DISABLE" ? "0" : "unset");
  return t;
}

Row check_transport(const Context& c, int p, const json& theirs) {
  const std::string pn = std::to_string(p);
  const std::string check = "same transport as node " + pn;
  if (!theirs.is_object() || !theirs.contains("transport") || !theirs["transport"].is_object())
    return {check, c.n, "SKIP", "node " + pn + " did not report its transport settings (another xy: see versions)", ""};
  const json& mine = c.transport;
  const json& other = theirs["transport"];
  std::string diff;
  for (const char* k : kNcclSettings) {
    const std::string a = sv(other, k, "?"), b = sv(mine, k, "?");
    if (a != b)
      diff += std::string(diff.empty() ? "" : "; ") + k + " " + a + " on node " + pn + ", " + b +
              " on node " + c.n;
  }
  std::string ifs = interface_problems(other, p);
  const std::string own = interface_problems(mine, c.me);
  if (!own.empty()) ifs += (ifs.empty() ? "" : "; ") + own;
  if (diff.empty() && ifs.empty())
    return {check, c.n, "PASS",
            "NCCL_IB_DISABLE " + sv(mine, "NCCL_IB_DISABLE", "?") + " on both; socket interface " +
                interface_text(other) + " on node " + pn + ", " + interface_text(mine) +
                " on node " + c.n + ", each owning its topology address",
            ""};
  std::string fix;
  if (!diff.empty())
    fix = "set the same NCCL_IB_DISABLE, NCCL_NET, NCCL_PROTO and NCCL_ALGO (or leave them unset) on "
          "every node: InfiniBand on one node and sockets on another hang the first collective";
  if (!ifs.empty())
    fix += std::string(fix.empty() ? "" : "; ") +
           "unset NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME (xy then takes the interface of each "
           "node's topology address) or set them to that interface on each node: node " + pn + ": " +
           sv(other, "owner", "none") + ", node " + c.n + ": " + sv(mine, "owner", "none");
  return {check, c.n, "FAIL", diff + (diff.empty() || ifs.empty() ? "" : "; ") + ifs, fix};
}

std::vector<Row> probe_links(const Context& c, const std::vector<json>& peers, double timeout_s) {
  const Config& cfg = c.cfg;
  const int nodes = static_cast<int>(cfg.topology.nodes.size());
  // Who probes: node 0 with every peer (they all answered and all probe), each other node with
  // node 0 when node 0 said it would (its rendezvous port is free and it was not told not to).
  auto probes = [](const json& f) {
    return f.is_object() && f.contains("probe") && f["probe"].is_boolean() && f["probe"].get<bool>();
  };
  std::string why_not = c.no_probe;
  for (int p = 0; p < nodes && why_not.empty(); ++p)
    if (p != c.me && (c.me == 0 || p == 0) && !probes(peers[p]))
      why_not = "node " + std::to_string(p) + "'s doctor runs no link probe (not reached, --no-probe, "
                "its rendezvous port is taken, or another xy)";
  std::vector<Row> rows;
  if (!why_not.empty()) {
    rows.push_back({"link probe", c.n, "SKIP", "skipped: " + why_not, ""});
    return rows;
  }
  struct Link {
    double rtt_s = 0, out_bps = 0, in_bps = 0;  // node 0's view: out = 0 -> j
  };
  std::vector<Link> links(nodes);
  const NodeSpec& n0 = cfg.topology.nodes[0];
  try {
    // The job's rendezvous: node 0's store, with the job's secret; Gloo bound to the topology
    // address, one rank per node (rank = node index).
    const char* env_secret = std::getenv("XY_SECRET");
    set_store_credentials({env_secret ? std::string(env_secret) : cfg.control.secret,
                           "node " + c.n + " (doctor)"});
    auto store = open_job_store(nodes, 1, n0.host, n0.port + 1, c.me == 0, timeout_s);
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(c.self.host));
    opts->threads = 1;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("doctor", store->raw()), c.me, nodes, opts);
    auto send = [&](const at::Tensor& t, int to) {
      std::vector<at::Tensor> v{t};
      pg->send(v, to, 0)->wait();
    };
    auto recv = [&](const at::Tensor& t, int from) {
      std::vector<at::Tensor> v{t};
      pg->recv(v, from, 0)->wait();
    };
    using Clock = std::chrono::steady_clock;
    const at::Tensor one = at::zeros({1}, at::kFloat);
    at::Tensor ctl = at::zeros({2}, at::kDouble);  // [next size in bytes (0: done), a figure]
    for (int j = 1; j < nodes; ++j) {
      if (c.me != 0 && c.me != j) continue;
      const int peer = c.me == 0 ? j : 0;
      Link& l = links[j];
      // Latency: a ping-pong of one float, node 0 timing; the median of 20 after 3 to warm up.
      std::vector<double> rtts;
      for (int i = 0; i < 23; ++i) {
        const auto t0 = Clock::now();
        if (c.me == 0) {
          send(one, peer);
          recv(one, peer);
        } else {
          recv(one, peer);
          send(one, peer);
        }
        if (i >= 3) rtts.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::sort(rtts.begin(), rtts.end());
      ctl[1].fill_(rtts[rtts.size() / 2]);
      if (c.me == 0) send(ctl, peer); else recv(ctl, peer);  // node j prints the same figure
      l.rtt_s = ctl[1].item<double>();
      // Bandwidth, each direction: the sender times a transfer and the receiver's one-float
      // acknowledgement, less a round trip; 1 MiB first, then sized from the rate so far to last
      // ~0.35 s, until one lasts 0.25 s or more (at most 5 rounds, 128 MiB).
      for (int dir = 0; dir < 2; ++dir) {
        const int sender = dir == 0 ? 0 : j;
        const bool sending = c.me == sender;
        int64_t size = 1 << 20;
        double rate = 0;
        for (int round = 0; size > 0; ++round) {
          const at::Tensor buf = at::empty({size / 4}, at::kFloat);
          if (sending) {
            const auto t0 = Clock::now();
            send(buf, peer);
            recv(one, peer);
            const double el = std::chrono::duration<double>(Clock::now() - t0).count();
            rate = static_cast<double>(size) / std::max(el - l.rtt_s, 1e-6);
            int64_t next = 0;
            if (el < 0.25 && round < 4)
              next = std::clamp<int64_t>(static_cast<int64_t>(rate * 0.35) / (1 << 20), 1, 128) << 20;
            ctl[0].fill_(static_cast<double>(next));
            ctl[1].fill_(rate);
            send(ctl, peer);
          } else {
            recv(buf, peer);
            send(one, peer);
            recv(ctl, peer);
          }
          size = static_cast<int64_t>(ctl[0].item<double>());
          rate = ctl[1].item<double>();
        }
        (dir == 0 ? l.out_bps : l.in_bps) = rate;
      }
    }
    pg->barrier()->wait();  // nobody closes its connections while a pair still measures
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = printable(what.substr(0, what.find('\n')));
    rows.push_back({"link probe", c.n, "FAIL",
                    "the Gloo exchange between the nodes (rendezvous at " + n0.host + ":" +
                        std::to_string(n0.port + 1) + ") failed: " + what,
                    "run `xy-node doctor` on every node at the same time, with the same XY_SECRET "
                    "(or control.secret); let TCP through between the topology addresses on any port "
                    "(Gloo connects on ephemeral ports; a firewall between the nodes blocks it)"});
    return rows;
  }
  // What one step moves under the sharding this node's `train` would choose (optim/sharding.hpp).
  ModelConfig m = cfg.model;
  if (m.vocab_size == 0) m.vocab_size = cfg.data.tokenizer_vocab;
  const int world = cfg.topology.world_size();
  std::optional<StepTraffic> traffic;
  std::string choice;
  const int wbytes = cfg.train.precision == "fp32" ? 4 : 2;
  try {
    const ShardChoice sc = choose_sharding(cfg, m, available_memory(cfg));
    choice = sc.why;
    const int local = cfg.topology.nodes[0].devices;
    traffic = sc.node ? node_step_traffic(build_layout(m, local, cfg.optimizer.no_decay), local, nodes, world,
                                          wbytes, node_grad_accum(cfg, 0), replica_grad_bytes(cfg))
                      : step_traffic(build_layout(m, world, cfg.optimizer.no_decay), world, wbytes,
                                     node_grad_accum(cfg, 0), nodes);
  } catch (const std::exception&) {
    // a shape build_layout refuses is host memory's row; a sharding refused, the config's
  }
  for (int j = 1; j < nodes; ++j) {
    if (c.me != 0 && c.me != j) continue;
    const Link& l = links[j];
    const std::string jn = std::to_string(j);
    rows.push_back({"latency to node " + jn, c.n, "PASS",
                    fixed(l.rtt_s * 1e3, 3) + " ms round trip (one float each way, median of 20)", ""});
    rows.push_back({"bandwidth to node " + jn, c.n, "PASS",
                    "node 0 -> node " + jn + " " + mbit(l.out_bps) + ", node " + jn + " -> node 0 " +
                        mbit(l.in_bps) + " (Gloo between " + n0.host + " and " + cfg.topology.nodes[j].host + ")",
                    ""});
    if (!traffic) continue;
    const double per_rank = traffic->total();
    const double across = traffic->across(n0.devices, cfg.topology.nodes[j].devices);
    const double secs = across / std::max(1.0, std::min(l.out_bps, l.in_bps));
    std::ostringstream d;
    d << "one step moves " << fixed(across / 1e6, 3) << " MB (" << std::llround(across)
      << " B) each way: " << fixed(secs, 3) << " s at the measured bandwidth (sharding " << choice
      << "; " << world << " ranks, " << cfg.train.precision << ", grad_accum " << node_grad_accum(cfg, 0)
      << "; each rank sends all-gathers " << std::llround(traffic->gathers) << " B + reduce-scatter "
      << std::llround(traffic->reduce_scatter) << " B + all-reduce " << std::llround(traffic->all_reduce)
      << " B";
    if (traffic->node) d << " within its node + gradient all-reduce " << std::llround(traffic->replica) << " B between nodes";
    d << " = " << std::llround(per_rank) << " B)";
    rows.push_back({"step traffic to node " + jn, c.n, "PASS", d.str(), ""});
  }
  return rows;
}

}  // namespace doctor
}  // namespace xy
