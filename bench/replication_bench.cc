// replication_bench: replication that looks ahead against EPLB planned on the
// previous window's mean (vLLM's way), judged on the steps after each plan.
//
//   replication_bench [--data DIR] [--window W] [--devices D] [--redundant N]
//                     [--cf LIST] [--max-moves M] [--expert-bytes B]
//                     [--synthetic-steps N] [--only NAME]
//
// Walks every trace (the real routing in ../shared/real-routing/, read at run
// time, and a generated shifting workload) in windows of W steps. At each
// window boundary every contender plans the placement of each layer's R = E +
// N slots over D devices (slot s on device s / (R / D)) from what it has seen
// (the W steps before the boundary), and the plan is judged on the next W
// steps (placement_judge.h): per step, the mean over layers of the device
// max/mean demand (mean and p99 over steps); token-slots dropped under each
// capacity factor in three capacity scopes; replicas moved and bytes migrated.
// The first window is served by the default placement and not judged.
//
// Capacity scopes (C in token-slots; T tokens, K top-k):
//   expert  C = ceil(cf T K / E) per logical expert, split over its replicas
//           (the engine's per-expert capacity today);
//   slot    C = ceil(cf T K / E) per physical slot (a replica adds room);
//   slot_r  C = ceil(cf T K / R) per physical slot (a replica adds room; the
//           same total room as `expert`, moved to the replicated experts).
//
// Contenders: none (E slots, one per expert, never moved); static (the
// default placement of R slots, slot s holds s % E, never moved); eplb_prev
// (PlanEplb on the previous window's mean demand, every boundary: vLLM's
// EPLB); policy_mean (ProposeReplication on the window mean: the old
// behaviour); lookahead (ProposeReplication on the forecast, the new default;
// no move limit unless --max-moves, like EPLB); lookahead_max_moves_8 (the
// same within the policy's default budget of 8 replicas per layer and plan);
// lookahead_expert_scope (the same told capacity is per logical expert, so
// replica counts follow device balance alone; the others are told per slot);
// eplb_forecast (PlanEplb on the same forecast: the forecast's share of the
// gain); oracle (PlanEplb on the next window's own mean: no deployment has it).
//
// Prints one JSON document on stdout (docs/replication.md); progress on stderr.

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "moe/policies/load_forecast.h"
#include "moe/policies/placement_judge.h"
#include "moe/policies/planner.h"
#include "moe/policies/replication_policy.h"
#include "replication_traces.h"

namespace {

using nlohmann::json;
namespace pol = moe::policies;
using moe::bench::DemandTrace;
using Placement = std::vector<uint32_t>;
using Placements = std::vector<Placement>;  // [layer]

const char* const kScopes[] = {"expert", "slot", "slot_r"};

double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v)
    s += x;
  return s / v.size();
}

// Nearest-rank quantile.
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

double GeoMean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v)
    s += std::log(x);
  return std::exp(s / v.size());
}

std::string CfKey(double cf) {
  return fmt::format("{:g}", cf);
}

struct Setup {
  uint32_t num_experts = 0;
  uint32_t num_replicas = 0;
  uint32_t num_devices = 0;
  uint32_t top_k = 0;
  uint32_t window = 0;
  std::vector<double> cfs;
  double expert_bytes = 0;
  pol::ReplicationPolicyParams policy;
  // The capacity scope the look-ahead policy is told is in force.
  pol::CapacityScope plan_scope = pol::CapacityScope::kSlot;
};

// Steps [begin, end) of layer l, as forecast rows.
std::vector<const std::vector<double>*> Rows(const DemandTrace& trace, size_t layer, size_t begin,
                                             size_t end) {
  std::vector<const std::vector<double>*> rows;
  for (size_t t = begin; t < end; ++t)
    rows.push_back(&trace.demand[t][layer]);
  return rows;
}

