// The job's rendezvous store over LibTorch's c10d stores, shared by the Gloo and NCCL
// communicators: an in-memory store when every rank is in this process, else a TCP store that
// node 0 serves (the others connect); the rendezvous guard (the job's secret handshake, see
// set_rendezvous_guard) runs on a TCP store before any rank uses it.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <memory>
#include <string>

#include "comm/comm.hpp"

namespace xy {

class C10dStore : public KeyValueStore {
 public:
  explicit C10dStore(c10::intrusive_ptr<c10d::Store> s) : s_(std::move(s)) {}
  void set(const std::string& key, const std::string& value) override;
  std::string get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t delta) override { return s_->add(key, delta); }
  bool check(const std::string& key) override { return s_->check({key}); }
  const c10::intrusive_ptr<c10d::Store>& raw() const { return s_; }

 private:
  c10::intrusive_ptr<c10d::Store> s_;
};

// Opens the job's store (see above). Throws std::runtime_error naming host:port when a TCP store
// cannot be served or reached, std::invalid_argument for an in-memory store with remote ranks.
std::shared_ptr<C10dStore> open_job_store(int world, int local, const std::string& store_host,
                                          int store_port, bool is_store_server, double timeout_s);

// The TCP store at host:port: served by this process (node 0's) or a client connection to it.
// Throws std::runtime_error naming host:port.
c10::intrusive_ptr<c10d::Store> tcp_store(const std::string& host, int port, bool is_server,
                                          double timeout_s);

// The store that a local rank's process group rendezvouses through. A TCP store client
// serves one blocking request at a time: a rank waiting in get() for a key that another local rank
// of this process has yet to set would block that rank's set() behind it (two ranks per process
// deadlocked at their first collective), and the job's own gets (checkpoint publication waits on
// other nodes) must not hold up a process group's store calls either. So every local rank gets a
// connection of its own; the in-memory store needs none.
c10::intrusive_ptr<c10d::Store> store_for_local_rank(const C10dStore& job, const std::string& store_host,
                                                     int store_port, double timeout_s);

}  // namespace xy
