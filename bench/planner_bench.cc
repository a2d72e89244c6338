// planner_bench: the replication planner against its own lower bound on
// generated hierarchical cases (planner_cases.h: 128 experts in 16 groups and
// 256 experts in 8 groups, 4 nodes, 32 GPUs), a generated 61-layer model
// timed end to end, and, when the shared cases file is there, the planner
// against DeepSeek EPLB's figures on it as before.
//
//   planner_bench [--cases PATH] [--time-budget-ms MS] [--seeds N]
//                 [--layers-per-seed L] [--layers N]
//
// Prints one JSON document on stdout; progress goes to stderr. Runs on a
// clean clone: every input but the optional cases file is generated.
//
// Generated cases: for each shape, seeds 1 .. N of GeneratePlannerCase, L
// layers each. The 61-layer model is GeneratePlannerCase(kShape256x8, 61,
// seed 61). With the cases file, its first case of that shape also gives a
// 61-layer model as before: layer i takes the file's layer (i mod L) and
// multiplies every load by exp(0.3 * z), z ~ N(0, 1) from std::mt19937_64
// seeded with 1000 + i (rounded to whole tokens, at least 1).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "moe/common/clock.h"
#include "moe/policies/planner.h"
#include "moe/policies/planner_cases.h"

namespace {

using nlohmann::json;
namespace pol = moe::policies;

// CPU time of this thread (ms): on a shared machine the wall clock also
// counts other processes' turns.
double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

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

double Median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Max(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
}

std::string ShapeName(const pol::PlannerShape& s) {
  return std::to_string(s.num_experts) + " experts, " + std::to_string(s.num_replicas) +
         " replicas, " + std::to_string(s.num_groups) + " groups, " + std::to_string(s.num_nodes) +
         " nodes, " + std::to_string(s.num_gpus) + " gpus";
}

// Plans every layer, timing each; checks each plan with EvaluatePlan.
struct LayerResult {
  double value = 0.0, bound = 0.0, eplb = 0.0, ms = 0.0, cpu_ms = 0.0;
  bool hit_budget = false;
  bool ok = false;
};

LayerResult PlanLayer(const pol::PlannerShape& shape, const std::vector<double>& loads,
                      const pol::PlannerOptions& options) {
  LayerResult r;
  pol::PlannerInput input;
  input.shape = shape;
  input.loads = loads;
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = ThreadCpuMs();
  auto report = pol::PlanReplication(input, options);
  r.ms = MsSince(t0);
  r.cpu_ms = ThreadCpuMs() - c0;
  if (!report.ok()) {
    std::cerr << "planner failed: " << report.status().ToString() << "\n";
    return r;
  }
  auto check = pol::EvaluatePlan(shape, loads, report->plan.phy2log, report->mode);
  if (!check.ok() || std::abs(check->max_over_mean - report->plan.max_over_mean) > 1e-9) {
    std::cerr << "invalid plan: " << (check.ok() ? "figure differs" : check.status().ToString())
              << "\n";
    return r;
  }
  r.value = report->plan.max_over_mean;
  r.bound = report->lower_bound;
  r.eplb = report->eplb_max_over_mean;
  r.hit_budget = report->hit_time_budget;
  r.ok = true;
  return r;
}

// The 61-layer (or --layers) model timed end to end.
json FullModel(const pol::PlannerShape& shape, const std::vector<std::vector<double>>& layers,
               const pol::PlannerOptions& options, const std::string& source, int* failures) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<double> eplb_values;
  for (const auto& l : layers) {
    auto p = pol::PlanEplb(shape, l);
    eplb_values.push_back(p.ok() ? p->max_over_mean : 0.0);
  }
  const double eplb_ms = MsSince(t0);
  t0 = std::chrono::steady_clock::now();
  std::vector<LayerResult> results;
  for (const auto& l : layers)
    results.push_back(PlanLayer(shape, l, options));
  const double default_ms = MsSince(t0);
  double cpu_ms = 0.0;
  for (const LayerResult& r : results)
    cpu_ms += r.cpu_ms;
  std::vector<double> ratios, gaps;
  int hit = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!results[i].ok) {
      ++*failures;
      continue;
    }
    ratios.push_back(results[i].value / eplb_values[i]);
    gaps.push_back(results[i].value / results[i].bound - 1);
    hit += results[i].hit_budget ? 1 : 0;
  }
  std::cerr << "full model (" << source << "): default " << default_ms << " ms, eplb " << eplb_ms
            << " ms\n";
  return {{"layers", layers.size()},
          {"shape", ShapeName(shape)},
          {"source", source},
          {"default_total_ms", default_ms},
          {"default_total_cpu_ms", cpu_ms},
          {"eplb_total_ms", eplb_ms},
          {"default_layers_hit_budget", hit},
          {"geomean_default_over_eplb", GeoMean(ratios)},
          {"worst_default_over_eplb", Max(ratios)},
          {"max_gap_to_bound", Max(gaps)}};
}

