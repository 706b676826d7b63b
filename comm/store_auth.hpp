// Who may use the job's TCP store (comm/net_store.hpp), without LibTorch: the credentials this
// process presents on every store connection it opens, and the connections that the store this
// process serves (node 0's) refused. docs/OPERATIONS.md, "The job's secret", has the design.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace xy {

struct StoreCredentials {
  // The job's secret (XY_SECRET or control.secret). Empty: the connection proves nothing and its
  // frames carry no MAC; a store served with a secret refuses it, and a store served without one
  // refuses a client that has one (the two sides disagree on the job).
  std::string secret;
  // What the connection says it is ("node 1"), for node 0's log and its rendezvous verdict. Sent
  // in the clear and trusted only once the connection has proven the secret.
  std::string label;
};

// Sets the credentials of every TCP store connection this process opens from now on (the job
// store, each local rank's, the control plane's). The node supervisor sets them before the
// rendezvous; unset, connections carry none (a job without a secret).
void set_store_credentials(StoreCredentials c);
StoreCredentials store_credentials();

// A connection that the store served by this process refused during its handshake.
struct StoreRefusal {
  std::string peer;       // "10.0.0.9:41234"
  std::string peer_host;  // "10.0.0.9"
  std::string label;      // what it said it was (unproven; may be empty)
  std::string reason;     // "wrong or missing job secret", ...
  bool secret_mismatch = false;  // it spoke the store's protocol but its secret differs from ours
  std::chrono::steady_clock::time_point when;
};

// Every connection refused so far by the stores this process serves (oldest first).
std::vector<StoreRefusal> store_refusals();

}  // namespace xy