std::vector<double> WindowMean(const DemandTrace& trace, size_t layer, size_t begin, size_t end) {
  std::vector<double> mean(trace.num_experts, 0.0);
  for (size_t t = begin; t < end; ++t)
    for (size_t e = 0; e < mean.size(); ++e)
      mean[e] += trace.demand[t][layer][e];
  for (double& x : mean)
    x /= static_cast<double>(end - begin);
  return mean;
}

Placement DefaultPlacement(uint32_t num_replicas, uint32_t num_experts) {
  Placement p(num_replicas);
  for (uint32_t s = 0; s < num_replicas; ++s)
    p[s] = s % num_experts;
  return p;
}

pol::PlannerShape Shape(const Setup& setup) {
  return {static_cast<int>(setup.num_experts), static_cast<int>(setup.num_replicas), 1, 1,
          static_cast<int>(setup.num_devices)};
}

// EPLB on `load`; the plan in force when EPLB refuses (an all-zero window).
Placement Eplb(const Setup& setup, const std::vector<double>& load, const Placement& current) {
  double total = 0;
  for (double x : load)
    total += x;
  if (!(total > 0)) return current;
  moe::Result<pol::Plan> plan = pol::PlanEplb(Shape(setup), load, pol::PlanMode::kGlobal);
  if (!plan.ok()) return current;
  return Placement(plan->phy2log.begin(), plan->phy2log.end());
}

// What a contender sees at a boundary: the trace, the previous window
// [begin, boundary), the next one [boundary, next_end) (only the oracle looks
// at it), and the placements in force.
using Planner = std::function<Placements(const DemandTrace&, size_t begin, size_t boundary,
                                         size_t next_end, const Placements& current)>;

Placements ProposeWith(const Setup& setup, const pol::ReplicationPolicyParams& params,
                       const DemandTrace& trace, size_t begin, size_t boundary,
                       const Placements& current) {
  pol::EngineSnapshot s;
  s.engine_id = "replay";
  s.num_experts = setup.num_experts;
  s.num_replicas = setup.num_replicas;
  s.num_devices = setup.num_devices;
  s.steps_in_epoch = boundary - begin;
  s.knobs.phy2log = current;
  s.knobs.capacity_scope = setup.plan_scope;
  for (size_t l = 0; l < trace.num_layers(); ++l) {
    pol::LayerEstimate est;
    est.layer = static_cast<uint32_t>(l);
    est.expert_demand = WindowMean(trace, l, begin, boundary);
    est.expert_load = est.expert_demand;
    s.layers.push_back(std::move(est));
  }
  for (size_t t = begin; t < boundary; ++t) {
    pol::StepDemand d;
    d.step = t;
    d.tokens = trace.tokens[t];
    d.layers = trace.demand[t];
    s.recent.push_back(std::move(d));
  }
  std::optional<pol::Proposal> p = pol::ProposeReplication(s, params);
  return p ? p->placements : current;
}

struct Contender {
  std::string name;
  uint32_t num_replicas = 0;  // slots per layer
  Placements initial;
  Planner plan;  // null: never re-planned
};

struct Judged {
  std::vector<double> step_max_over_mean;                        // [judged step] mean over layers
  std::map<std::string, std::map<std::string, double>> dropped;  // [scope][cf]
  double demand = 0;
  int64_t moved = 0;
  int64_t plans = 0;
  double plan_cpu_ms = 0;
};

