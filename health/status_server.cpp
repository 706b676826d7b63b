// The node's status server over HTTP (cpp-httplib): /status (JSON), /metrics (Prometheus), / (page).
#include "health/status_server.hpp"
#include "health/charts_js.hpp"
#include "io/threads.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <httplib.h>

#include <cerrno>

#include <fstream>
#include <sstream>
#include <thread>

#include "actors/engine.hpp"

namespace xy {
namespace {

int64_t resident_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages = 0, rss = 0;
  f >> pages >> rss;
  return rss * 4096;
}

// The file's bytes (opened without following a link, as xy opens its own files); false when it
// cannot be read (not there yet).
bool read_metrics_log(const std::string& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1 << 16];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return n == 0;
}

class HttpStatusServer : public StatusServer {
 public:
  HttpStatusServer(std::shared_ptr<NodeContext> ctx, const std::string& host, int port)
      : ctx_(std::move(ctx)) {
    server_.Get("/status", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(node_status_json(*ctx_).dump(), "application/json");
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(status_metrics_text(node_status_json(*ctx_)), "text/plain; version=0.0.4");
    });
    // Node 0's metrics log as it is on disk, for the page's charts (other nodes write none: 404).
    server_.Get("/metrics.jsonl", [this](const httplib::Request&, httplib::Response& res) {
      std::string body;
      if (!read_metrics_log(ctx_->cfg.data.work_dir + "/metrics.jsonl", body)) {
        res.status = 404;
        res.set_content("no metrics log on this node (node 0 writes it)\n", "text/plain");
        return;
      }
      res.set_content(body, "application/x-ndjson");
    });
    server_.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(status_page_html(), "text/html; charset=utf-8");
    });
    if (!server_.bind_to_port(host.c_str(), port))
      throw std::runtime_error("cannot serve status on " + host + ":" + std::to_string(port) +
                               " (in use, or not an address of this machine); set control.http_port "
                               "to a free port or control.http_host to this node's interface");
    thread_ = start_thread("the status server's thread", [this] { server_.listen_after_bind(); });
  }
  ~HttpStatusServer() override {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::shared_ptr<NodeContext> ctx_;
  httplib::Server server_;
  std::thread thread_;
};

}  // namespace

nlohmann::json node_status_json(NodeContext& ctx) {
  const auto now = Clock::now();
  const NodeSpec& me = ctx.cfg.topology.nodes.at(ctx.node_index);
  const std::string name = me.host + ":" + std::to_string(me.port);
  nlohmann::json reg = ctx.registry.to_json(now, ctx.node_index, name);
  nlohmann::json j;
  j["node"] = ctx.node_index;
  j["name"] = name;
  j["nodes"] = ctx.nodes;
  j["world"] = ctx.world;
  j["steps_total"] = ctx.cfg.train.steps;
  j["resident_bytes"] = resident_bytes();
  std::map<int, nlohmann::json> ranks;
  for (int l = 0; l < ctx.local_ranks; ++l) {
    const int rank = ctx.first_rank + l;
    ranks[rank] = {{"rank", rank}, {"step", 0}, {"phase", "init"}, {"unit", -1},
                   {"ops", nlohmann::json::array()},
                   {"shard_bytes", l < static_cast<int>(ctx.shards.size()) && ctx.shards[l]
                                       ? ctx.shards[l]->state_bytes() : 0}};
  }
  for (const auto& r : reg["ranks"]) {
    auto& dst = ranks[r["rank"].get<int>()];
    for (const char* k : {"rank", "step", "phase", "unit"}) dst[k] = r[k];
  }
  for (const auto& op : reg["ops"]) {
    const int rank = op["rank"].get<int>();
    if (ranks.count(rank)) ranks[rank]["ops"].push_back(op);
  }
  j["ranks"] = nlohmann::json::array();
  for (auto& [rank, r] : ranks) j["ranks"].push_back(r);
  j["node_ops"] = nlohmann::json::array();  // node-level work (checkpoint writes)
  for (const auto& op : reg["ops"])
    if (op["rank"].get<int>() < 0) j["node_ops"].push_back(op);
  nlohmann::json loss = nlohmann::json::array();
  {
    std::lock_guard<std::mutex> lock(ctx.result_mu);
    const auto& steps = ctx.result.steps;
    const size_t first = steps.size() > 2000 ? steps.size() - 2000 : 0;
    for (size_t i = first; i < steps.size(); ++i) loss.push_back({steps[i].step, steps[i].loss});
    if (!steps.empty()) {
      j["step"] = steps.back().step;
      j["loss"] = steps.back().loss;
      j["tokens_per_s"] = steps.back().tokens_per_s;
      j["step_s"] = steps.back().step_s;
      // Progress: tokens seen of the target, and the time left (eta_seconds, as the step line).
      const double per_step = static_cast<double>(tokens_per_step(ctx));
      j["tokens"] = per_step * static_cast<double>(steps.back().step);
      j["tokens_target"] = per_step * static_cast<double>(ctx.cfg.train.steps);
      j["eta_s"] = eta_seconds(steps, ctx.cfg.train.steps);
    } else {
      j["step"] = 0;
      j["loss"] = nullptr;
      j["tokens_per_s"] = 0;
      j["step_s"] = 0;
    }
  }
  j["loss_curve"] = loss;
  return j;
}

