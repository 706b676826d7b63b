// Shared pieces of the communicator implementations: the rendezvous guard and the job's store.
#include "comm/comm.hpp"

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "comm/c10d_store.hpp"
#include "comm/net_store.hpp"

namespace xy {
namespace {
std::mutex guard_mu;
std::function<void(KeyValueStore&)> pending_guard;  // guarded by guard_mu
std::mutex abort_mu;
std::vector<std::weak_ptr<Comm>> abortable;  // guarded by abort_mu
}  // namespace

void register_for_abort(const std::shared_ptr<Comm>& comm) {
  std::lock_guard<std::mutex> lock(abort_mu);
  abortable.push_back(comm);
}

std::vector<std::string> abort_communicators(double limit_s) {
  std::vector<std::shared_ptr<Comm>> comms;
  {
    std::lock_guard<std::mutex> lock(abort_mu);
    for (auto& w : abortable)
      if (auto c = w.lock()) comms.push_back(std::move(c));
    abortable.clear();
  }
  if (comms.empty()) return {};
  // Each abort runs on a thread of its own, all at once: a rank's communicators may wait on each
  // other (node sharding: the job's all-reduce is queued on the device behind a stuck all-reduce
  // between nodes, and ncclCommAbort of the first returns only once the second is aborted). If one
  // hangs, the caller goes on after limit_s.
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> lines;
    size_t left = 0;
  };
  auto sh = std::make_shared<Shared>();
  sh->left = comms.size();
  for (const auto& c : comms)
    std::thread([sh, c] {
      std::string line;
      try {
        line = "rank " + std::to_string(c->rank()) + ": " + c->abort();
      } catch (const std::exception& e) {
        line = "rank " + std::to_string(c->rank()) + ": abort failed: " + e.what();
      }
      std::lock_guard<std::mutex> lock(sh->mu);
      sh->lines.push_back(std::move(line));
      if (--sh->left == 0) sh->cv.notify_all();
    }).detach();
  std::unique_lock<std::mutex> lock(sh->mu);
  if (!sh->cv.wait_for(lock, std::chrono::duration<double>(limit_s), [&] { return sh->left == 0; }))
    sh->lines.push_back("aborting the communicators took longer than " + std::to_string(limit_s) +
                        " s; going on without them");
  return sh->lines;
}

void set_rendezvous_guard(std::function<void(KeyValueStore&)> guard) {
  std::lock_guard<std::mutex> lock(guard_mu);
  pending_guard = std::move(guard);
}

std::function<void(KeyValueStore&)> take_rendezvous_guard() {
  std::lock_guard<std::mutex> lock(guard_mu);
  return std::exchange(pending_guard, nullptr);
}

void C10dStore::set(const std::string& key, const std::string& value) {
  s_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
}

std::string C10dStore::get(const std::string& key) {
  try {
    auto v = s_->get(key);
    return std::string(v.begin(), v.end());
  } catch (const std::exception& e) {
    throw std::runtime_error("store: waiting for key '" + key + "' failed: " + e.what());
  }
}

std::shared_ptr<C10dStore> open_job_store(int world, int local, const std::string& store_host,
                                          int store_port, bool is_store_server, double timeout_s) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  c10::intrusive_ptr<c10d::Store> store;
  if (store_host.empty()) {
    if (local != world)
      throw std::invalid_argument("an in-memory store needs every rank in this process");
    store = c10::make_intrusive<c10d::HashStore>();
    store->setTimeout(timeout);
  } else {
    store = tcp_store(store_host, store_port, is_store_server, timeout_s, store_credentials());
  }
  auto kv = std::make_shared<C10dStore>(store);
  if (!store_host.empty())
    if (auto guard = take_rendezvous_guard()) guard(*kv);
  return kv;
}

c10::intrusive_ptr<c10d::Store> tcp_store(const std::string& host, int port, bool is_server,
                                          double timeout_s, const StoreCredentials& creds) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  std::shared_ptr<NetStoreServer> server;
  // Served on node 0's topology address only; node 0's own connections go through the handshake
  // like everyone else's.
  if (is_server) server = std::make_shared<NetStoreServer>(host, port, creds.secret);
  return c10::make_intrusive<NetStore>(host, port, creds, timeout, std::move(server));
}

c10::intrusive_ptr<c10d::Store> store_for_local_rank(const C10dStore& job, const std::string& store_host,
                                                     int store_port, double timeout_s) {
  if (store_host.empty()) return job.raw();
  return tcp_store(store_host, store_port, /*is_server=*/false, timeout_s, store_credentials());
}

}  // namespace xy
