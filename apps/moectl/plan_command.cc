// `moectl plan`: reads the planner's JSON input, plans every layer, and
// writes the plans as JSON.

#include "plan_command.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/common/clock.h"
#include "moe/common/status.h"
#include "moe/policies/planner.h"

namespace moe::cli {
namespace {

using nlohmann::json;
namespace pol = moe::policies;

struct PlanArgs {
  std::string input;
  std::string mode = "auto";
  std::string algorithm = "default";
  double time_budget_ms = 10.0;
  std::string previous;
  int max_moves = -1;
  double move_weight = 0.0;
  std::string coactivation;
  double locality_tolerance = 0.002;
  uint64_t seed = 1;
};

Result<json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status::NotFound(path + ": cannot open the file; check the path");
  }
  json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::InvalidArgument(path + ": not valid JSON; check the file's syntax");
  }
  return doc;
}

Result<int> IntField(const json& doc, const std::string& path, const char* key) {
  if (!doc.is_object() || !doc.contains(key)) {
    return Status::InvalidArgument(path + ": missing field '" + key +
                                   "' (a positive integer; see docs/planner.md)");
  }
  const json& v = doc[key];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (1 << 24)) {
    return Status::InvalidArgument(path + ": field '" + key + "' is " + v.dump() +
                                   "; it must be a positive integer");
  }
  return static_cast<int>(v.get<int64_t>());
}

// A matrix of numbers: rows x cols (cols < 0: any, but equal for all rows).
Result<std::vector<std::vector<double>>> NumberRows(const json& v, const std::string& where,
                                                    int cols) {
  if (!v.is_array()) return Status::InvalidArgument(where + " must be an array of arrays");
  std::vector<std::vector<double>> rows;
  for (size_t r = 0; r < v.size(); ++r) {
    const json& row = v[r];
    const std::string at = where + "[" + std::to_string(r) + "]";
    if (!row.is_array()) return Status::InvalidArgument(at + " must be an array of numbers");
    if (cols >= 0 && static_cast<int>(row.size()) != cols) {
      return Status::InvalidArgument(at + " has " + std::to_string(row.size()) + " entries; want " +
                                     std::to_string(cols));
    }
    std::vector<double> values;
    values.reserve(row.size());
    for (size_t c = 0; c < row.size(); ++c) {
      if (!row[c].is_number()) {
        return Status::InvalidArgument(at + "[" + std::to_string(c) + "] is " + row[c].dump() +
                                       "; want a number");
      }
      values.push_back(row[c].get<double>());
    }
    rows.push_back(std::move(values));
  }
  return rows;
}

// The plan in force: {"layers": [{"phy2log": [...]}, ...]} (moectl plan's
// own output) or {"phy2log": [...]} for every layer.
Result<std::vector<std::vector<int>>> ReadPrevious(const std::string& path, size_t num_layers,
                                                   int num_replicas) {
  MOE_ASSIGN_OR_RETURN(json doc, ReadJson(path));
  std::vector<json> layers;
  if (doc.is_object() && doc.contains("layers") && doc["layers"].is_array()) {
    for (const json& l : doc["layers"])
      layers.push_back(l);
  } else if (doc.is_object() && doc.contains("phy2log")) {
    layers.assign(num_layers, doc);
  } else {
    return Status::InvalidArgument(path +
                                   ": want {\"layers\": [{\"phy2log\": [...]}, ...]} (the "
                                   "output of moectl plan) or {\"phy2log\": [...]}");
  }
  if (layers.size() != num_layers) {
    return Status::InvalidArgument(path + ": has " + std::to_string(layers.size()) +
                                   " layers; the input has " + std::to_string(num_layers));
  }
  std::vector<std::vector<int>> out;
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string at = path + ": layers[" + std::to_string(l) + "].phy2log";
    if (!layers[l].is_object() || !layers[l].contains("phy2log") ||
        !layers[l]["phy2log"].is_array()) {
      return Status::InvalidArgument(at + " is missing; want an array of expert ids");
    }
    const json& p = layers[l]["phy2log"];
    if (static_cast<int>(p.size()) != num_replicas) {
      return Status::InvalidArgument(at + " has " + std::to_string(p.size()) +
                                     " slots; want replicas = " + std::to_string(num_replicas));
    }
    std::vector<int> ids;
    for (const json& e : p) {
      if (!e.is_number_integer()) {
        return Status::InvalidArgument(at + " holds " + e.dump() + "; want integer expert ids");
      }
      ids.push_back(e.get<int>());
    }
    out.push_back(std::move(ids));
  }
  return out;
}

struct Coactivation {
  std::vector<double> counts;  // [E * E]
  double tokens = 0.0;
};