// The generated cases of one shape: gap to the bound and time per layer.
json GeneratedShape(const pol::PlannerShape& shape, int num_seeds, int layers_per_seed,
                    const pol::PlannerOptions& options, int* failures, json* layers_out) {
  std::vector<double> gaps, times, cpu_times, ratios;
  int over = 0, hit = 0;
  for (int seed = 1; seed <= num_seeds; ++seed) {
    auto c = pol::GeneratePlannerCase(shape, layers_per_seed, seed);
    if (!c.ok()) {
      std::cerr << "generator: " << c.status().ToString() << "\n";
      ++*failures;
      continue;
    }
    for (int li = 0; li < layers_per_seed; ++li) {
      const LayerResult r = PlanLayer(shape, c->loads[li], options);
      if (!r.ok) {
        ++*failures;
        continue;
      }
      const double gap = r.value / r.bound - 1;
      gaps.push_back(gap);
      times.push_back(r.ms);
      cpu_times.push_back(r.cpu_ms);
      ratios.push_back(r.value / r.eplb);
      over += gap > 0.02 ? 1 : 0;
      hit += r.hit_budget ? 1 : 0;
      layers_out->push_back({{"shape", ShapeName(shape)},
                             {"seed", seed},
                             {"layer", li},
                             {"default", r.value},
                             {"lower_bound", r.bound},
                             {"eplb", r.eplb},
                             {"gap_to_bound", gap},
                             {"time_ms", r.ms},
                             {"cpu_ms", r.cpu_ms}});
      std::cerr << shape.num_experts << "x" << shape.num_groups << " seed " << seed << " layer "
                << li << ": default " << r.value << " bound " << r.bound << " gap " << gap << " ("
                << r.ms << " ms)\n";
    }
  }
  return {{"shape", ShapeName(shape)},
          {"layers", gaps.size()},
          {"max_gap_to_bound", Max(gaps)},
          {"median_gap_to_bound", Median(gaps)},
          {"layers_over_2pct_gap", over},
          {"layers_hit_budget", hit},
          {"median_time_ms", Median(times)},
          {"max_time_ms", Max(times)},
          {"median_cpu_ms", Median(cpu_times)},
          {"max_cpu_ms", Max(cpu_times)},
          {"geomean_default_over_eplb", GeoMean(ratios)}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"planner_bench: replication planner vs its lower bound and EPLB"};
  const std::string default_cases =
      std::string(MOE_REPO_ROOT) + "/../shared/bench/planner_cases.json";
  std::string cases_path;
  double budget_ms = pol::PlannerOptions{}.time_budget_ms;
  int full_layers = 61, num_seeds = 4, layers_per_seed = 8;
  app.add_option("--cases", cases_path,
                 "EPLB cases file (JSON); default: ../shared/bench/planner_cases.json when "
                 "present, else none");
  app.add_option("--time-budget-ms", budget_ms, "planner search budget per layer")
      ->capture_default_str();
  app.add_option("--seeds", num_seeds, "generated seeds per shape")->capture_default_str();
  app.add_option("--layers-per-seed", layers_per_seed, "generated layers per seed")
      ->capture_default_str();
  app.add_option("--layers", full_layers, "layers of the full model")->capture_default_str();
  bool no_deadline = false;
  app.add_flag("--no-deadline", no_deadline,
               "no clock: the search stops on its work limits only (deterministic)");
  CLI11_PARSE(app, argc, argv);

  const bool explicit_cases = !cases_path.empty();
  if (!explicit_cases && std::filesystem::exists(default_cases)) cases_path = default_cases;
  std::vector<Case> cases;
  if (!cases_path.empty()) {
    std::ifstream in(cases_path);
    if (!in) {
      std::cerr << "planner_bench: cannot open " << cases_path << "\n";
      return 1;
    }
    json doc = json::parse(in, nullptr, false);
    if (doc.is_discarded() || !doc.contains("cases")) {
      std::cerr << "planner_bench: " << cases_path << " is not a cases file ({\"cases\": [...]})\n";
      return 1;
    }
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
  }

  pol::PlannerOptions options;
  options.time_budget_ms = budget_ms;
  options.clock = no_deadline ? nullptr : moe::SystemClock();
  int failures = 0;

  json out;
  out["time_budget_ms"] = no_deadline ? json(nullptr) : json(budget_ms);
  // The default path relative to the repository root (no machine paths in
  // the report).
  out["cases_file"] = cases_path.empty() ? json(nullptr)
                      : explicit_cases   ? json(cases_path)
                                         : json("../shared/bench/planner_cases.json");

  // Generated hierarchical cases.
  json generated = json::object();
  out["generated_layers"] = json::array();
  for (const pol::PlannerShape& shape : {pol::kShape128x16, pol::kShape256x8}) {
    const std::string key =
        std::to_string(shape.num_experts) + "x" + std::to_string(shape.num_groups);
    generated[key] = GeneratedShape(shape, num_seeds, layers_per_seed, options, &failures,
                                    &out["generated_layers"]);
  }

  json full_generated;
  if (full_layers > 0) {
    auto c = pol::GeneratePlannerCase(pol::kShape256x8, full_layers, 61);
    if (c.ok()) {
      full_generated = FullModel(c->shape, c->loads, options, "generated, seed 61", &failures);
    } else {
      ++failures;
    }
  }

  // The shared EPLB cases, when there.
  out["layers"] = json::array();
  std::vector<double> ratio_hier, ratio_global;
  double worst_ratio = 0.0, max_gap = 0.0, max_reference_error = 0.0;
  int layers_over_2pct = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    for (size_t li = 0; li < c.loads.size(); ++li) {
      auto t0 = std::chrono::steady_clock::now();
      auto eplb = pol::PlanEplb(c.shape, c.loads[li]);
      const double eplb_ms = MsSince(t0);
      t0 = std::chrono::steady_clock::now();
      const double c0 = ThreadCpuMs();
      pol::PlannerInput input;
      input.shape = c.shape;
      input.loads = c.loads[li];
      auto report = pol::PlanReplication(input, options);
      const double default_ms = MsSince(t0);
      const double default_cpu_ms = ThreadCpuMs() - c0;
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
                    {"cpu_ms", default_cpu_ms},
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

  json shared = nullptr;
  if (!cases.empty()) {
    json full_shared = nullptr;
    for (const Case& c : cases) {
      const pol::PlannerShape& s = c.shape;
      const pol::PlannerShape& w = pol::kShape256x8;
      if (s.num_experts != w.num_experts || s.num_replicas != w.num_replicas ||
          s.num_groups != w.num_groups || s.num_nodes != w.num_nodes || s.num_gpus != w.num_gpus ||
          full_layers <= 0) {
        continue;
      }
      std::vector<std::vector<double>> layers;
      for (int i = 0; i < full_layers; ++i) {
        std::mt19937_64 rng(1000 + i);
        std::normal_distribution<double> z(0.0, 1.0);
        std::vector<double> l = c.loads[i % c.loads.size()];
        for (double& x : l)
          x = std::max(1.0, std::round(x * std::exp(0.3 * z(rng))));
        layers.push_back(std::move(l));
      }
      full_shared = FullModel(s, layers, options, "cases file", &failures);
      break;
    }
    shared = {{"geomean_default_over_eplb_hierarchical", GeoMean(ratio_hier)},
              {"geomean_default_over_eplb_global", GeoMean(ratio_global)},
              {"worst_default_over_eplb", worst_ratio},
              {"max_gap_to_bound", max_gap},
              {"layers_over_2pct_gap", layers_over_2pct},
              {"eplb_max_reference_error", max_reference_error},
              {"full_model", full_shared}};
  }

  out["summary"] = {{"generated", generated},
                    {"full_model", full_generated},
                    {"eplb_cases", shared},
                    {"failures", failures}};
  std::cout << out.dump(1) << "\n";
  return failures == 0 ? 0 : 1;
}
