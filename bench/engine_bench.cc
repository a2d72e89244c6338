// engine_bench: one MoE layer on the CPU backend against baselines that are
// not the engine itself. Prints one JSON document on stdout; progress on stderr.
//
//   engine_bench [--tokens 512] [--steps 15] [--warmup 2] [--threads 1]
//   engine_bench --serve DIR [...]   (driven by bench/moe_peer.py, below)
//
// The model: DeepSeek-V2-Lite's MoE layer at half width (hidden 1024 instead
// of 2048, expert FFN 704 instead of 1408; 64 routed experts, K 6, 2 shared
// experts, softmax scores, no gate normalisation), dropless (capacity factor
// 0, as Hugging Face's MoE blocks are). Every round runs, in an order that
// rotates so none always finds a warmer machine:
//   - the engine's layer step (its own phase times);
//   - the dense limit: all of the step's routed rows as one matrix through one
//     SwiGLU expert (the same FLOPs with one weight matrix, so no per-expert
//     cost), by OpenBLAS (two SGEMMs, activation excluded) and by the engine's
//     packed kernel; the faster of the two is the limit;
//   - the per-expert OpenBLAS loop the engine used before (for reference);
//   - the core's peak: a 2048^3 OpenBLAS SGEMM.
// The dense limit runs right before the engine's step on odd rounds and right
// after it on even ones. Figures are medians over rounds of each round's own
// ratios. OpenBLAS picks its kernels by OPENBLAS_CORETYPE or, unset, by the
// CPU (scripts/bench unsets it so that every side gets its best kernels).
//
// --serve DIR: writes the layer's weights, one step's input, the engine's
// output and its expert choices to DIR/peer.bin with a JSON header
// DIR/peer.json, prints "ready" and then answers each "step" line on stdin
// with one JSON line (the wall time of one engine step on that input) until
// "quit". bench/moe_peer.py runs a PyTorch peer on the same data in between.

#include <cblas.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/workload.h"

namespace {

using namespace moe::engine;
using moe::Result;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<float> Filled(size_t n, float scale) {
  std::vector<float> v(n);
  NormalStream rng(MixSeed(7, n));
  for (float& x : v)
    x = static_cast<float>(rng.Next()) * scale;
  return v;
}

// OpenBLAS SwiGLU experts on given row counts, distinct weights per expert
// (so caches behave as in the engine); `activation` adds the SwiGLU.
class BlasExperts {
 public:
  BlasExperts(int num_experts, int hidden, int ffn, int max_rows)
      : hidden_(hidden),
        ffn_(ffn),
        x_(Filled(static_cast<size_t>(max_rows) * hidden, 1.0f)),
        act_(static_cast<size_t>(max_rows) * 2 * ffn),
        y_(static_cast<size_t>(max_rows) * hidden) {
    for (int e = 0; e < num_experts; ++e) {
      gate_up_.push_back(Filled(static_cast<size_t>(hidden) * 2 * ffn, 0.03f));
      down_.push_back(Filled(static_cast<size_t>(ffn) * hidden, 0.03f));
    }
  }

  double Run(const std::vector<int>& rows, bool activation) {
    const int h = hidden_, f = ffn_;
    auto start = std::chrono::steady_clock::now();
    for (size_t e = 0; e < rows.size(); ++e) {
      const int m = rows[e];
      if (m == 0) continue;
      const size_t w = e % gate_up_.size();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, 2 * f, h, 1.0f, x_.data(), h,
                  gate_up_[w].data(), 2 * f, 0.0f, act_.data(), 2 * f);
      if (activation) {
        for (int r = 0; r < m; ++r) {
          float* a = act_.data() + static_cast<size_t>(r) * 2 * f;
          for (int j = 0; j < f; ++j)
            a[j] = a[j] / (1.0f + std::exp(-a[j])) * a[f + j];
        }
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, h, f, 1.0f, act_.data(), 2 * f,
                  down_[w].data(), h, 0.0f, y_.data(), h);
    }
    return Seconds(start);
  }

 private:
  int hidden_, ffn_;
  std::vector<float> x_, act_, y_;
  std::vector<std::vector<float>> gate_up_, down_;
};

