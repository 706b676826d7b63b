// The watchdog actor: polls the operation registry every deadlines.poll_ms; when an operation is
// past its deadline it writes the stall report (stderr and <work_dir>/stall-report.txt) and ends
// the process with kExitStall, so that nothing hangs and a supervisor can restart from the last
// checkpoint. (Collecting every node's registry over the control plane comes with multi-node.)
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <iostream>

#include "actors/actors.hpp"

namespace xy {
namespace {

struct WatchdogState {
  std::shared_ptr<NodeContext> ctx;
  static inline const char* name = "watchdog";
};

caf::behavior watchdog_fn(caf::stateful_actor<WatchdogState>* self,
                          std::shared_ptr<NodeContext> ctx) {
  self->state.ctx = ctx;
  const auto poll = std::chrono::microseconds(static_cast<int64_t>(ctx->cfg.deadlines.poll_ms * 1000));
  self->delayed_send(self, poll, tick_atom::value);
  return {
      [=](tick_atom) {
        auto& s = self->state;
        const auto now = Clock::now();
        if (auto overdue = s.ctx->registry.first_overdue(now)) {
          const std::string report = s.ctx->registry.stall_report(*overdue, now);
          std::cerr << "\n" << report << std::flush;
          const auto path = std::filesystem::path(s.ctx->cfg.data.work_dir) / "stall-report.txt";
          std::error_code ec;
          std::filesystem::create_directories(path.parent_path(), ec);
          std::ofstream(path) << report;
          std::cerr << "xy: stall report written to " << path.string() << "; exiting with code "
                    << kExitStall << "\n" << std::flush;
          std::fflush(nullptr);
          std::_Exit(kExitStall);  // collectives in flight cannot be joined: end the process
        }
        self->delayed_send(self, poll, tick_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_watchdog(caf::actor_system& sys, std::shared_ptr<NodeContext> ctx) {
  return sys.spawn<caf::detached>(watchdog_fn, std::move(ctx));
}

}  // namespace xy
