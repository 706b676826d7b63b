// Shared pieces of the communicator implementations.
#include "comm/comm.hpp"

#include <mutex>

namespace xy {
namespace {
std::mutex guard_mu;
std::function<void(KeyValueStore&)> pending_guard;  // guarded by guard_mu
}  // namespace

void set_rendezvous_guard(std::function<void(KeyValueStore&)> guard) {
  std::lock_guard<std::mutex> lock(guard_mu);
  pending_guard = std::move(guard);
}

std::function<void(KeyValueStore&)> take_rendezvous_guard() {
  std::lock_guard<std::mutex> lock(guard_mu);
  return std::exchange(pending_guard, nullptr);
}

}  // namespace xy
