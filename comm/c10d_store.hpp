// The job's rendezvous store as c10d stores, shared by the Gloo and NCCL communicators: an
// in-memory store (c10d's HashStore) when every rank is in this process, else xy's TCP store
// (comm/net_store.hpp, not c10d's TCPStore, which listens on every interface and authenticates
// nobody) that node 0 serves on its topology address only, the others connecting. With the job's
// secret every connection proves it in its handshake and every frame carries a MAC, so that no
// one without the secret can read or write a key (the rendezvous, the control plane's heartbeats
// and stall keys, the checkpoint lists); the rendezvous guard (the job's node-level secret
// handshake, see set_rendezvous_guard) then runs on the store before any rank uses it.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <memory>
#include <string>

#include "comm/comm.hpp"
#include "comm/store_auth.hpp"

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

// Opens the job's store (see above); its TCP connections present store_credentials(). Throws
// std::runtime_error naming host:port when a TCP store cannot be served or reached (or refuses
// this node), std::invalid_argument for an in-memory store with remote ranks.
std::shared_ptr<C10dStore> open_job_store(int world, int local, const std::string& store_host,
                                          int store_port, bool is_store_server, double timeout_s);

// The TCP store at host:port: served by this process (node 0's: bound to host only, refusing
// connections that do not prove creds.secret) and a client connection to it, or only a client
// connection presenting `creds`. Throws std::runtime_error naming host:port (a refused handshake
// says why: "... refused this node: wrong or missing job secret").
c10::intrusive_ptr<c10d::Store> tcp_store(const std::string& host, int port, bool is_server,
                                          double timeout_s, const StoreCredentials& creds);

// The store that a local rank's process group rendezvouses through. A TCP store client
// serves one blocking request at a time: a rank waiting in get() for a key that another local rank
// of this process has yet to set would block that rank's set() behind it (two ranks per process
// deadlocked at their first collective), and the job's own gets (checkpoint publication waits on
// other nodes) must not hold up a process group's store calls either. So every local rank gets a
// connection of its own; the in-memory store needs none.
c10::intrusive_ptr<c10d::Store> store_for_local_rank(const C10dStore& job, const std::string& store_host,
                                                     int store_port, double timeout_s);

}  // namespace xy
