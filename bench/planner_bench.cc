// planner_bench: the replication planner against DeepSeek EPLB's algorithm on
// the cases file (shared/bench/planner_cases.json by default), plus a
// synthetic full model (61 layers, 256 experts, 288 replicas, 8 groups, 4
// nodes, 32 GPUs) timed end to end on one core.
//
//   planner_bench [--cases PATH] [--time-budget-ms MS] [--layers N]
//
// Prints one JSON document on stdout; progress goes to stderr. The full-model
// layers are synthesized deterministically from the cases file's first case
// with that shape: layer i takes the file's layer (i mod L) and multiplies
// every load by exp(0.3 * z), z ~ N(0, 1) from std::mt19937_64 seeded with
// 1000 + i (rounded to whole tokens, at least 1).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "moe/common/clock.h"
#include "moe/policies/planner.h"

namespace {

using nlohmann::json;
namespace pol = moe::policies;

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

struct Case {
  pol::PlannerShape shape;
  std::vector<std::vector<double>> loads;
  std::vector<double> eplb_reference;
};

double GeoMean(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  double s = 0.0;
  for (double x : v)
    s += std::log(x);
  return std::exp(s / v.size());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"planner_bench: replication planner vs EPLB on the planner cases"};
  std::string cases_path = std::string(MOE_REPO_ROOT) + "/../shared/bench/planner_cases.json";
  double budget_ms = pol::PlannerOptions{}.time_budget_ms;
  int full_layers = 61;
  app.add_option("--cases", cases_path, "cases file (JSON)")->capture_default_str();
  app.add_option("--time-budget-ms", budget_ms, "planner search budget per layer")
      ->capture_default_str();
  app.add_option("--layers", full_layers, "layers of the synthetic full model")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::ifstream in(cases_path);
  if (!in) {
    std::cerr << "planner_bench: cannot open " << cases_path << "; pass --cases PATH\n";
    return 1;
  }
  json doc = json::parse(in, nullptr, false);
  if (doc.is_discarded() || !doc.contains("cases")) {
    std::cerr << "planner_bench: " << cases_path << " is not a cases file ({\"cases\": [...]})\n";
    return 1;
  }
  std::vector<Case> cases;
  for (const json& c : doc["cases"]) {
    Case k;
    k.shape = {c["experts"].get<int>(), c["replicas"].get<int>(), c["groups"].get<int>(),
               c["nodes"].get<int>(), c["gpus"].get<int>()};
    k.loads = c["loads"].get<std::vector<std::vector<double>>>();
    if (c.contains("eplb_max_over_mean")) {
      k.eplb_reference = c["eplb_max_over_mean"].get<std::vector<double>>();
    }
    cases.push_back(std::move(k));
  }

  pol::PlannerOptions options;
  options.time_budget_ms = budget_ms;
  options.clock = moe::SystemClock();