Result<Coactivation> ParseCoactivation(const json& obj, const std::string& where, int num_experts) {
  if (!obj.is_object() || !obj.contains("coactivation") || !obj.contains("tokens") ||
      !obj["tokens"].is_number() || !(obj["tokens"].get<double>() > 0)) {
    return Status::InvalidArgument(
        where + ": want {\"tokens\": N > 0, \"coactivation\": [[...experts x experts...]]}");
  }
  MOE_ASSIGN_OR_RETURN(auto rows,
                       NumberRows(obj["coactivation"], where + ".coactivation", num_experts));
  if (static_cast<int>(rows.size()) != num_experts) {
    return Status::InvalidArgument(where + ".coactivation has " + std::to_string(rows.size()) +
                                   " rows; want experts = " + std::to_string(num_experts));
  }
  Coactivation c;
  c.tokens = obj["tokens"].get<double>();
  for (const auto& row : rows)
    c.counts.insert(c.counts.end(), row.begin(), row.end());
  return c;
}

// One matrix for all layers, or {"layers": [{...}, ...]} with one per layer.
Result<std::vector<Coactivation>> ReadCoactivation(const std::string& path, size_t num_layers,
                                                   int num_experts) {
  MOE_ASSIGN_OR_RETURN(json doc, ReadJson(path));
  std::vector<Coactivation> out;
  if (doc.is_object() && doc.contains("layers")) {
    if (!doc["layers"].is_array() || doc["layers"].size() != num_layers) {
      return Status::InvalidArgument(path + ": 'layers' must hold one entry per input layer (" +
                                     std::to_string(num_layers) + ")");
    }
    for (size_t l = 0; l < num_layers; ++l) {
      MOE_ASSIGN_OR_RETURN(
          Coactivation c,
          ParseCoactivation(doc["layers"][l], path + ": layers[" + std::to_string(l) + "]",
                            num_experts));
      out.push_back(std::move(c));
    }
  } else {
    MOE_ASSIGN_OR_RETURN(Coactivation c, ParseCoactivation(doc, path, num_experts));
    out.assign(num_layers, c);
  }
  return out;
}

