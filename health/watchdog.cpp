// The watchdog actor: polls the operation registry every deadlines.poll_ms. When an operation is
// past its deadline it writes the stall report (stderr and <work_dir>/stall-report.txt) and ends
// the process with kExitStall, so that nothing hangs and a supervisor can restart from the last
// checkpoint. With several nodes it hands the stall to the control plane (health/control.hpp),
// which gathers every node's registry into one report, and it ends the process with
// kExitPeerLost when a peer stops sending heartbeats. A watcher thread ends the process with
// kExitWatchdogStuck if the watchdog itself stops ticking. It also owns the status server.
// With deadlines.watchdog = false (only to measure the watchdog's overhead) it neither polls the
// registry for overdue operations nor starts the watcher; the control plane's heartbeats (several
// nodes) and the status server still run, and operations are still registered for them.
#include <cstdio>
#include <iostream>

#include "actors/actors.hpp"
#include "io/threads.hpp"
#include "health/control.hpp"
#include "health/status_server.hpp"

namespace xy {
namespace {

static_assert(kControlExitStall == kExitStall && kControlExitPeerLost == kExitPeerLost &&
                  kControlExitWatchdogStuck == kExitWatchdogStuck,
              "exit codes of control.hpp and engine.hpp differ");

std::mutex g_control_mu;
std::weak_ptr<ControlPlane> g_control;  // the running job's control plane, for await_peer_verdict

// Ends the process if the watchdog has not ticked for `hard_s` (the watchdog is watched).
class Watcher {
 public:
  explicit Watcher(double hard_s) : hard_s_(hard_s) {
    beat();
    thread_ = start_thread("the watchdog's thread", [this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop_) {
        cv_.wait_for(lock, std::chrono::milliseconds(250));
        const double quiet = std::chrono::duration<double>(Clock::now() - last()).count();
        if (!stop_ && quiet > hard_s_) {
          std::fprintf(stderr, "\nxy: the watchdog has not run for %.1f s (limit %.1f s): it is stuck; "
                               "ending the process with code %d\n", quiet, hard_s_, kExitWatchdogStuck);
          std::fflush(nullptr);
          std::_Exit(kExitWatchdogStuck);
        }
      }
    });
  }
  ~Watcher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void beat() { last_us_ = Clock::now().time_since_epoch().count(); }

 private:
  Clock::time_point last() const { return Clock::time_point(Clock::duration(last_us_.load())); }
  const double hard_s_;
  std::atomic<Clock::rep> last_us_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

struct WatchdogState {
  std::shared_ptr<NodeContext> ctx;
  std::shared_ptr<ControlPlane> control;  // several nodes only
  std::unique_ptr<Watcher> watcher;
  std::unique_ptr<StatusServer> status;
  int64_t ticks = 0;
  Clock::time_point declared = Clock::time_point::max();
  static inline const char* name = "watchdog";
  ~WatchdogState() {
    if (control) control->stop();
  }
};

std::vector<std::string> node_names(const Config& cfg) {
  std::vector<std::string> names;
  for (const auto& n : cfg.topology.nodes) names.push_back(n.host + ":" + std::to_string(n.port));
  return names;
}

// The report from this node's registry alone (one node, or the control plane failed).
[[noreturn]] void local_report(NodeContext& ctx, const OpRecord& overdue, Clock::time_point now,
                               const std::string& note) {
  nlohmann::json op = OpRegistry::op_json(overdue, now);
  op["node"] = ctx.node_index;
  const auto names = node_names(ctx.cfg);
  std::vector<nlohmann::json> nodes(names.size());
  nodes[ctx.node_index] = ctx.registry.to_json(now, ctx.node_index, names[ctx.node_index]);
  write_report_and_exit(ctx.cfg, stall_report_json(op, nodes, names) + note, kExitStall);
}

caf::behavior watchdog_fn(caf::stateful_actor<WatchdogState>* self,
                          std::shared_ptr<NodeContext> ctx) {
  auto& st = self->state;
  st.ctx = ctx;
  const auto& d = ctx->cfg.deadlines;
  const bool watching = d.watchdog;
  if (watching) st.watcher = std::make_unique<Watcher>(std::max(10.0, 50 * d.poll_ms / 1000));
  if (ctx->nodes > 1) {
    try {
      st.control = ControlPlane::start(ctx->cfg, ctx->node_index, &ctx->registry);
      std::lock_guard<std::mutex> lock(g_control_mu);
      g_control = st.control;
    } catch (const std::exception& e) {
      ctx->fail(std::string("control plane: ") + e.what());
    }
  }
  if (ctx->cfg.control.http_port > 0) {
    try {
      st.status = start_status_server(ctx);
    } catch (const std::exception& e) {
      ctx->fail(std::string("status server: ") + e.what(), kExitUsage);
    }
  }
  const auto poll = std::chrono::microseconds(static_cast<int64_t>(d.poll_ms * 1000));
  // Without the watchdog, ticks are needed only for the peers' heartbeats.
  if (watching || st.control) self->delayed_send(self, poll, tick_atom::value);
  return {
      [=](tick_atom) {
        auto& s = self->state;
        if (!watching) {
          s.control->check_peers_or_exit();
          self->delayed_send(self, poll, tick_atom::value);
          return;
        }
        s.watcher->beat();
        fault::maybe("watchdog", -1, ++s.ticks);  // fault injection: block-watchdog
        const auto now = Clock::now();
        if (auto overdue = s.ctx->registry.first_overdue(now)) {
          if (!s.control) local_report(*s.ctx, *overdue, now, "");
          if (s.declared == Clock::time_point::max()) {
            nlohmann::json op = OpRegistry::op_json(*overdue, now);
            s.control->declare_stall(op);
            s.declared = now;
          } else if (now - s.declared > std::chrono::seconds(4)) {
            local_report(*s.ctx, *overdue, now,
                         "(the control plane did not gather the other nodes' state in time: this "
                         "is node " + std::to_string(s.ctx->node_index) + "'s view only)\n");
          }
        }
        if (s.control) s.control->check_peers_or_exit();
        self->delayed_send(self, poll, tick_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_watchdog(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx) {
  return sys.spawn<caf::detached>(watchdog_fn, std::move(ctx));
}

void await_peer_verdict(const NodeContext& ctx) {
  std::shared_ptr<ControlPlane> c;
  {
    std::lock_guard<std::mutex> lock(g_control_mu);
    c = g_control.lock();
  }
  if (!c) return;
  const auto until = Clock::now() + std::chrono::duration<double>(ctx.cfg.control.heartbeat_s + 1.5);
  while (Clock::now() < until) {
    c->check_peers_or_exit();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace xy