  json out;
  out["cases_file"] = cases_path;
  out["time_budget_ms"] = budget_ms;
  out["layers"] = json::array();
  std::vector<double> ratio_hier, ratio_global;
  double worst_ratio = 0.0, max_gap = 0.0, max_reference_error = 0.0;
  int layers_over_2pct = 0, failures = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    for (size_t li = 0; li < c.loads.size(); ++li) {
      auto t0 = std::chrono::steady_clock::now();
      auto eplb = pol::PlanEplb(c.shape, c.loads[li]);
      const double eplb_ms = MsSince(t0);
      t0 = std::chrono::steady_clock::now();
      pol::PlannerInput input;
      input.shape = c.shape;
      input.loads = c.loads[li];
      auto report = pol::PlanReplication(input, options);
      const double default_ms = MsSince(t0);
      if (!eplb.ok() || !report.ok()) {
        std::cerr << "case " << ci << " layer " << li << ": "
                  << (eplb.ok() ? report.status() : eplb.status()).ToString() << "\n";
        ++failures;
        continue;
      }
      // Movement: re-plan with EPLB's plan in force.
      input.previous_phy2log = eplb->phy2log;
      auto migrated = pol::PlanReplication(input, options);
      const double v = report->plan.max_over_mean;
      const double ratio = v / eplb->max_over_mean;
      const double gap = v / report->lower_bound;
      const bool hier = report->mode == pol::PlanMode::kHierarchical;
      (hier ? ratio_hier : ratio_global).push_back(ratio);
      worst_ratio = std::max(worst_ratio, ratio);
      max_gap = std::max(max_gap, gap);
      if (gap > 1.02) ++layers_over_2pct;
      json layer = {{"case", ci},
                    {"layer", li},
                    {"mode", std::string(pol::PlanModeName(report->mode))},
                    {"eplb", eplb->max_over_mean},
                    {"default", v},
                    {"lower_bound", report->lower_bound},
                    {"ratio", ratio},
                    {"gap_to_bound", gap},
                    {"time_ms", default_ms},
                    {"eplb_time_ms", eplb_ms}};
      if (li < c.eplb_reference.size()) {
        const double err = std::abs(eplb->max_over_mean - c.eplb_reference[li]);
        max_reference_error = std::max(max_reference_error, err);
        layer["eplb_reference"] = c.eplb_reference[li];
      }
      if (migrated.ok()) {
        layer["moved"] = migrated->num_moved;
        layer["moved_plan_max_over_mean"] = migrated->plan.max_over_mean;
      }
      out["layers"].push_back(layer);
      std::cerr << "case " << ci << " layer " << li << " " << pol::PlanModeName(report->mode)
                << ": eplb " << eplb->max_over_mean << " default " << v << " bound "
                << report->lower_bound << " (" << default_ms << " ms)\n";
    }
  }

  // The synthetic full model.
  json full;
  const Case* base = nullptr;
  for (const Case& c : cases) {
    if (c.shape.num_experts == 256 && c.shape.num_replicas == 288 && c.shape.num_groups == 8 &&
        c.shape.num_nodes == 4 && c.shape.num_gpus == 32) {
      base = &c;
      break;
    }
  }
  if (base != nullptr && full_layers > 0) {
    std::vector<std::vector<double>> layers;
    for (int i = 0; i < full_layers; ++i) {
      std::mt19937_64 rng(1000 + i);
      std::normal_distribution<double> z(0.0, 1.0);
      std::vector<double> l = base->loads[i % base->loads.size()];
      for (double& x : l)
        x = std::max(1.0, std::round(x * std::exp(0.3 * z(rng))));
      layers.push_back(std::move(l));
    }
    auto t0 = std::chrono::steady_clock::now();
    std::vector<double> eplb_values;
    for (const auto& l : layers) {
      auto p = pol::PlanEplb(base->shape, l);
      eplb_values.push_back(p.ok() ? p->max_over_mean : 0.0);
    }
    const double eplb_ms = MsSince(t0);
    t0 = std::chrono::steady_clock::now();
    std::vector<double> default_values, bounds;
    int full_hit_budget = 0;
    for (const auto& l : layers) {
      pol::PlannerInput input;
      input.shape = base->shape;
      input.loads = l;
      auto r = pol::PlanReplication(input, options);
      default_values.push_back(r.ok() ? r->plan.max_over_mean : 0.0);
      bounds.push_back(r.ok() ? r->lower_bound : 0.0);
      if (r.ok() && r->hit_time_budget) ++full_hit_budget;
    }
    const double default_ms = MsSince(t0);
    std::vector<double> ratios;
    double full_gap = 0.0;
    for (size_t i = 0; i < layers.size(); ++i) {
      ratios.push_back(default_values[i] / eplb_values[i]);
      full_gap = std::max(full_gap, default_values[i] / bounds[i]);
    }
    full = {{"layers", full_layers},
            {"shape", "256 experts, 288 replicas, 8 groups, 4 nodes, 32 gpus"},
            {"default_total_ms", default_ms},
            {"eplb_total_ms", eplb_ms},
            {"default_layers_hit_budget", full_hit_budget},
            {"geomean_default_over_eplb", GeoMean(ratios)},
            {"worst_default_over_eplb", *std::max_element(ratios.begin(), ratios.end())},
            {"max_gap_to_bound", full_gap}};
    std::cerr << "full model: default " << default_ms << " ms, eplb " << eplb_ms << " ms\n";
  }

  out["summary"] = {{"geomean_default_over_eplb_hierarchical", GeoMean(ratio_hier)},
                    {"geomean_default_over_eplb_global", GeoMean(ratio_global)},
                    {"worst_default_over_eplb", worst_ratio},
                    {"max_gap_to_bound", max_gap},
                    {"layers_over_2pct_gap", layers_over_2pct},
                    {"eplb_max_reference_error", max_reference_error},
                    {"failures", failures},
                    {"full_model", full}};
  std::cout << out.dump(1) << "\n";
  return failures == 0 ? 0 : 1;
}