// Walks `trace` for one contender.
moe::Result<Judged> Walk(const Setup& setup, const DemandTrace& trace, const Contender& c) {
  Judged j;
  Placements placement = c.initial;
  pol::PlannerShape shape = Shape(setup);
  shape.num_replicas = static_cast<int>(c.num_replicas);
  const size_t n = trace.demand.size();
  const size_t num_layers = trace.num_layers();
  for (size_t boundary = setup.window; boundary < n; boundary += setup.window) {
    const size_t next_end = std::min(n, boundary + setup.window);
    if (c.plan) {
      const double t0 = ThreadCpuMs();
      Placements next = c.plan(trace, boundary - setup.window, boundary, next_end, placement);
      j.plan_cpu_ms += ThreadCpuMs() - t0;
      ++j.plans;
      for (size_t l = 0; l < num_layers; ++l) {
        std::vector<int> before(placement[l].begin(), placement[l].end());
        std::vector<int> after(next[l].begin(), next[l].end());
        j.moved += pol::CountMovedReplicas(shape, before, after);
      }
      placement = std::move(next);
    }
    std::vector<std::vector<uint32_t>> replicas(num_layers);
    for (size_t l = 0; l < num_layers; ++l) {
      auto r = pol::ValidatedReplicaCounts(placement[l], trace.num_experts);
      if (!r.ok()) return r.status();
      replicas[l] = std::move(*r);
    }
    for (size_t t = boundary; t < next_end; ++t) {
      double sum_mom = 0;
      for (size_t l = 0; l < num_layers; ++l) {
        const std::vector<double>& d = trace.demand[t][l];
        auto mom = pol::DeviceMaxOverMean(d, placement[l], setup.num_devices);
        if (!mom.ok()) return mom.status();
        sum_mom += *mom;
        for (double x : d)
          j.demand += x;
        for (double cf : setup.cfs) {
          const double per_expert =
              pol::CapacityOf(cf, trace.tokens[t], trace.top_k, trace.num_experts);
          const double per_slot_r =
              pol::CapacityOf(cf, trace.tokens[t], trace.top_k, c.num_replicas);
          const std::string key = CfKey(cf);
          j.dropped["expert"][key] +=
              pol::DroppedTokenSlots(d, replicas[l], pol::CapacityScope::kExpert, per_expert);
          j.dropped["slot"][key] +=
              pol::DroppedTokenSlots(d, replicas[l], pol::CapacityScope::kSlot, per_expert);
          j.dropped["slot_r"][key] +=
              pol::DroppedTokenSlots(d, replicas[l], pol::CapacityScope::kSlot, per_slot_r);
        }
      }
      j.step_max_over_mean.push_back(sum_mom / num_layers);
    }
  }
  return j;
}

json Report(const Setup& setup, const Judged& j) {
  json drops = json::object();
  for (const char* scope : kScopes) {
    json per_cf = json::object();
    for (double cf : setup.cfs) {
      const std::string key = CfKey(cf);
      per_cf[key] = j.demand > 0 ? j.dropped.at(scope).at(key) / j.demand : 0.0;
    }
    drops[scope] = per_cf;
  }
  return {{"max_over_mean",
           {{"mean", Mean(j.step_max_over_mean)}, {"p99", Quantile(j.step_max_over_mean, 0.99)}}},
          {"drop_rate", drops},
          {"replicas_moved", j.moved},
          {"bytes_migrated", static_cast<double>(j.moved) * setup.expert_bytes},
          {"plans", j.plans},
          {"plan_cpu_ms_per_boundary", j.plans > 0 ? j.plan_cpu_ms / j.plans : 0.0}};
}

// a / b, or null when b is 0 (and a is not).
json Ratio(double a, double b) {
  if (b > 0) return a / b;
  if (a == 0) return 1.0;
  return nullptr;
}

json Ratios(const Setup& setup, const json& a, const json& b) {
  json drops = json::object();
  for (const char* scope : kScopes) {
    json per_cf = json::object();
    for (double cf : setup.cfs) {
      const std::string key = CfKey(cf);
      per_cf[key] =
          Ratio(a["drop_rate"][scope][key].get<double>(), b["drop_rate"][scope][key].get<double>());
    }
    drops[scope] = per_cf;
  }
  return {{"max_over_mean_mean", Ratio(a["max_over_mean"]["mean"].get<double>(),
                                       b["max_over_mean"]["mean"].get<double>())},
          {"max_over_mean_p99",
           Ratio(a["max_over_mean"]["p99"].get<double>(), b["max_over_mean"]["p99"].get<double>())},
          {"drop_rate", drops},
          {"bytes_migrated",
           Ratio(a["bytes_migrated"].get<double>(), b["bytes_migrated"].get<double>())}};
}

