// gpu_bench: the CUDA backend's grouped expert FFN rate (TFLOP/s and share of
// the device's peak) and MoE layer throughput (tokens/s). Prints one JSON
// document on stdout, progress on stderr; exits 77 without a CUDA device and
// 1 when a measurement failed (its entry then holds "error"; e.g. cuBLAS
// refused a grouped GEMM, which the backend does not hide). Each figure also
// says which FFN path ran and what the backend allocated and waited for per
// call or step ("per_call", "per_step": CudaBackendCounters).
//
//   gpu_bench [--tokens 512] [--iters 10] [--warmup 3] [--no-full]
//
// Shapes: "issue" (hidden 1024, 64 experts of ffn 512, 2 shared, top-6) and
// the full-size model shapes: "mixtral" (hidden 4096, 8 experts of ffn 14336,
// no shared expert, top-2; 5.6 GB of fp32 expert weights) and "deepseek_v3"
// (hidden 7168, 256 experts of ffn 2048, 1 shared, top-8; about 45 GB).
// A shape whose weights do not fit in free device memory is skipped.

#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moe/engine/backend.h"
#include "moe/engine/cuda_backend.h"
#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/options.h"

namespace {

using moe::Status;
using moe::engine::Backend;
using moe::engine::BackendBuffer;
using moe::engine::BackendOptions;
using moe::engine::CudaBackendCounters;
using moe::engine::ExpertGroups;
using moe::engine::ExpertWeights;
using moe::engine::GemmPrecision;
using moe::engine::RoutingMode;
using nlohmann::json;

constexpr int kNoDevice = 77;

struct Shape {
  const char* name;
  int hidden, num_experts, ffn, num_shared, top_k;
};
constexpr Shape kIssue{"issue", 1024, 64, 512, 2, 6};
constexpr Shape kMixtral{"mixtral", 4096, 8, 14336, 0, 2};
constexpr Shape kDeepSeekV3{"deepseek_v3", 7168, 256, 2048, 1, 8};

struct Precision {
  const char* name;
  GemmPrecision value;
};
constexpr Precision kPrecisions[] = {
    {"fp32", GemmPrecision::kFp32}, {"tf32", GemmPrecision::kTf32}, {"bf16", GemmPrecision::kBf16}};

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Check(const Status& st, const char* what) {
  if (st.ok()) return;
  std::fprintf(stderr, "gpu_bench: %s: %s\n", what, st.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Take(moe::Result<T> result, const char* what) {
  Check(result.status(), what);
  return std::move(result).value();
}

// Set when a measurement failed (e.g. cuBLAS refused a grouped GEMM): the
// JSON still comes out, with an "error" where the figure would be, and the
// exit status is 1.
bool g_failed = false;

json Failure(const Status& st) {
  g_failed = true;
  std::fprintf(stderr, "gpu_bench: %s\n", st.ToString().c_str());
  return {{"error", st.ToString()}};
}

CudaBackendCounters CountersOf(const Backend& backend) {
  return Take(moe::engine::GetCudaBackendCounters(backend), "backend counters");
}

// What the backend did between two counter readings, per call.
json PathJson(const CudaBackendCounters& a, const CudaBackendCounters& b, int calls) {
  const double n = calls;
  return {{"grouped_ffn_calls", (b.grouped_ffn_calls - a.grouped_ffn_calls) / n},
          {"grouped_fallbacks", (b.grouped_fallbacks - a.grouped_fallbacks) / n},
          {"unaligned_ffn_calls", (b.unaligned_ffn_calls - a.unaligned_ffn_calls) / n},
          {"single_group_ffn_calls", (b.single_group_ffn_calls - a.single_group_ffn_calls) / n},
          {"device_mallocs", (b.device_mallocs - a.device_mallocs) / n},
          {"pinned_mallocs", (b.pinned_mallocs - a.pinned_mallocs) / n},
          {"staging_waits", (b.staging_waits - a.staging_waits) / n},
          {"stream_waits", (b.stream_waits - a.stream_waits) / n}};
}

std::unique_ptr<Backend> MakeCuda(GemmPrecision precision) {
  BackendOptions options;
  options.gemm_precision = precision;
  return Take(moe::engine::CreateBackend("cuda", options), "create cuda backend");
}

// Dense peak FLOP per SM per clock by architecture: {fp32 CUDA cores, TF32
// tensor, BF16 tensor}; zeros where unknown.
struct PerSmRates {
  double fp32, tf32, bf16;
};
PerSmRates RatesFor(int major, int minor) {
  if (major == 8 && minor == 0) return {128, 1024, 2048};
  if (major == 8) return {256, 256, 512};
  if (major == 9) return {256, 2048, 4096};
  if (major == 10) return {256, 4096, 8192};
  if (major == 7) return {128, 0, 0};
  return {0, 0, 0};
}

json DeviceJson(double* peak_fp32, double* peak_tf32, double* peak_bf16) {
  int device = 0, sms = 0, clock_khz = 0, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device);
  const PerSmRates rates = RatesFor(major, minor);
  const double per_clock = static_cast<double>(sms) * clock_khz * 1e3 / 1e12;
  *peak_fp32 = rates.fp32 * per_clock;
  *peak_tf32 = rates.tf32 * per_clock;
  *peak_bf16 = rates.bf16 * per_clock;
  return {{"name", prop.name},
          {"compute_capability", std::to_string(major) + "." + std::to_string(minor)},
          {"sm_count", sms},
          {"max_sm_clock_mhz", clock_khz / 1000.0},
          {"memory_gib", static_cast<double>(prop.totalGlobalMem) / (1u << 30)},
          {"peak_tflops", {{"fp32", *peak_fp32}, {"tf32", *peak_tf32}, {"bf16", *peak_bf16}}},
          {"peak_assumption",
           "dense peak = SM count x max SM clock (cudaDevAttrClockRate) x FLOP/clock/SM of the "
           "architecture (sm_90: 256 fp32 on CUDA cores, 2048 TF32 and 4096 BF16 on tensor "
           "cores). NVIDIA's H100 SXM datasheet quotes 67 TFLOP/s fp32 and 495 TF32 (tensor "
           "figures at a lower clock), so tensor fractions here are conservative."}};
}

// Expert weights of one shape on the device, random at a fan-in scale.
struct DeviceModel {
  std::vector<std::unique_ptr<BackendBuffer>> buffers;
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
  std::unique_ptr<BackendBuffer> norm, router;
};

// Fills `buffer` with repeats of a random block (generating 45 GB of normals on
// the host would take minutes; the timing does not depend on the values).
void UploadRandom(Backend& backend, BackendBuffer& buffer, const std::vector<float>& block) {
  const size_t total = buffer.size_bytes() / sizeof(float);
  for (size_t at = 0; at < total; at += block.size()) {
    const size_t n = std::min(block.size(), total - at);
    Check(backend.Upload(block.data(), n * sizeof(float), buffer.floats() + at), "upload");
  }
}

DeviceModel MakeModel(Backend& backend, const Shape& s) {
  DeviceModel m;
  moe::engine::NormalStream rng(7);
  std::vector<float> block(1 << 22);
  for (float& v : block)
    v = static_cast<float>(rng.Next() / std::sqrt(static_cast<double>(s.hidden)));
  auto alloc = [&](size_t floats) {
    m.buffers.push_back(Take(backend.Allocate(floats * sizeof(float)), "allocate weights"));
    UploadRandom(backend, *m.buffers.back(), block);
    return m.buffers.back()->floats();
  };
  const size_t h = s.hidden, f = s.ffn;
  for (int e = 0; e < s.num_experts; ++e) {
    float* gate_up = alloc(h * 2 * f);
    m.experts.push_back({gate_up, alloc(f * h), s.ffn});
  }
  const size_t shared_f = f * s.num_shared;
  if (shared_f > 0) {
    float* shared_gate_up = alloc(h * 2 * shared_f);
    m.shared = {shared_gate_up, alloc(shared_f * h), static_cast<int>(shared_f)};
  }
  m.norm = Take(backend.Allocate(h * sizeof(float)), "allocate norm");
  Check(backend.Fill(1.0f, h, m.norm->floats()), "fill norm");
  m.router = Take(backend.Allocate(h * s.num_experts * sizeof(float)), "allocate router");
  UploadRandom(backend, *m.router, block);
  return m;
}

// Grouped expert FFN over tokens x top_k rows spread evenly over the experts.
json BenchExpertFfn(const Shape& s, const DeviceModel& model, int tokens, int warmup, int iters,
                    const double peaks[3]) {
  const int rows = tokens * s.top_k;
  json results = json::array();
  for (int p = 0; p < 3; ++p) {
    // Several backends on one device share its memory: the weights allocated by
    // the first one serve all of them.
    auto backend = MakeCuda(kPrecisions[p].value);
    auto input = Take(backend->Allocate(sizeof(float) * rows * s.hidden), "allocate input");
    auto output = Take(backend->Allocate(sizeof(float) * rows * s.hidden), "allocate output");
    const int max_rows = (rows + s.num_experts - 1) / s.num_experts;
    auto workspace = Take(backend->Allocate(sizeof(float) * moe::engine::ExpertWorkspaceFloats(
                                                                max_rows, s.ffn, s.hidden)),
                          "allocate workspace");
    Check(backend->Fill(0.5f, static_cast<size_t>(rows) * s.hidden, input->floats()), "fill");
    ExpertGroups groups;
    groups.input = input->floats();
    groups.output = output->floats();
    groups.hidden = s.hidden;
    groups.workspace = workspace->floats();
    groups.experts = model.experts;
    groups.offsets.push_back(0);
    double flops = 0, weight_bytes = 0;
    for (int e = 0; e < s.num_experts; ++e) {
      const int n = rows / s.num_experts + (e < rows % s.num_experts ? 1 : 0);
      groups.offsets.push_back(groups.offsets.back() + n);
      flops += 6.0 * n * s.hidden * s.ffn;
      if (n > 0) weight_bytes += 3.0 * s.hidden * s.ffn * sizeof(float);
    }
    // A refused grouped GEMM fails the first call (grouped_gemm_fallback off).
    const Status first = backend->ExpertFfn(groups);
    if (!first.ok()) {
      json failed = Failure(first);
      failed["precision"] = kPrecisions[p].name;
      results.push_back(failed);
      continue;
    }
    for (int i = 1; i < warmup; ++i)
      Check(backend->ExpertFfn(groups), "ExpertFfn");
    Check(backend->Synchronize(), "synchronize");
    const CudaBackendCounters before = CountersOf(*backend);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i)
      Check(backend->ExpertFfn(groups), "ExpertFfn");
    Check(backend->Synchronize(), "synchronize");
    const double sec = Seconds(start) / iters;
    const double tflops = flops / sec / 1e12;
    results.push_back({{"precision", kPrecisions[p].name},
                       {"per_call", PathJson(before, CountersOf(*backend), iters)},
                       {"backend", backend->description()},
                       {"rows", rows},
                       {"rows_per_expert", static_cast<double>(rows) / s.num_experts},
                       {"ms_per_call", sec * 1e3},
                       {"tflops", tflops},
                       {"fraction_of_peak", peaks[p] > 0 ? tflops / peaks[p] : 0.0},
                       {"weight_gbps", weight_bytes / sec / 1e9}});
    std::fprintf(stderr, "expert_ffn %s %s: %.3f ms, %.1f TFLOP/s\n", s.name, kPrecisions[p].name,
                 sec * 1e3, tflops);
  }
  return results;
}

// One MoE layer from backend ops, router on the device, routing decisions on
// the host (top-k indices and their scores downloaded), as the engine does.
json BenchLayerOps(const Shape& s, const DeviceModel& model, int tokens, int warmup, int iters,
                   GemmPrecision precision) {
  auto b = MakeCuda(precision);
  const size_t h = s.hidden, t = tokens, e = s.num_experts, k = s.top_k;
  auto alloc = [&](size_t bytes) { return Take(b->Allocate(bytes), "allocate"); };
  auto x = alloc(t * h * 4), x_norm = alloc(t * h * 4), logits = alloc(t * e * 4);
  auto scores = alloc(t * e * 4), topk = alloc(t * k * 4), rows_buf = alloc(t * k * 4);
  auto weights_buf = alloc(t * k * 4), routed_in = alloc(t * k * h * 4);
  auto routed_out = alloc(t * k * h * 4), accum = alloc(t * h * 4), out = alloc(t * h * 4);
  auto workspace = alloc(
      4 * moe::engine::ExpertWorkspaceFloats(tokens, std::max(s.ffn, model.shared.ffn), s.hidden));
  Check(b->Fill(0.25f, t * h, x->floats()), "fill");
  std::vector<int32_t> idx(t * k), rows(t * k);
  std::vector<float> host_scores(t * e), weights(t * k);
  auto step = [&]() {
    Check(b->RmsNorm(x->floats(), model.norm->floats(), tokens, s.hidden, 1e-6f, x_norm->floats()),
          "RmsNorm");
    Check(b->Gemm(x_norm->floats(), model.router->floats(), logits->floats(), tokens, s.num_experts,
                  s.hidden, 0.0f),
          "Gemm");
    Check(b->Score(logits->floats(), tokens, s.num_experts, moe::engine::ScoreFunction::kSigmoid,
                   scores->floats()),
          "Score");
    Check(b->TopK(scores->floats(), tokens, s.num_experts, s.top_k, topk->ints()), "TopK");
    Check(b->Download(topk->ints(), idx.size() * 4, idx.data()), "download");
    Check(b->Download(scores->floats(), host_scores.size() * 4, host_scores.data()), "download");
    std::vector<int> offsets(e + 1, 0);
    for (int32_t v : idx)
      offsets[v + 1]++;
    for (size_t i = 0; i < e; ++i)
      offsets[i + 1] += offsets[i];
    std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
    for (size_t i = 0; i < idx.size(); ++i) {
      const int pos = cursor[idx[i]]++;
      rows[pos] = static_cast<int32_t>(i / k);
      weights[pos] = host_scores[(i / k) * e + idx[i]];
    }
    Check(b->Upload(rows.data(), rows.size() * 4, rows_buf->data()), "upload");
    Check(b->Upload(weights.data(), weights.size() * 4, weights_buf->data()), "upload");
    Check(b->Gather(x_norm->floats(), rows_buf->ints(), static_cast<int>(rows.size()), s.hidden,
                    routed_in->floats()),
          "Gather");
    ExpertGroups routed;
    routed.input = routed_in->floats();
    routed.output = routed_out->floats();
    routed.hidden = s.hidden;
    routed.workspace = workspace->floats();
    routed.experts = model.experts;
    routed.offsets = offsets;
    Check(b->ExpertFfn(routed), "routed ExpertFfn");
    if (model.shared.ffn > 0) {
      ExpertGroups shared;
      shared.input = x_norm->floats();
      shared.output = accum->floats();
      shared.hidden = s.hidden;
      shared.workspace = workspace->floats();
      shared.experts = {model.shared};
      shared.offsets = {0, tokens};
      Check(b->ExpertFfn(shared), "shared ExpertFfn");
    } else {
      Check(b->Fill(0.0f, t * h, accum->floats()), "fill");
    }
    Check(b->ScatterAddWeighted(routed_out->floats(), rows_buf->ints(), weights_buf->floats(),
                                static_cast<int>(rows.size()), s.hidden, accum->floats()),
          "ScatterAddWeighted");
    Check(b->Add(x->floats(), accum->floats(), t * h, out->floats()), "Add");
    Check(b->Synchronize(), "synchronize");
  };
  for (int i = 0; i < warmup; ++i)
    step();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i)
    step();
  const double sec = Seconds(start) / iters;
  std::fprintf(stderr, "layer %s (backend ops): %.3f ms per layer\n", s.name, sec * 1e3);
  return {{"how", "backend ops: device router + TopK, host grouping, grouped FFN"},
          {"ms_per_layer", sec * 1e3},
          {"tokens_per_s", tokens / sec}};
}

