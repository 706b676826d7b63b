// The node's status server (docs/OPERATIONS.md, "Live diagnostics"): JSON at /status, Prometheus
// text at /metrics, node 0's metrics log at /metrics.jsonl (health/metrics.hpp) and a page at /
// (per-rank table, a live loss curve, and the report's charts of the log), over HTTP on
// control.http_host (default: the node's topology host, loopback unless configured) and
// control.http_port + node index (so that several nodes may share a machine). Read-only; it reads the registry and the step records under their locks.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace xy {

struct NodeContext;

class StatusServer {
 public:
  virtual ~StatusServer() = default;  // stops serving and joins the server thread
};

// Binds and starts serving; throws std::runtime_error naming host:port if it cannot bind.
std::unique_ptr<StatusServer> start_status_server(std::shared_ptr<NodeContext> ctx);

// The /status document of this node (also used by tests).
nlohmann::json node_status_json(NodeContext& ctx);
// The /metrics text of a /status document.
std::string status_metrics_text(const nlohmann::json& status);
// The page served at /.
const char* status_page_html();

}  // namespace xy