// The engine's own expert FFN kernel on one expert (the dense shape), through
// the backend interface.
class BackendDense {
 public:
  static Result<BackendDense> Create(Backend* backend, int hidden, int ffn, int max_rows) {
    BackendDense d;
    d.backend_ = backend;
    d.hidden_ = hidden;
    d.ffn_ = ffn;
    const std::vector<float> gate_up = Filled(static_cast<size_t>(hidden) * 2 * ffn, 0.03f);
    const std::vector<float> down = Filled(static_cast<size_t>(ffn) * hidden, 0.03f);
    const std::vector<float> x = Filled(static_cast<size_t>(max_rows) * hidden, 1.0f);
    auto upload = [&](const std::vector<float>& v) -> Result<std::unique_ptr<BackendBuffer>> {
      MOE_ASSIGN_OR_RETURN(auto b, backend->Allocate(v.size() * sizeof(float)));
      MOE_RETURN_IF_ERROR(backend->Upload(v.data(), v.size() * sizeof(float), b->data()));
      return b;
    };
    MOE_ASSIGN_OR_RETURN(d.gate_up_, upload(gate_up));
    MOE_ASSIGN_OR_RETURN(d.down_, upload(down));
    MOE_ASSIGN_OR_RETURN(d.x_, upload(x));
    MOE_ASSIGN_OR_RETURN(d.y_, backend->Allocate(x.size() * sizeof(float)));
    MOE_ASSIGN_OR_RETURN(
        d.ws_, backend->Allocate(ExpertWorkspaceFloats(max_rows, ffn, hidden) * sizeof(float)));
    const size_t packed = backend->PackedExpertFloats(hidden, ffn);
    if (packed > 0) {
      MOE_ASSIGN_OR_RETURN(d.packed_, backend->Allocate(packed * sizeof(float)));
      MOE_RETURN_IF_ERROR(backend->PackExpert(d.Weights(), hidden, d.packed_->floats()));
    }
    return d;
  }

  ExpertWeights Weights() const {
    return {gate_up_->floats(), down_->floats(), ffn_, packed_ ? packed_->floats() : nullptr};
  }

  Result<double> Run(int rows) {
    ExpertGroups g;
    g.input = x_->floats();
    g.output = y_->floats();
    g.hidden = hidden_;
    g.experts = {Weights()};
    g.offsets = {0, rows};
    g.workspace = ws_->floats();
    auto start = std::chrono::steady_clock::now();
    MOE_RETURN_IF_ERROR(backend_->ExpertFfn(g));
    MOE_RETURN_IF_ERROR(backend_->Synchronize());
    return Seconds(start);
  }

 private:
  Backend* backend_ = nullptr;
  int hidden_ = 0, ffn_ = 0;
  std::unique_ptr<BackendBuffer> gate_up_, down_, x_, y_, ws_, packed_;
};

Options BenchOptions() {
  Options o;
  o.model.num_layers = 1;
  o.model.hidden = 1024;
  o.model.num_experts = 64;
  o.model.expert_ffn = 704;
  o.model.num_shared_experts = 2;
  o.model.shared_ffn = 704;
  o.knobs.top_k = 6;
  o.knobs.capacity_factor = 0;
  o.quality_probe_tokens = 0;
  o.routing = RoutingMode::kHost;
  return o;
}

void Write(std::ofstream& f, const void* data, size_t bytes, size_t* offset) {
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  *offset += bytes;
}

