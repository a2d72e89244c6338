// engine_bench: one MoE layer on the CPU backend, time breakdown and the
// grouped expert GEMM rate beside plain OpenBLAS SGEMM on the same shapes.
// Prints one JSON document on stdout; progress on stderr.
//
//   engine_bench [--tokens 512] [--steps 20] [--warmup 3] [--threads 1]

#include <cblas.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/workload.h"

namespace {

using moe::engine::LayerStats;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Times the two GEMMs of a SwiGLU expert per group of `rows`, with plain
// SGEMM and nothing else (no gather, no activation, no scatter).
double PlainSgemmSeconds(const std::vector<uint32_t>& rows, int hidden, int ffn, int repeats) {
  const uint32_t max_rows = *std::max_element(rows.begin(), rows.end());
  std::vector<float> x(static_cast<size_t>(std::max<uint32_t>(1, max_rows)) * hidden, 0.01f);
  std::vector<float> act(static_cast<size_t>(std::max<uint32_t>(1, max_rows)) * 2 * ffn, 0.01f);
  std::vector<float> y(static_cast<size_t>(std::max<uint32_t>(1, max_rows)) * hidden);
  // Distinct weights per expert, as in the engine, so caches behave alike.
  std::vector<std::vector<float>> gate_up(rows.size()), down(rows.size());
  for (size_t e = 0; e < rows.size(); ++e) {
    gate_up[e].assign(static_cast<size_t>(hidden) * 2 * ffn, 0.001f);
    down[e].assign(static_cast<size_t>(ffn) * hidden, 0.001f);
  }
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    for (size_t e = 0; e < rows.size(); ++e) {
      const int m = static_cast<int>(rows[e]);
      if (m == 0) continue;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, 2 * ffn, hidden, 1.0f, x.data(),
                  hidden, gate_up[e].data(), 2 * ffn, 0.0f, act.data(), 2 * ffn);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hidden, ffn, 1.0f, act.data(),
                  2 * ffn, down[e].data(), hidden, 0.0f, y.data(), hidden);
    }
    best = std::min(best, Seconds(start));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moe::engine;
  int tokens = 512;
  int steps = 20;
  int warmup = 3;
  int threads = 1;
  CLI::App cli{"engine_bench: one MoE layer on the CPU backend"};
  cli.add_option("--tokens", tokens, "tokens per step")->capture_default_str();
  cli.add_option("--steps", steps, "timed steps")->capture_default_str();
  cli.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  cli.add_option("--threads", threads, "OpenBLAS threads")->capture_default_str();
  CLI11_PARSE(cli, argc, argv);

  Options o;
  o.model.num_layers = 1;
  o.model.hidden = 1024;
  o.model.num_experts = 64;
  o.model.expert_ffn = 512;
  o.model.num_shared_experts = 2;
  o.model.shared_ffn = 512;
  o.knobs.top_k = 6;
  o.knobs.capacity_factor = 1.25;
  o.quality_probe_tokens = 0;
  BackendOptions bo;
  bo.num_threads = threads;
  auto backend = CreateBackend("cpu", bo);
  if (!backend.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", backend.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "engine_bench: generating weights (%u experts)...\n", o.model.num_experts);
  auto engine = Engine::Create(o, std::move(backend).value());
  if (!engine.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  ScenarioOptions scenario;
  scenario.num_domains = 8;
  scenario.noise_scale = 0.8;
  scenario.tokens_per_step = static_cast<uint32_t>(tokens);
  auto workload = Workload::Create(scenario, o.model.hidden);
  if (!workload.ok()) return 1;

  LayerStats sum;
  std::vector<uint32_t> last_rows;
  double step_us = 0;
  double best_gflops = 0;  // best step's expert GEMM rate
  const double flops_per_row = 6.0 * o.model.hidden * o.model.expert_ffn;
  for (int i = 0; i < warmup + steps; ++i) {
    WorkloadStep in = (*workload)->Generate(i);
    auto stats = (*engine)->Step({in.hidden.data(), in.num_tokens, {}});
    if (!stats.ok()) {
      std::fprintf(stderr, "engine_bench: %s\n", stats.status().ToString().c_str());
      return 1;
    }
    if (i < warmup) continue;
    const LayerStats& l = stats->layers[0];
    sum.router_us += l.router_us;
    sum.dispatch_us += l.dispatch_us;
    sum.expert_us += l.expert_us;
    sum.combine_us += l.combine_us;
    sum.shared_us += l.shared_us;
    sum.dropped += l.dropped;
    sum.num_token_slots += l.num_token_slots;
    step_us += stats->step_us;
    last_rows = l.slot_tokens;
    uint64_t rows = 0;
    for (uint32_t r : l.slot_tokens)
      rows += r;
    best_gflops = std::max(best_gflops, rows * flops_per_row / (l.expert_us * 1e-6) / 1e9);
    std::fprintf(stderr, "step %d: %.2f ms\n", i - warmup, stats->step_us / 1000.0);
  }
  const double n = steps;
  const double router = sum.router_us / n, dispatch = sum.dispatch_us / n;
  const double expert = sum.expert_us / n, combine = sum.combine_us / n;
  const double shared = sum.shared_us / n;
  const double layer = router + dispatch + expert + combine;
  const double overhead = router + dispatch + (combine - shared);
  uint64_t routed_rows = 0;
  for (uint32_t r : last_rows)
    routed_rows += r;

  std::fprintf(stderr, "engine_bench: plain SGEMM on the same shapes...\n");
  const double plain_s = PlainSgemmSeconds(last_rows, o.model.hidden, o.model.expert_ffn, 5);
  // Mean over steps, and the best step (plain SGEMM is a best of 5 too).
  const double engine_gflops = routed_rows * flops_per_row / (expert * 1e-6) / 1e9;
  const double plain_gflops = routed_rows * flops_per_row / plain_s / 1e9;
  uint32_t one_big_rows = static_cast<uint32_t>(routed_rows / last_rows.size());
  const double dense_s = PlainSgemmSeconds(std::vector<uint32_t>(last_rows.size(), one_big_rows),
                                           o.model.hidden, o.model.expert_ffn, 5);
  const double dense_gflops = one_big_rows * last_rows.size() * flops_per_row / dense_s / 1e9;

  nlohmann::json out;
  out["config"] = {{"hidden", o.model.hidden},
                   {"num_experts", o.model.num_experts},
                   {"expert_ffn", o.model.expert_ffn},
                   {"num_shared_experts", o.model.num_shared_experts},
                   {"shared_ffn", o.model.shared_ffn},
                   {"top_k", o.knobs.top_k},
                   {"capacity_factor", o.knobs.capacity_factor},
                   {"tokens", tokens},
                   {"steps", steps},
                   {"blas_threads", threads},
                   {"blas", openblas_get_config()}};
  out["time_us"] = {{"router", router},   {"dispatch", dispatch},     {"experts", expert},
                    {"combine", combine}, {"shared_experts", shared}, {"layer", layer},
                    {"step", step_us / n}};
  out["routing_permutation_combine_share"] = overhead / layer;
  out["drop_rate"] =
      sum.num_token_slots ? static_cast<double>(sum.dropped) / sum.num_token_slots : 0.0;
  out["expert_gemm"] = {{"routed_rows", routed_rows},
                        {"engine_gflops_last_step_rows_mean_time", engine_gflops},
                        {"engine_gflops_best_step", best_gflops},
                        {"plain_sgemm_gflops_same_shapes", plain_gflops},
                        {"plain_sgemm_gflops_even_shapes", dense_gflops},
                        {"engine_best_vs_plain_same_shapes", best_gflops / plain_gflops}};
  out["goals"] = {{"overhead_share_max", 0.15},
                  {"overhead_share_met", overhead / layer <= 0.15},
                  {"gemm_rate_min", 0.85},
                  {"gemm_rate_met", best_gflops / plain_gflops >= 0.85}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
