// xy's TCP key-value store: the job's rendezvous store (served by node 0 on nodes[0].port + 1),
// in place of c10d's TCPStore, which in LibTorch 1.13 listens on every interface and lets anyone
// who connects read and write any key (a stranger's `xy/stall` once ended a job).
//
// - The server binds only the address it is given (node 0's topology address).
// - With the job's secret, every connection starts with a mutual challenge-response (each side
//   sends a fresh 32-byte nonce; each proves the key derived from the secret with
//   HMAC-SHA256 over both nonces; proofs compared with CRYPTO_memcmp), and every frame after it
//   carries HMAC-SHA256(session key, direction, sequence number, length, payload): a connection
//   cannot be taken over, replayed or altered. A connection that fails its proof, or a frame that
//   fails its MAC, is dropped and logged on the server's stderr as one line naming the peer; the
//   job goes on.
// - Without a secret (on every node) frames are plain, as c10d's were.
// - Keys are at most 4 KiB and values 64 MiB; everything read from a socket is checked, and a
//   malformed frame drops only its connection.
// It is a c10d::Store, so that Gloo's and NCCL's process groups rendezvous over it unchanged.
// Not encrypted: values cross the network in the clear (docs/OPERATIONS.md, "The job's secret").
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/store_auth.hpp"

namespace xy {

// The server: one thread accepts, one thread per connection serves it (connections are few: a
// handful per node). Blocking get/wait wait on a condition variable up to the client's timeout.
class NetStoreServer {
 public:
  // Binds host:port (port 0: any free port) on that address only and starts serving. Throws
  // std::runtime_error naming host:port when it cannot.
  NetStoreServer(const std::string& host, int port, std::string secret);
  ~NetStoreServer();  // closes every connection and waits (briefly) for their threads
  NetStoreServer(const NetStoreServer&) = delete;
  NetStoreServer& operator=(const NetStoreServer&) = delete;

  int port() const;
  // The connections it refused in their handshake (also in store_refusals()).
  std::vector<StoreRefusal> refusals() const;
  // Connections dropped after their handshake for a malformed frame or a frame that failed its MAC.
  int dropped() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// A client connection (c10d::Store). Calls are serialised: one request at a time per connection,
// so that callers that block in get() should have connections of their own (store_for_local_rank).
class NetStore : public c10d::Store {
 public:
  // Connects to host:port (retrying until `timeout` while nothing listens yet: node 0 may start
  // later) and runs the handshake. `server`, if any, is kept alive as long as this store (node 0's
  // job store owns the server). Throws std::runtime_error naming host:port; a refusal says why
  // ("... refused this node: wrong or missing job secret").
  NetStore(std::string host, int port, StoreCredentials creds, std::chrono::milliseconds timeout,
           std::shared_ptr<NetStoreServer> server = nullptr);
  ~NetStore() override;

  void set(const std::string& key, const std::vector<uint8_t>& value) override;
  // c10d's semantics: a missing key is created only when `currentValue` is empty; returns the
  // value now stored (the desired one on success).
  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>& currentValue,
                                  const std::vector<uint8_t>& newValue) override;
  // Blocks until the key exists or the store's timeout passes (then throws).
  std::vector<uint8_t> get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;
  // A new connection to the same server with the same credentials. LibTorch 2.x declares
  // Store::clone() pure virtual (this overrides it there); 1.13 has none, hence no `override`.
  c10::intrusive_ptr<c10d::Store> clone();

  const std::string& address() const { return where_; }

  // Tests only: the next request goes out altered after its MAC was computed (kFlipBit), or the
  // previous request's frame is sent again as it was (kReplay); the server must drop the connection.
  enum class Tamper { kNone, kFlipBit, kReplay };
  void tamper_next_request_for_test(Tamper t) { tamper_ = t; }

 private:
  struct Conn;
  std::string call(const std::string& request, std::chrono::milliseconds server_wait);

  std::string host_;
  int port_;
  std::string where_;  // "host:port"
  StoreCredentials creds_;
  std::shared_ptr<NetStoreServer> server_;
  std::mutex mu_;  // one request at a time
  std::unique_ptr<Conn> conn_;
  std::string broken_;  // why the connection is unusable (guarded by mu_); empty while it is fine
  Tamper tamper_ = Tamper::kNone;
};

}  // namespace xy