Status RunPlan(const PlanArgs& args) {
  MOE_ASSIGN_OR_RETURN(json doc, ReadJson(args.input));
  pol::PlannerShape shape;
  MOE_ASSIGN_OR_RETURN(shape.num_experts, IntField(doc, args.input, "experts"));
  MOE_ASSIGN_OR_RETURN(shape.num_replicas, IntField(doc, args.input, "replicas"));
  MOE_ASSIGN_OR_RETURN(shape.num_groups, IntField(doc, args.input, "groups"));
  MOE_ASSIGN_OR_RETURN(shape.num_nodes, IntField(doc, args.input, "nodes"));
  MOE_ASSIGN_OR_RETURN(shape.num_gpus, IntField(doc, args.input, "gpus"));
  MOE_ASSIGN_OR_RETURN(pol::PlanMode mode, pol::ParsePlanMode(args.mode));
  {
    Status s = pol::ValidateShape(shape, mode);
    if (!s.ok()) return s.WithContext(args.input);
  }
  if (!doc.contains("loads")) {
    return Status::InvalidArgument(args.input +
                                   ": missing field 'loads' (one array of experts numbers per "
                                   "layer)");
  }
  MOE_ASSIGN_OR_RETURN(auto loads,
                       NumberRows(doc["loads"], args.input + ": loads", shape.num_experts));
  if (loads.empty()) return Status::InvalidArgument(args.input + ": 'loads' has no layers");
  for (size_t l = 0; l < loads.size(); ++l) {
    double sum = 0.0;
    for (size_t e = 0; e < loads[l].size(); ++e) {
      const double v = loads[l][e];
      if (!std::isfinite(v) || v < 0) {
        return Status::InvalidArgument(args.input + ": loads[" + std::to_string(l) + "][" +
                                       std::to_string(e) + "] is " + std::to_string(v) +
                                       "; loads must be finite and >= 0");
      }
      sum += v;
    }
    if (!(sum > 0)) {
      return Status::InvalidArgument(args.input + ": loads[" + std::to_string(l) +
                                     "] sums to 0; every layer needs some load");
    }
  }
  std::vector<std::vector<int>> previous;
  if (!args.previous.empty()) {
    MOE_ASSIGN_OR_RETURN(previous, ReadPrevious(args.previous, loads.size(), shape.num_replicas));
  }
  std::vector<Coactivation> coactivation;
  if (!args.coactivation.empty()) {
    MOE_ASSIGN_OR_RETURN(coactivation,
                         ReadCoactivation(args.coactivation, loads.size(), shape.num_experts));
  }
  if (args.algorithm != "default" && args.algorithm != "eplb") {
    return Status::InvalidArgument("--algorithm '" + args.algorithm + "': use default or eplb");
  }

  pol::PlannerOptions options;
  options.mode = mode;
  options.time_budget_ms = args.time_budget_ms;
  options.clock = SystemClock();
  options.seed = args.seed;
  options.max_moves = args.max_moves;
  options.move_weight = args.move_weight;
  options.locality_tolerance = args.locality_tolerance;

  json out;
  out["mode"] = std::string(pol::PlanModeName(pol::ResolveMode(shape, mode)));
  out["algorithm"] = args.algorithm;
  out["layers"] = json::array();
  int total_moved = 0;
  for (size_t l = 0; l < loads.size(); ++l) {
    const std::string where = "layer " + std::to_string(l);
    const auto start = std::chrono::steady_clock::now();
    json layer;
    if (args.algorithm == "eplb") {
      auto plan = pol::PlanEplb(shape, loads[l], mode);
      if (!plan.ok()) return plan.status().WithContext(args.input + ": " + where);
      auto bound = pol::LowerBound(shape, loads[l], mode);
      if (!bound.ok()) return bound.status().WithContext(args.input + ": " + where);
      layer["phy2log"] = plan->phy2log;
      layer["replica_count"] = plan->replica_count;
      layer["max_over_mean"] = plan->max_over_mean;
      layer["eplb_max_over_mean"] = plan->max_over_mean;
      layer["lower_bound"] = *bound;
      if (!previous.empty()) {
        const int moved = pol::CountMovedReplicas(shape, previous[l], plan->phy2log);
        layer["moved"] = moved;
        total_moved += moved;
      }
    } else {
      pol::PlannerInput input;
      input.shape = shape;
      input.loads = loads[l];
      if (!previous.empty()) input.previous_phy2log = previous[l];
      if (!coactivation.empty()) {
        input.coactivation = coactivation[l].counts;
        input.num_tokens = coactivation[l].tokens;
      }
      auto report = pol::PlanReplication(input, options);
      if (!report.ok()) {
        return report.status().WithContext(
            args.input + ": " + where +
            (args.previous.empty() ? "" : " (with --previous " + args.previous + ")"));
      }
      layer["phy2log"] = report->plan.phy2log;
      layer["replica_count"] = report->plan.replica_count;
      layer["max_over_mean"] = report->plan.max_over_mean;
      layer["eplb_max_over_mean"] = report->eplb_max_over_mean;
      layer["lower_bound"] = report->lower_bound;
      layer["moved"] = report->num_moved;
      total_moved += report->num_moved;
      if (report->gpu_span >= 0) layer["gpu_span"] = report->gpu_span;
      if (report->used_eplb) layer["used_eplb"] = true;
      if (report->hit_time_budget) layer["hit_time_budget"] = true;
    }
    layer["time_ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    out["layers"].push_back(std::move(layer));
  }
  if (!previous.empty()) out["moved"] = total_moved;
  std::cout << out.dump() << "\n";
  return Status::Ok();
}

}  // namespace

void AddPlanCommand(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "Plan expert replication and placement for every layer of a loads file (JSON in, JSON "
      "out; see docs/planner.md)");
  cmd->add_option("--input", args->input,
                  "JSON {experts, replicas, groups, nodes, gpus, loads: [[...], ...]}")
      ->required();
  cmd->add_option("--mode", args->mode,
                  "auto (hierarchical when groups % nodes == 0), hierarchical or global")
      ->capture_default_str();
  cmd->add_option("--algorithm", args->algorithm,
                  "default (the searching planner) or eplb (the DeepSeek EPLB baseline)")
      ->capture_default_str();
  cmd->add_option("--time-budget-ms", args->time_budget_ms, "search budget per layer (ms)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--previous", args->previous,
                  "the plan in force (moectl plan output); plans then report replicas moved and "
                  "prefer to keep replicas in place");
  cmd->add_option("--max-moves", args->max_moves,
                  "with --previous: at most this many replicas moved per layer (-1: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(-1, 1 << 24));
  cmd->add_option("--move-weight", args->move_weight,
                  "with --previous: objective max_over_mean + weight * moved / replicas")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--coactivation", args->coactivation,
                  "JSON {tokens, coactivation: [[experts x experts]]} (or {layers: [...]}): "
                  "prefer co-locating experts that serve the same tokens");
  cmd->add_option("--locality-tolerance", args->locality_tolerance,
                  "with --coactivation: balance a plan may give up for locality (relative)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", args->seed, "seed of the search's perturbations")
      ->capture_default_str();
  cmd->callback([args]() {
    const Status status = RunPlan(*args);
    if (!status.ok()) {
      std::cerr << "moectl plan: " << status.message() << "\n";
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace moe::cli
