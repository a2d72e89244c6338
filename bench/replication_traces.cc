#include "replication_traces.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

namespace moe::bench {
namespace {

using nlohmann::json;

// SplitMix64 (Steele, Lea, Flood 2014): a fixed stream on every platform,
// unlike the standard distributions.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// Appends the steps of data_dir/file to `trace`.
Status ReadOneFile(const std::string& data_dir, const std::string& file, uint32_t default_top_k,
                   DemandTrace* out) {
  DemandTrace& trace = *out;
  try {
    const std::string path = data_dir + "/" + file;
    std::ifstream in(path);
    if (!in) return Status::NotFound(fmt::format("cannot open {}", path));
    json doc = json::parse(in, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("steps") ||
        !doc.contains("experts") || !doc.contains("tokens_per_step")) {
      return Status::InvalidArgument(
          fmt::format("{}: not a steps file (experts, tokens_per_step, steps)", path));
    }
    const uint32_t num_experts = doc["experts"].get<uint32_t>();
    const uint32_t top_k = doc.value("top_k", default_top_k);
    if (trace.num_experts == 0) {
      trace.num_experts = num_experts;
      trace.top_k = top_k;
    } else if (trace.num_experts != num_experts || trace.top_k != top_k) {
      return Status::InvalidArgument(fmt::format("{}: {} experts top-{}, earlier files {} top-{}",
                                                 path, num_experts, top_k, trace.num_experts,
                                                 trace.top_k));
    }
    auto steps = doc["steps"].get<std::vector<std::vector<std::vector<double>>>>();
    auto tokens = doc["tokens_per_step"].get<std::vector<double>>();
    if (tokens.size() != steps.size()) {
      return Status::InvalidArgument(
          fmt::format("{}: {} steps but {} tokens_per_step", path, steps.size(), tokens.size()));
    }
    for (size_t t = 0; t < steps.size(); ++t) {
      if (!trace.demand.empty() && steps[t].size() != trace.num_layers()) {
        return Status::InvalidArgument(fmt::format("{}: step {} has {} layers, earlier {}", path, t,
                                                   steps[t].size(), trace.num_layers()));
      }
      for (const auto& layer : steps[t]) {
        if (layer.size() != num_experts) {
          return Status::InvalidArgument(
              fmt::format("{}: step {} has a layer of {} experts", path, t, layer.size()));
        }
      }
      trace.demand.push_back(std::move(steps[t]));
      trace.tokens.push_back(tokens[t]);
    }
    trace.source += (trace.source.empty() ? "" : " + ") + file;
    return Status::Ok();
  } catch (const json::exception& e) {
    return Status::InvalidArgument(fmt::format("{}/{}: {}", data_dir, file, e.what()));
  }
}

}  // namespace

Result<DemandTrace> ReadStepsTrace(const std::string& name, const std::string& data_dir,
                                   const std::vector<std::string>& files, uint32_t default_top_k) {
  DemandTrace trace;
  trace.name = name;
  for (const std::string& file : files) {
    Status s = ReadOneFile(data_dir, file, default_top_k, &trace);
    if (!s.ok()) return s;
  }
  if (trace.demand.empty() || trace.num_layers() == 0) {
    return Status::InvalidArgument(fmt::format("{}: no steps", name));
  }
  return trace;
}

DemandTrace SyntheticShiftTrace(const SyntheticOptions& o) {
  DemandTrace trace;
  trace.name = "synthetic_shift";
  trace.source = "generated";
  trace.num_experts = o.num_experts;
  trace.top_k = o.top_k;
  SplitMix64 rng(o.seed);
  const uint32_t num_experts = o.num_experts;
  std::vector<std::vector<uint32_t>> ranking(o.num_layers);
  std::vector<double> weight(num_experts);
  std::vector<double> cumulative(num_experts);
  trace.demand.assign(o.num_steps, std::vector<std::vector<double>>(
                                       o.num_layers, std::vector<double>(num_experts, 0.0)));
  trace.tokens.assign(o.num_steps, o.tokens_per_step);
  for (uint32_t t = 0; t < o.num_steps; ++t) {
    const uint32_t in_phase = t % o.phase_steps;
    for (uint32_t l = 0; l < o.num_layers; ++l) {
      std::vector<uint32_t>& rank = ranking[l];
      if (in_phase == 0) {
        rank.resize(num_experts);
        std::iota(rank.begin(), rank.end(), 0u);
        for (uint32_t i = num_experts - 1; i > 0; --i)
          std::swap(rank[i], rank[rng.Next() % (i + 1)]);
      }
      double zipf_sum = 0;
      for (uint32_t r = 0; r < num_experts; ++r)
        zipf_sum += 1.0 / (r + 1.0);
      for (uint32_t r = 0; r < num_experts; ++r)
        weight[rank[r]] = 0.3 / num_experts + 0.7 / ((r + 1.0) * zipf_sum);
      // The rising expert: the phase's least popular one.
      weight[rank[num_experts - 1]] += 4.0 / num_experts * in_phase / o.phase_steps;
      double sum = 0;
      for (uint32_t e = 0; e < num_experts; ++e) {
        sum += weight[e];
        cumulative[e] = sum;
      }
      std::vector<double>& row = trace.demand[t][l];
      const uint32_t num_slots = o.tokens_per_step * o.top_k;
      for (uint32_t i = 0; i < num_slots; ++i) {
        const double u = rng.Uniform() * sum;
        const size_t e =
            std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin();
        row[std::min<size_t>(e, num_experts - 1)] += 1;
      }
    }
  }
  return trace;
}

}  // namespace moe::bench