std::string status_metrics_text(const nlohmann::json& s) {
  std::ostringstream o;
  const std::string node = "node=\"" + std::to_string(s["node"].get<int>()) + "\"";
  o << "# HELP xy_step Last completed optimizer step on this node.\n# TYPE xy_step gauge\n"
    << "xy_step{" << node << "} " << s["step"].get<int64_t>() << "\n";
  o << "# HELP xy_loss Loss of the last step.\n# TYPE xy_loss gauge\n";
  if (!s["loss"].is_null()) o << "xy_loss{" << node << "} " << s["loss"].get<double>() << "\n";
  o << "# HELP xy_tokens_per_second Throughput of the last step (whole job).\n"
    << "# TYPE xy_tokens_per_second gauge\n"
    << "xy_tokens_per_second{" << node << "} " << s["tokens_per_s"].get<double>() << "\n";
  o << "# HELP xy_resident_memory_bytes Resident memory of this node's process.\n"
    << "# TYPE xy_resident_memory_bytes gauge\n"
    << "xy_resident_memory_bytes{" << node << "} " << s["resident_bytes"].get<int64_t>() << "\n";
  o << "# HELP xy_rank_step Step each rank is in.\n# TYPE xy_rank_step gauge\n";
  for (const auto& r : s["ranks"])
    o << "xy_rank_step{" << node << ",rank=\"" << r["rank"].get<int>() << "\"} " << r["step"].get<int64_t>() << "\n";
  o << "# HELP xy_inflight_operations In-flight operations per rank.\n# TYPE xy_inflight_operations gauge\n";
  for (const auto& r : s["ranks"])
    o << "xy_inflight_operations{" << node << ",rank=\"" << r["rank"].get<int>() << "\"} " << r["ops"].size() << "\n";
  o << "# HELP xy_oldest_operation_age_seconds Age of each rank's oldest in-flight operation.\n"
    << "# TYPE xy_oldest_operation_age_seconds gauge\n";
  for (const auto& r : s["ranks"]) {
    double oldest = 0;
    for (const auto& op : r["ops"]) oldest = std::max(oldest, op["age_s"].get<double>());
    o << "xy_oldest_operation_age_seconds{" << node << ",rank=\"" << r["rank"].get<int>() << "\"} " << oldest << "\n";
  }
  return o.str();
}