// The engine itself (one layer) on the CUDA backend, routed on the host or
// on the device.
json BenchEngine(const Shape& s, int tokens, int warmup, int iters, GemmPrecision precision,
                 moe::engine::RoutingMode routing) {
  moe::engine::Options o;
  o.model.num_layers = 1;
  o.model.hidden = s.hidden;
  o.model.num_experts = s.num_experts;
  o.model.expert_ffn = s.ffn;
  o.model.num_shared_experts = s.num_shared;
  o.model.shared_ffn = s.ffn;
  o.knobs.top_k = s.top_k;
  o.quality_probe_tokens = 0;
  o.routing = routing;
  auto created = moe::engine::Engine::Create(o, MakeCuda(precision));
  if (!created.ok()) return Failure(created.status());
  auto engine = std::move(created).value();
  moe::engine::NormalStream rng(3);
  std::vector<float> x(static_cast<size_t>(tokens) * s.hidden);
  for (float& v : x)
    v = static_cast<float>(rng.Next());
  moe::engine::StepInput input;
  input.hidden = x.data();
  input.num_tokens = tokens;
  for (int i = 0; i < std::max(warmup, 1); ++i) {
    const auto stats = engine->Step(input);
    if (!stats.ok()) return Failure(stats.status());
  }
  const CudaBackendCounters before = CountersOf(engine->backend());
  double step_us = 0, router = 0, dispatch = 0, expert = 0, combine = 0, waits = 0, rows = 0;
  for (int i = 0; i < iters; ++i) {
    const auto stats = Take(engine->Step(input), "step");
    step_us += stats.step_us / iters;
    waits += static_cast<double>(stats.layers[0].host_waits) / iters;
    rows += static_cast<double>(stats.layers[0].expert_rows) / iters;
    router += stats.layers[0].router_us / iters;
    dispatch += stats.layers[0].dispatch_us / iters;
    expert += stats.layers[0].expert_us / iters;
    combine += stats.layers[0].combine_us / iters;
  }
  const std::string mode(moe::engine::RoutingModeName(routing));
  std::fprintf(stderr, "layer %s (engine, %s routing): %.3f ms per step\n", s.name, mode.c_str(),
               step_us / 1e3);
  return {{"how", "Engine::Step, 1 layer, capacity factor 1, " + mode + " routing"},
          {"routing", mode},
          {"host_waits_per_layer", waits},
          {"per_step", PathJson(before, CountersOf(engine->backend()), iters)},
          {"expert_rows", rows},
          {"ms_per_layer", step_us / 1e3},
          {"tokens_per_s", tokens / (step_us * 1e-6)},
          {"breakdown_us",
           {{"router", router}, {"dispatch", dispatch}, {"expert", expert}, {"combine", combine}}}};
}