// The forecast variants compared (docs/replication.md, "Forecast").
std::vector<std::pair<std::string, pol::ForecastOptions>> ForecastVariants(uint32_t window) {
  std::vector<std::pair<std::string, pol::ForecastOptions>> v;
  pol::ForecastOptions o;
  o.horizon_steps = window;
  o.method = pol::ForecastMethod::kWindowMean;
  v.emplace_back("window_mean", o);
  o.method = pol::ForecastMethod::kRecent;
  o.half_life_steps = 0;
  o.change_threshold = 0;
  v.emplace_back("share_mean", o);
  o.half_life_steps = window / 4.0;
  v.emplace_back("ewma_w4", o);
  o.half_life_steps = window / 2.0;
  v.emplace_back("ewma_w2", o);
  o.half_life_steps = 0;
  o.change_threshold = 4;
  v.emplace_back("change", o);
  o.half_life_steps = window;
  v.emplace_back("ewma_w_change", o);
  o.half_life_steps = window / 4.0;
  v.emplace_back("ewma_w4_change", o);
  o.method = pol::ForecastMethod::kTrend;
  o.half_life_steps = 0;
  o.change_threshold = 0;
  v.emplace_back("trend", o);
  o.change_threshold = 4;
  v.emplace_back("trend_change", o);
  return v;
}

// Each forecast variant: its L1 error against the next window's mean shares,
// and EPLB planned on it, judged like the contenders.
json CompareForecasts(const Setup& setup, const DemandTrace& trace) {
  json out = json::object();
  const size_t n = trace.demand.size();
  for (const auto& [name, options] : ForecastVariants(setup.window)) {
    double sum_err = 0;
    size_t num_err = 0;
    for (size_t b = setup.window; b < n; b += setup.window) {
      const size_t next_end = std::min(n, b + setup.window);
      for (size_t l = 0; l < trace.num_layers(); ++l) {
        auto f = pol::ForecastLoad(Rows(trace, l, b - setup.window, b), options);
        if (!f.ok()) continue;
        pol::ForecastOptions share_mean;
        share_mean.half_life_steps = 0;
        share_mean.change_threshold = 0;
        auto truth = pol::ForecastLoad(Rows(trace, l, b, next_end), share_mean);
        if (!truth.ok()) continue;
        double fs = 0, ts = 0;
        for (size_t e = 0; e < f->load.size(); ++e) {
          fs += f->load[e];
          ts += truth->load[e];
        }
        double err = 0;
        for (size_t e = 0; e < f->load.size(); ++e)
          err += std::abs(f->load[e] / fs - truth->load[e] / ts);
        sum_err += err;
        ++num_err;
      }
    }
    Contender c;
    c.name = name;
    c.num_replicas = setup.num_replicas;
    c.initial.assign(trace.num_layers(), DefaultPlacement(setup.num_replicas, setup.num_experts));
    pol::ForecastOptions fo = options;
    c.plan = [&setup, fo](const DemandTrace& tr, size_t begin, size_t boundary, size_t,
                          const Placements& current) {
      Placements next = current;
      for (size_t l = 0; l < tr.num_layers(); ++l) {
        auto f = pol::ForecastLoad(Rows(tr, l, begin, boundary), fo);
        if (f.ok()) next[l] = Eplb(setup, f->load, current[l]);
      }
      return next;
    };
    auto judged = Walk(setup, trace, c);
    if (!judged.ok()) continue;
    json r = Report(setup, *judged);
    out[name] = {{"share_error_l1", num_err > 0 ? sum_err / num_err : 0.0},
                 {"eplb_max_over_mean_mean", r["max_over_mean"]["mean"]},
                 {"eplb_max_over_mean_p99", r["max_over_mean"]["p99"]},
                 {"eplb_drop_rate_slot_r_cf1", r["drop_rate"]["slot_r"][CfKey(setup.cfs[0])]}};
  }
  return out;
}