const char* status_page_html() {
  // The charts under the table are the report's (health/charts_js.hpp), drawn from /metrics.jsonl.
  static const std::string page = std::string(R"HTML(<!doctype html>
<html><head><meta charset="utf-8"><title>xy status</title>
<style>body{font:14px sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left})HTML") +
      charts_css() + R"HTML(</style>
</head><body>
<h1>xy <span id="title"></span></h1>
<p id="summary">loading...</p>
<table id="ranks"><thead><tr><th>rank</th><th>step</th><th>phase</th><th>unit</th><th>in-flight operations (age)</th><th>shard memory</th></tr></thead><tbody></tbody></table>
<h2>loss</h2>
<canvas id="loss" width="640" height="240" style="border:1px solid #ccc"></canvas>
<h2>the run (metrics.jsonl)</h2>
<div id="xy-charts"><p>loading...</p></div>
<script>)HTML" + charts_js() + R"HTML(</script>
<script>
function fmtN(x){const u=['','k','M','G','T'];let i=0;while(x>=1000&&i<4){x/=1000;i++;}return (i?x.toPrecision(3):x.toFixed(0))+u[i];}
function fmtT(t){t=Math.round(t);return t>=3600?Math.floor(t/3600)+'h'+String(Math.floor(t%3600/60)).padStart(2,'0')+'m':t>=60?Math.floor(t/60)+'m'+String(t%60).padStart(2,'0')+'s':t+'s';}
function fmtOp(o){return o.kind+(o.seq?' #'+o.seq:'')+(o.unit>=0?' u'+o.unit:'')+' ('+o.age_s.toFixed(1)+' s)';}
function draw(c,pts){const g=c.getContext('2d');g.clearRect(0,0,c.width,c.height);if(pts.length<1)return;
 let lo=Infinity,hi=-Infinity;for(const p of pts){lo=Math.min(lo,p[1]);hi=Math.max(hi,p[1]);}if(hi==lo)hi=lo+1;
 const s0=pts[0][0],s1=Math.max(pts[pts.length-1][0],s0+1);g.beginPath();
 pts.forEach((p,i)=>{const x=(p[0]-s0)/(s1-s0)*(c.width-20)+10,y=c.height-10-(p[1]-lo)/(hi-lo)*(c.height-20);i?g.lineTo(x,y):g.moveTo(x,y);});
 g.strokeStyle='#06c';g.stroke();g.fillText(hi.toFixed(3),2,10);g.fillText(lo.toFixed(3),2,c.height-2);}
async function tick(){try{const s=await (await fetch('/status')).json();
 document.getElementById('title').textContent='node '+s.node+' ('+s.name+')';
 document.getElementById('summary').textContent='step '+s.step+' of '+s.steps_total+' | loss '+(s.loss===null?'-':s.loss.toFixed(4))+' | '+Math.round(s.tokens_per_s)+' tok/s | memory '+(s.resident_bytes/1048576).toFixed(0)+' MiB'+(s.tokens_target?' | tokens '+fmtN(s.tokens)+' of '+fmtN(s.tokens_target)+', ETA '+fmtT(s.eta_s):'');
 const tb=document.querySelector('#ranks tbody');tb.innerHTML='';
 for(const r of s.ranks){const tr=document.createElement('tr');tr.className='rank';
  for(const v of [r.rank,r.step,r.phase,r.unit>=0?r.unit:'',r.ops.map(fmtOp).join(', '),(r.shard_bytes/1048576).toFixed(1)+' MiB']){const td=document.createElement('td');td.textContent=v;tr.appendChild(td);}
  tb.appendChild(tr);}
 draw(document.getElementById('loss'),s.loss_curve);document.body.dataset.points=s.loss_curve.length;
}catch(e){document.getElementById('summary').textContent='no answer: '+e;}}
tick();setInterval(tick,1000);
async function charts(){const el=document.getElementById('xy-charts');try{const r=await fetch('/metrics.jsonl');
 if(!r.ok){el.textContent=(await r.text()).trim();return;}
 const m=xyCharts.render(el,xyCharts.parse(await r.text()));document.body.dataset.chartSteps=m.charts[0].series.train.length;
}catch(e){el.textContent='no answer: '+e;}}
charts();setInterval(charts,5000);
</script></body></html>
)HTML";
  return page.c_str();
}

std::unique_ptr<StatusServer> start_status_server(std::shared_ptr<NodeContext> ctx) {
  const auto& me = ctx->cfg.topology.nodes.at(ctx->node_index);
  const std::string host = ctx->cfg.control.http_host.empty() ? me.host : ctx->cfg.control.http_host;
  const int port = ctx->cfg.control.http_port + ctx->node_index;  // one port per node
  auto s = std::make_unique<HttpStatusServer>(std::move(ctx), host, port);
  return s;
}

}  // namespace xy