json ShapeJson(const Shape& s, int tokens) {
  return {{"hidden", s.hidden},  {"num_experts", s.num_experts},
          {"expert_ffn", s.ffn}, {"num_shared", s.num_shared},
          {"top_k", s.top_k},    {"tokens", tokens}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpu_bench: CUDA backend expert FFN rate and layer throughput"};
  int tokens = 512, iters = 10, warmup = 3;
  bool no_full = false;
  app.add_option("--tokens", tokens, "tokens per layer call")->check(CLI::PositiveNumber);
  app.add_option("--iters", iters, "timed iterations")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed iterations")->check(CLI::NonNegativeNumber);
  app.add_flag("--no-full", no_full, "skip the full-size shapes (mixtral, deepseek_v3)");
  CLI11_PARSE(app, argc, argv);

  int num_devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&num_devices);
  if (err != cudaSuccess || num_devices == 0) {
    std::fprintf(stderr, "gpu_bench: skipped, no CUDA device (%s)\n",
                 err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0");
    return kNoDevice;
  }
  double peaks[3] = {0, 0, 0};
  json doc;
  doc["device"] = DeviceJson(&peaks[0], &peaks[1], &peaks[2]);
  doc["expert_ffn_note"] =
      "grouped SwiGLU (2 GEMMs + activation), rows spread evenly over the experts; FLOPs = 6 x "
      "rows x hidden x ffn; weight_gbps counts each expert's weights read once per call";
  doc["shapes"] = json::array();
  for (const Shape* s : {&kIssue, &kMixtral, &kDeepSeekV3}) {
    json entry;
    entry["name"] = s->name;
    entry["shape"] = ShapeJson(*s, tokens);
    const double weight_bytes =
        4.0 * (static_cast<double>(s->num_experts) + s->num_shared) * 3 * s->hidden * s->ffn;
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    const double activation_bytes = 4.0 * tokens * s->top_k * s->hidden * 8;
    if (s != &kIssue && no_full) {
      entry["skipped"] = "--no-full";
    } else if (weight_bytes + activation_bytes + (1u << 30) > free_bytes) {
      entry["skipped"] = "fp32 weights need " + std::to_string(weight_bytes / 1e9) + " GB, " +
                         std::to_string(free_bytes / 1e9) + " GB free";
    } else {
      std::fprintf(stderr, "%s: uploading %.1f GB of weights\n", s->name, weight_bytes / 1e9);
      auto owner = MakeCuda(GemmPrecision::kFp32);
      DeviceModel model = MakeModel(*owner, *s);
      entry["expert_ffn"] = BenchExpertFfn(*s, model, tokens, warmup, iters, peaks);
      entry["layer"] = json::array();
      for (const Precision& p : {kPrecisions[0], kPrecisions[1]}) {
        json layer = BenchLayerOps(*s, model, tokens, warmup, iters, p.value);
        layer["precision"] = p.name;
        entry["layer"].push_back(layer);
      }
      model = DeviceModel();
      if (s == &kIssue) {
        // Host and device routing measured back to back in the same run.
        for (const Precision& p : {kPrecisions[0], kPrecisions[1]}) {
          json host = BenchEngine(*s, tokens, warmup, iters, p.value, RoutingMode::kHost);
          json device = BenchEngine(*s, tokens, warmup, iters, p.value, RoutingMode::kDevice);
          host["precision"] = p.name;
          device["precision"] = p.name;
          if (host.contains("ms_per_layer") && device.contains("ms_per_layer")) {
            device["speedup_vs_host_routing"] =
                host["ms_per_layer"].get<double>() / device["ms_per_layer"].get<double>();
          }
          entry["layer"].push_back(host);
          entry["layer"].push_back(device);
        }
      }
    }
    doc["shapes"].push_back(entry);
  }
  std::printf("%s\n", doc.dump(2).c_str());
  return g_failed ? 1 : 0;
}
