// The network interface that owns an address: xy points NCCL's (and Gloo's) socket transport at
// the interface of the node's topology address, instead of letting them take the first interface
// that is up (docs/CLUSTER.md, 1). LibTorch-free.
#pragma once

#include <string>
#include <vector>

namespace xy {

// The name of the local interface holding one of `host`'s addresses (a numeric address or a name
// that resolves here), e.g. "eno1"; "" when none does. `interfaces`, if given, receives
// "name address" for every interface address seen (for messages).
std::string interface_owning(const std::string& host, std::vector<std::string>* interfaces = nullptr);

// For a job of several nodes: unless the user set them, sets NCCL_SOCKET_IFNAME and
// GLOO_SOCKET_IFNAME for this process to the interface owning `host`. Returns the line to print
// (what was chosen and why, or what the user's settings are, or that no interface owns `host`).
std::string choose_socket_interface(const std::string& host, const std::string& what);

}  // namespace xy