// --serve: the exchange with bench/moe_peer.py (see the top of the file).
int Serve(const std::string& dir, Engine* engine, const Options& o, const WorkloadStep& in,
          int threads, const std::string& command) {
  std::vector<float> out;
  StepInput step{in.hidden.data(), in.num_tokens, {}};
  step.record_selection = true;
  auto stats = engine->Step(step, &out);
  if (!stats.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", stats.status().ToString().c_str());
    return 1;
  }
  const ExpertSelection& sel = stats->layers[0].selection;
  const int k = static_cast<int>(o.knobs.top_k);
  std::vector<int32_t> chosen(static_cast<size_t>(in.num_tokens) * k, -1);
  for (int t = 0; t < in.num_tokens; ++t) {
    for (uint32_t i = sel.offsets[t], j = 0; i < sel.offsets[t + 1] && j < static_cast<uint32_t>(k);
         ++i, ++j)
      chosen[static_cast<size_t>(t) * k + j] = sel.experts[i];
  }
  const HostLayerWeights w = GenerateLayerWeights(o.model, 0);
  std::ofstream bin(dir + "/peer.bin", std::ios::binary | std::ios::trunc);
  if (!bin) {
    std::fprintf(stderr, "engine_bench: cannot write %s/peer.bin\n", dir.c_str());
    return 1;
  }
  nlohmann::json tensors = nlohmann::json::object();
  size_t offset = 0;
  auto put = [&](const std::string& name, const void* data, size_t count, const char* dtype,
                 std::vector<size_t> shape) {
    tensors[name] = {{"offset", offset}, {"dtype", dtype}, {"shape", shape}};
    Write(bin, data, count * 4, &offset);
  };
  const size_t h = o.model.hidden, e = o.model.num_experts, f = o.model.expert_ffn;
  const size_t s = static_cast<size_t>(o.model.num_shared_experts) * o.model.shared_ffn;
  const size_t t = in.num_tokens;
  put("norm", w.norm.data(), h, "float32", {h});
  put("gate", w.gate.data(), h * e, "float32", {h, e});
  for (size_t x = 0; x < e; ++x) {
    put("gate_up." + std::to_string(x), w.gate_up[x].data(), h * 2 * f, "float32", {h, 2 * f});
    put("down." + std::to_string(x), w.down[x].data(), f * h, "float32", {f, h});
  }
  put("shared_gate_up", w.shared_gate_up.data(), h * 2 * s, "float32", {h, 2 * s});
  put("shared_down", w.shared_down.data(), s * h, "float32", {s, h});
  put("input", in.hidden.data(), t * h, "float32", {t, h});
  put("output", out.data(), t * h, "float32", {t, h});
  put("chosen", chosen.data(), t * k, "int32", {t, static_cast<size_t>(k)});
  bin.close();
  nlohmann::json header = {{"command", command},
                           {"hidden", h},
                           {"num_experts", e},
                           {"expert_ffn", f},
                           {"shared_ffn_total", s},
                           {"top_k", k},
                           {"tokens", t},
                           {"rms_eps", o.model.rms_eps},
                           {"score_function", "softmax"},
                           {"normalize_gates", o.model.normalize_gates},
                           {"routed_scaling", o.model.routed_scaling},
                           {"threads", threads},
                           {"backend", engine->backend().description()},
                           {"tensors", tensors}};
  std::ofstream(dir + "/peer.json") << header.dump(2) << "\n";
  std::printf("ready\n");
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "quit") break;
    if (line != "step") continue;
    auto start = std::chrono::steady_clock::now();
    auto again = engine->Step({in.hidden.data(), in.num_tokens, {}});
    const double seconds = Seconds(start);
    if (!again.ok()) {
      std::fprintf(stderr, "engine_bench: %s\n", again.status().ToString().c_str());
      return 1;
    }
    const LayerStats& l = again->layers[0];
    nlohmann::json reply = {{"seconds", seconds},           {"router_us", l.router_us},
                            {"dispatch_us", l.dispatch_us}, {"expert_us", l.expert_us},
                            {"shared_us", l.shared_us},     {"combine_us", l.combine_us}};
    std::printf("%s\n", reply.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int tokens = 512;
  int steps = 15;
  int warmup = 2;
  int threads = 1;
  std::string serve_dir;
  CLI::App cli{"engine_bench: one MoE layer on the CPU backend against real baselines"};
  cli.add_option("--tokens", tokens, "tokens per step")->capture_default_str();
  cli.add_option("--steps", steps, "timed rounds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cli.add_option("--warmup", warmup, "untimed rounds first")->capture_default_str();
  cli.add_option("--threads", threads, "BLAS threads (every side)")->capture_default_str();
  cli.add_option("--serve", serve_dir, "export to DIR and serve steps to bench/moe_peer.py");
  CLI11_PARSE(cli, argc, argv);
  std::string command = "engine_bench";
  for (int i = 1; i < argc; ++i)
    command += std::string(" ") + argv[i];

  Options o = BenchOptions();
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
  if (!serve_dir.empty()) {
    return Serve(serve_dir, engine->get(), o, (*workload)->Generate(0), threads, command);
  }

  const int hidden = static_cast<int>(o.model.hidden);
  const int ffn = static_cast<int>(o.model.expert_ffn);
  const int max_rows = tokens * static_cast<int>(o.knobs.top_k);
  const double flops_per_row = 6.0 * hidden * ffn;
  auto dense_backend = CreateBackend("cpu", bo);
  if (!dense_backend.ok()) return 1;
  auto dense = BackendDense::Create(dense_backend->get(), hidden, ffn, max_rows);
  if (!dense.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", dense.status().ToString().c_str());
    return 1;
  }
  BlasExperts blas(static_cast<int>(o.model.num_experts), hidden, ffn, max_rows);
  constexpr int kSquare = 2048;
  const std::vector<float> sq_a = Filled(static_cast<size_t>(kSquare) * kSquare, 1.0f);
  std::vector<float> sq_c(sq_a.size());
  // The dense limit's OpenBLAS side: one expert's weights, all routed rows.
  const std::vector<float> d_x = Filled(static_cast<size_t>(max_rows) * hidden, 1.0f);
  const std::vector<float> d_w1 = Filled(static_cast<size_t>(hidden) * 2 * ffn, 0.03f);
  const std::vector<float> d_w2 = Filled(static_cast<size_t>(ffn) * hidden, 0.03f);
  std::vector<float> d_act(static_cast<size_t>(max_rows) * 2 * ffn), d_y(d_x.size());

  std::vector<double> engine_rate, dense_rate, dense_blas_rate, dense_kernel_rate, loop_rate;
  std::vector<double> efficiency, vs_loop, peak_rate, share_routed, share_all, layer_tps;
  std::vector<double> router_us, dispatch_us, expert_us, combine_us, shared_us, step_us;
  uint64_t rows_sum = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    const WorkloadStep in = (*workload)->Generate(i);
    LayerStats l;
    double step_s = 0, dense_blas_s = 0, dense_kernel_s = 0, loop_s = 0, square_s = 0;
    std::vector<int> rows;
    // Dropless: every step routes T * K rows, so the dense limit runs next to
    // the engine's step, before it on odd rounds and after it on even ones;
    // the per-expert loop (needs the step's rows) and the square SGEMM follow.
    const int routed = in.num_tokens * static_cast<int>(o.knobs.top_k);
    auto run_dense = [&]() -> bool {
      auto start = std::chrono::steady_clock::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, routed, 2 * ffn, hidden, 1.0f,
                  d_x.data(), hidden, d_w1.data(), 2 * ffn, 0.0f, d_act.data(), 2 * ffn);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, routed, hidden, ffn, 1.0f,
                  d_act.data(), 2 * ffn, d_w2.data(), hidden, 0.0f, d_y.data(), hidden);
      dense_blas_s = Seconds(start);
      auto s = dense->Run(routed);
      if (!s.ok()) return false;
      dense_kernel_s = *s;
      return true;
    };
    if (i % 2 == 1 && !run_dense()) return 1;
    auto start = std::chrono::steady_clock::now();
    auto stats = (*engine)->Step({in.hidden.data(), in.num_tokens, {}});
    step_s = Seconds(start);
    if (!stats.ok()) {
      std::fprintf(stderr, "engine_bench: %s\n", stats.status().ToString().c_str());
      return 1;
    }
    if (i % 2 == 0 && !run_dense()) return 1;
    l = stats->layers[0];
    int served = 0;
    for (uint32_t r : l.slot_tokens) {
      rows.push_back(static_cast<int>(r));
      served += static_cast<int>(r);
    }
    if (served != routed) {
      std::fprintf(stderr, "engine_bench: %d rows routed, %d expected (dropless)\n", served,
                   routed);
      return 1;
    }
    loop_s = blas.Run(rows, true);
    start = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kSquare, kSquare, kSquare, 1.0f,
                sq_a.data(), kSquare, sq_a.data(), kSquare, 0.0f, sq_c.data(), kSquare);
    square_s = Seconds(start);
    if (i < warmup) continue;
    const double gflop = routed * flops_per_row / 1e9;
    const double e_rate = gflop / (l.expert_us * 1e-6);
    const double limit = std::max(gflop / dense_blas_s, gflop / dense_kernel_s);
    engine_rate.push_back(e_rate);
    dense_blas_rate.push_back(gflop / dense_blas_s);
    dense_kernel_rate.push_back(gflop / dense_kernel_s);
    dense_rate.push_back(limit);
    loop_rate.push_back(gflop / loop_s);
    efficiency.push_back(e_rate / limit);
    vs_loop.push_back(loop_s / (l.expert_us * 1e-6));
    peak_rate.push_back(2.0 * kSquare * kSquare * kSquare / 1e9 / square_s);
    const double overhead = l.router_us + l.dispatch_us + (l.combine_us - l.shared_us);
    share_routed.push_back(overhead / (overhead + l.expert_us));
    share_all.push_back(overhead / (overhead + l.expert_us + l.shared_us));
    layer_tps.push_back(in.num_tokens / step_s);
    router_us.push_back(l.router_us);
    dispatch_us.push_back(l.dispatch_us);
    expert_us.push_back(l.expert_us);
    combine_us.push_back(l.combine_us - l.shared_us);
    shared_us.push_back(l.shared_us);
    step_us.push_back(step_s * 1e6);
    rows_sum += routed;
    std::fprintf(stderr,
                 "round %d: experts %.1f GFLOP/s, dense limit %.1f (blas %.1f, kernel %.1f), "
                 "efficiency %.3f, per-expert blas loop %.1f, square %.1f\n",
                 i - warmup, e_rate, limit, dense_blas_rate.back(), dense_kernel_rate.back(),
                 efficiency.back(), loop_rate.back(), peak_rate.back());
  }
  const double eff = Median(efficiency);
  const double share = Median(share_routed);
  nlohmann::json out;
  out["command"] = command;
  out["model"] = {{"shape", "DeepSeek-V2-Lite MoE layer at half width"},
                  {"hidden", o.model.hidden},
                  {"num_experts", o.model.num_experts},
                  {"expert_ffn", o.model.expert_ffn},
                  {"num_shared_experts", o.model.num_shared_experts},
                  {"shared_ffn", o.model.shared_ffn},
                  {"top_k", o.knobs.top_k},
                  {"capacity_factor", o.knobs.capacity_factor},
                  {"tokens", tokens},
                  {"rounds", steps},
                  {"threads", threads},
                  {"backend", (*engine)->backend().description()},
                  {"openblas_core", openblas_get_corename()}};
  out["summary"] = {{"routed_rows_per_step", rows_sum / static_cast<uint64_t>(steps)},
                    {"expert_ffn_gflops", Median(engine_rate)},
                    {"dense_limit_gflops", Median(dense_rate)},
                    {"dense_limit_openblas_gflops", Median(dense_blas_rate)},
                    {"dense_limit_engine_kernel_gflops", Median(dense_kernel_rate)},
                    {"core_peak_square_sgemm_gflops", Median(peak_rate)},
                    {"expert_ffn_vs_dense_limit", eff},
                    {"expert_ffn_vs_peak", Median(engine_rate) / std::max(1e-9, Median(peak_rate))},
                    {"per_expert_openblas_loop_gflops", Median(loop_rate)},
                    {"expert_ffn_speedup_vs_openblas_loop", Median(vs_loop)},
                    {"routing_permutation_combine_share_of_routed_layer", share},
                    {"routing_permutation_combine_share_with_shared_expert", Median(share_all)},
                    {"layer_tokens_per_s", Median(layer_tps)}};
  out["time_us_median"] = {
      {"router", Median(router_us)},         {"dispatch", Median(dispatch_us)},
      {"experts", Median(expert_us)},        {"combine_without_shared", Median(combine_us)},
      {"shared_experts", Median(shared_us)}, {"step", Median(step_us)}};
  out["method"] =
      "per round: one engine step with the dense limit (OpenBLAS and the engine's kernel on the "
      "step's routed rows as one matrix) right before it (odd rounds) or after it (even), then the "
      "per-expert OpenBLAS loop and a 2048^3 SGEMM; GFLOP/s count 6*hidden*ffn per routed row; "
      "every figure is a median over "
      "rounds of that round's own value or ratio";
  out["goals"] = {{"expert_ffn_vs_dense_limit_min", 0.8},
                  {"expert_ffn_vs_dense_limit_met", eff >= 0.8}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