json RunTrace(Setup setup, const DemandTrace& trace, uint32_t redundant) {
  setup.num_experts = trace.num_experts;
  setup.top_k = trace.top_k;
  // R = E + redundant, rounded up to whole devices.
  setup.num_replicas = (trace.num_experts + redundant + setup.num_devices - 1) / setup.num_devices *
                       setup.num_devices;
  setup.policy.forecast.horizon_steps = setup.window;
  const size_t num_layers = trace.num_layers();

  std::vector<Contender> contenders;
  if (trace.num_experts % setup.num_devices == 0) {
    Contender none;
    none.name = "none";
    none.num_replicas = trace.num_experts;
    none.initial.assign(num_layers, DefaultPlacement(trace.num_experts, trace.num_experts));
    contenders.push_back(std::move(none));
  }
  const Placements initial(num_layers, DefaultPlacement(setup.num_replicas, setup.num_experts));
  auto add = [&](std::string name, Planner plan) {
    Contender c;
    c.name = std::move(name);
    c.num_replicas = setup.num_replicas;
    c.initial = initial;
    c.plan = std::move(plan);
    contenders.push_back(std::move(c));
  };
  add("static", nullptr);
  add("eplb_prev", [&setup](const DemandTrace& tr, size_t begin, size_t boundary, size_t,
                            const Placements& current) {
    Placements next = current;
    for (size_t l = 0; l < tr.num_layers(); ++l)
      next[l] = Eplb(setup, WindowMean(tr, l, begin, boundary), current[l]);
    return next;
  });
  pol::ReplicationPolicyParams mean_params = setup.policy;
  mean_params.forecast.method = pol::ForecastMethod::kWindowMean;
  add("policy_mean", [&setup, mean_params](const DemandTrace& tr, size_t begin, size_t boundary,
                                           size_t, const Placements& current) {
    return ProposeWith(setup, mean_params, tr, begin, boundary, current);
  });
  add("lookahead", [&setup](const DemandTrace& tr, size_t begin, size_t boundary, size_t,
                            const Placements& current) {
    return ProposeWith(setup, setup.policy, tr, begin, boundary, current);
  });
  // The same with the policy's default migration budget per layer and plan.
  pol::ReplicationPolicyParams budget_params = setup.policy;
  budget_params.max_moves = pol::ReplicationPolicyParams{}.max_moves;
  add(fmt::format("lookahead_max_moves_{}", budget_params.max_moves),
      [&setup, budget_params](const DemandTrace& tr, size_t begin, size_t boundary, size_t,
                              const Placements& current) {
        return ProposeWith(setup, budget_params, tr, begin, boundary, current);
      });
  // The same told that capacity is per logical expert (replica counts for
  // device balance alone).
  add("lookahead_expert_scope", [&setup](const DemandTrace& tr, size_t begin, size_t boundary,
                                         size_t, const Placements& current) {
    Setup expert = setup;
    expert.plan_scope = pol::CapacityScope::kExpert;
    return ProposeWith(expert, setup.policy, tr, begin, boundary, current);
  });
  add("eplb_forecast", [&setup](const DemandTrace& tr, size_t begin, size_t boundary, size_t,
                                const Placements& current) {
    Placements next = current;
    for (size_t l = 0; l < tr.num_layers(); ++l) {
      auto f = pol::ForecastLoad(Rows(tr, l, begin, boundary), setup.policy.forecast);
      if (f.ok()) next[l] = Eplb(setup, f->load, current[l]);
    }
    return next;
  });
  add("oracle", [&setup](const DemandTrace& tr, size_t, size_t boundary, size_t next_end,
                         const Placements& current) {
    Placements next = current;
    for (size_t l = 0; l < tr.num_layers(); ++l)
      next[l] = Eplb(setup, WindowMean(tr, l, boundary, next_end), current[l]);
    return next;
  });

  json results = json::object();
  for (const Contender& c : contenders) {
    std::cerr << trace.name << ": " << c.name << "\n";
    auto judged = Walk(setup, trace, c);
    if (!judged.ok()) {
      results[c.name] = {{"error", judged.status().message()}};
      continue;
    }
    results[c.name] = Report(setup, *judged);
  }
  const size_t n = trace.demand.size();
  size_t judged_steps = n > setup.window ? n - setup.window : 0;
  json out = {{"name", trace.name},
              {"source", trace.source},
              {"steps", n},
              {"judged_steps", judged_steps},
              {"layers", num_layers},
              {"experts", trace.num_experts},
              {"top_k", trace.top_k},
              {"replicas", setup.num_replicas},
              {"devices", setup.num_devices},
              {"contenders", results}};
  if (results.contains("lookahead") && results.contains("eplb_prev") &&
      !results["lookahead"].contains("error") && !results["eplb_prev"].contains("error")) {
    out["lookahead_vs_eplb_prev"] = Ratios(setup, results["lookahead"], results["eplb_prev"]);
  }
  if (results.contains("lookahead_expert_scope") && results.contains("eplb_prev") &&
      !results["lookahead_expert_scope"].contains("error") &&
      !results["eplb_prev"].contains("error")) {
    out["lookahead_expert_scope_vs_eplb_prev"] =
        Ratios(setup, results["lookahead_expert_scope"], results["eplb_prev"]);
  }
  std::cerr << trace.name << ": forecasts\n";
  out["forecasts"] = CompareForecasts(setup, trace);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"replication_bench: look-ahead replication vs EPLB on the previous window"};
  std::string data_dir = std::string(MOE_REPO_ROOT) + "/../shared/real-routing";
  Setup setup;
  // EPLB moves what it likes: by default so does the look-ahead policy (its
  // move_weight still prices each move); lookahead_max_moves_8 keeps the
  // policy's default budget.
  setup.policy.max_moves = -1;
  setup.window = 16;
  setup.num_devices = 4;
  uint32_t redundant = 16;
  setup.cfs = {1.0, 1.25, 1.5};
  // DeepSeek-V2-Lite and Qwen1.5-MoE-A2.7B experts alike: hidden 2048,
  // intermediate 1408, three bf16 matrices.
  setup.expert_bytes = 3.0 * 2048 * 1408 * 2;
  moe::bench::SyntheticOptions synthetic;
  std::string only;
  std::string method = std::string(pol::ForecastMethodName(setup.policy.forecast.method));
  app.add_option("--data", data_dir, "real routing folder (default ../shared/real-routing)");
  app.add_option("--window", setup.window, "steps per window (plan cadence)")
      ->capture_default_str()
      ->check(CLI::Range(2u, 100000u));
  app.add_option("--devices", setup.num_devices, "devices of the expert-parallel group")
      ->capture_default_str()
      ->check(CLI::Range(2u, 1024u));
  app.add_option("--redundant", redundant, "redundant slots per layer (R = E + this, rounded up)")
      ->capture_default_str();
  app.add_option("--cf", setup.cfs, "capacity factors judged")->capture_default_str();
  app.add_option("--max-moves", setup.policy.max_moves,
                 "look-ahead policy: replicas moved per layer per plan (-1 no limit)")
      ->capture_default_str();
  app.add_option("--min-gain", setup.policy.min_gain, "look-ahead policy: min_gain")
      ->capture_default_str();
  app.add_option("--move-weight", setup.policy.move_weight, "look-ahead policy: move_weight")
      ->capture_default_str();
  app.add_option("--method", method, "look-ahead forecast: window_mean, recent, trend")
      ->capture_default_str();
  app.add_option("--half-life", setup.policy.forecast.half_life_steps,
                 "look-ahead forecast: half-life in steps (0 = equal weights)")
      ->capture_default_str();
  app.add_option("--change-threshold", setup.policy.forecast.change_threshold,
                 "look-ahead forecast: change detection threshold (0 = off)")
      ->capture_default_str();
  app.add_option("--expert-bytes", setup.expert_bytes, "bytes one expert replica moves")
      ->capture_default_str();
  app.add_option("--synthetic-steps", synthetic.num_steps, "steps of the synthetic trace (0: none)")
      ->capture_default_str();
  app.add_option("--only", only, "run only the trace of this name");
  CLI11_PARSE(app, argc, argv);
  auto parsed = pol::ParseForecastMethod(method);
  if (!parsed.ok()) {
    std::cerr << "replication_bench: " << parsed.status().message() << "\n";
    return 2;
  }
  setup.policy.forecast.method = *parsed;
  setup.policy.min_steps = 1;
  if (setup.cfs.empty()) {
    std::cerr << "replication_bench: --cf needs at least one value\n";
    return 2;
  }
  if (moe::Status s = pol::Validate(setup.policy); !s.ok()) {
    std::cerr << "replication_bench: " << s.message() << "\n";
    return 2;
  }

  struct Source {
    std::string name;
    std::vector<std::string> files;
    uint32_t top_k;
  };
  const std::vector<Source> sources = {
      {"deepseek_v2_lite_4_domains",
       {"deepseekv2lite_esft/steps_intent.json", "deepseekv2lite_esft/steps_law.json",
        "deepseekv2lite_esft/steps_summary.json", "deepseekv2lite_esft/steps_translation.json"},
       6},
      {"qwen15_moe_vllm_weiran", {"qwen15moe_vllm_gsm8k_weiran/steps.json"}, 4},
      {"qwen15_moe_vllm_totani", {"qwen15moe_vllm_gsm8k_totani/steps.json"}, 4},
  };
  json traces = json::array();
  json skipped = json::array();
  std::vector<double> real_mom, real_p99;
  std::map<std::string, std::map<std::string, std::vector<double>>> real_drops;
  for (const Source& src : sources) {
    if (!only.empty() && only != src.name) continue;
    auto trace = moe::bench::ReadStepsTrace(src.name, data_dir, src.files, src.top_k);
    if (!trace.ok()) {
      std::cerr << "replication_bench: skipping " << src.name << ": " << trace.status().message()
                << "\n";
      skipped.push_back({{"name", src.name}, {"reason", trace.status().message()}});
      continue;
    }
    json r = RunTrace(setup, *trace, redundant);
    if (r.contains("lookahead_vs_eplb_prev")) {
      const json& ratio = r["lookahead_vs_eplb_prev"];
      real_mom.push_back(ratio["max_over_mean_mean"].get<double>());
      real_p99.push_back(ratio["max_over_mean_p99"].get<double>());
      for (const char* scope : kScopes)
        for (double cf : setup.cfs) {
          const json& x = ratio["drop_rate"][scope][CfKey(cf)];
          if (x.is_number()) real_drops[scope][CfKey(cf)].push_back(x.get<double>());
        }
    }
    traces.push_back(std::move(r));
  }
  if (synthetic.num_steps > 0 && (only.empty() || only == "synthetic_shift")) {
    traces.push_back(RunTrace(setup, moe::bench::SyntheticShiftTrace(synthetic), redundant));
  }
  json geo_drops = json::object();
  for (const auto& [scope, per_cf] : real_drops)
    for (const auto& [cf, v] : per_cf)
      geo_drops[scope][cf] = GeoMean(v);
  pol::ForecastOptions f = setup.policy.forecast;
  json out = {{"window", setup.window},
              {"devices", setup.num_devices},
              {"redundant", redundant},
              {"capacity_factors", setup.cfs},
              {"expert_bytes", setup.expert_bytes},
              {"lookahead",
               {{"method", pol::ForecastMethodName(f.method)},
                {"half_life_steps", f.half_life_steps},
                {"change_threshold", f.change_threshold},
                {"max_moves", setup.policy.max_moves},
                {"min_gain", setup.policy.min_gain},
                {"move_weight", setup.policy.move_weight}}},
              {"traces", traces},
              {"skipped", skipped},
              {"real_traces_geomean_lookahead_vs_eplb_prev",
               {{"max_over_mean_mean", GeoMean(real_mom)},
                {"max_over_mean_p99", GeoMean(real_p99)},
                {"drop_rate", geo_drops}}}};
  std::cout << out.dump(2) << "\n";
  return traces.empty() ? 1 : 0;
}
