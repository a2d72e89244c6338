// The CUDA backend's memory inside a step (docs/engine-cuda.md, "Memory"):
// uploads from pageable temporaries go through pinned staging (the temporary
// may be reused at once), freed buffers go back to a pool that serves later
// allocations in stream order without cudaFree, and a steady engine step
// allocates nothing and waits for the stream once, plus the waits its stats
// account for.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "gpu_test_util.h"
#include "moe/engine/backend.h"
#include "moe/engine/cuda_backend.h"
#include "moe/engine/engine.h"
#include "moe/engine/options.h"

namespace moe::engine {
namespace {

using gpu_testing::MakeBackend;
using gpu_testing::RandomFloats;
using gpu_testing::ToHost;

CudaBackendCounters CountersOf(const Backend& backend) {
  auto counters = GetCudaBackendCounters(backend);
  INFO(counters.status().ToString());
  REQUIRE(counters.ok());
  return *counters;
}

TEST_CASE("CUDA Upload stages pageable temporaries: the source may be reused at once",
          "[cuda][memory]") {
  auto gpu = MakeBackend("cuda");
  // Small, past the initial 1 MiB of staging (it grows), and past its 64 MiB
  // cap (pieces of 32 MiB; the third waits for the first two).
  for (size_t n : {size_t{1000}, size_t{3} << 18, size_t{20} << 20}) {
    INFO("floats=" << n);
    const CudaBackendCounters before = CountersOf(*gpu);
    std::vector<float> host = RandomFloats(n, 5 + n);
    const std::vector<float> want = host;
    auto buffer = gpu->Allocate(n * sizeof(float));
    REQUIRE(buffer.ok());
    REQUIRE(gpu->Upload(host.data(), n * sizeof(float), (*buffer)->data()).ok());
    std::fill(host.begin(), host.end(), -1.0f);  // before the copy has run
    CHECK(ToHost<float>(*gpu, **buffer, n) == want);
    const CudaBackendCounters after = CountersOf(*gpu);
    CHECK(after.staged_bytes - before.staged_bytes == n * sizeof(float));
    if (n * sizeof(float) > (size_t{64} << 20)) CHECK(after.staging_waits > before.staging_waits);
  }
}

TEST_CASE("CUDA Upload: many uploads before one wait all land", "[cuda][memory]") {
  auto gpu = MakeBackend("cuda");
  const size_t n = 16384;  // 64 KiB each, 6.4 MiB in all
  const int num_buffers = 100;
  std::vector<std::unique_ptr<BackendBuffer>> buffers;
  std::vector<float> host(n);
  for (int i = 0; i < num_buffers; ++i) {
    auto buffer = gpu->Allocate(n * sizeof(float));
    REQUIRE(buffer.ok());
    std::fill(host.begin(), host.end(), static_cast<float>(i));  // one temporary, reused
    REQUIRE(gpu->Upload(host.data(), n * sizeof(float), (*buffer)->data()).ok());
    buffers.push_back(std::move(buffer).value());
  }
  REQUIRE(gpu->Synchronize().ok());
  for (int i = 0; i < num_buffers; ++i) {
    INFO("buffer " << i);
    CHECK(ToHost<float>(*gpu, *buffers[i], n) == std::vector<float>(n, static_cast<float>(i)));
  }
  CHECK(CountersOf(*gpu).staging_waits == 0);
}

TEST_CASE("CUDA freed buffers serve later allocations without cudaFree", "[cuda][memory]") {
  auto gpu = MakeBackend("cuda");
  const size_t bytes = size_t{1} << 20;
  { REQUIRE(gpu->Allocate(bytes).ok()); }  // allocated and freed at once
  const CudaBackendCounters freed = CountersOf(*gpu);
  CHECK(freed.device_frees == 0);
  auto again = gpu->Allocate(bytes);
  REQUIRE(again.ok());
  CudaBackendCounters now = CountersOf(*gpu);
  CHECK(now.pool_hits == freed.pool_hits + 1);
  CHECK(now.device_mallocs == freed.device_mallocs);
  // A block is not handed to a request of less than half its size.
  { REQUIRE(gpu->Allocate(4 * bytes).ok()); }
  now = CountersOf(*gpu);
  auto small = gpu->Allocate(1000);
  REQUIRE(small.ok());
  CHECK(CountersOf(*gpu).device_mallocs == now.device_mallocs + 1);
  CHECK(CountersOf(*gpu).device_frees == 0);
}

TEST_CASE("CUDA a block freed while work still reads it is reused in stream order",
          "[cuda][memory]") {
  auto gpu = MakeBackend("cuda");
  const int num_rows = 256, hidden = 1024;
  const size_t n = static_cast<size_t>(num_rows) * hidden;
  const std::vector<float> x = RandomFloats(n, 71);
  std::vector<int32_t> rows(num_rows);
  for (int i = 0; i < num_rows; ++i)
    rows[i] = num_rows - 1 - i;
  auto out = gpu->Allocate(n * sizeof(float));
  auto rows_buf = gpu->Allocate(rows.size() * sizeof(int32_t));
  REQUIRE(out.ok());
  REQUIRE(rows_buf.ok());
  REQUIRE(gpu->Upload(rows.data(), rows.size() * sizeof(int32_t), (*rows_buf)->data()).ok());
  {
    auto src = gpu->Allocate(n * sizeof(float));
    REQUIRE(src.ok());
    REQUIRE(gpu->Upload(x.data(), n * sizeof(float), (*src)->data()).ok());
    REQUIRE(gpu->Gather((*src)->floats(), (*rows_buf)->ints(), num_rows, hidden, (*out)->floats())
                .ok());
  }  // freed with the gather possibly still queued
  const uint64_t hits = CountersOf(*gpu).pool_hits;
  auto reuse = gpu->Allocate(n * sizeof(float));
  REQUIRE(reuse.ok());
  CHECK(CountersOf(*gpu).pool_hits == hits + 1);  // the same block
  REQUIRE(gpu->Fill(9.0f, n, (*reuse)->floats()).ok());
  std::vector<float> want(n);
  for (int i = 0; i < num_rows; ++i)
    std::copy_n(x.begin() + static_cast<size_t>(rows[i]) * hidden, hidden,
                want.begin() + static_cast<size_t>(i) * hidden);
  CHECK(ToHost<float>(*gpu, **out, n) == want);
  CHECK(ToHost<float>(*gpu, **reuse, n) == std::vector<float>(n, 9.0f));
}

// Two layers, 16 experts on 20 slots over 2 devices, device routing with the
// capacity layout (no host wait inside a layer), no probe.
Options SteadyOptions() {
  Options o;
  o.model.num_layers = 2;
  o.model.hidden = 128;
  o.model.num_experts = 16;
  o.model.expert_ffn = 64;
  o.model.num_shared_experts = 1;
  o.model.shared_ffn = 64;
  o.model.seed = 11;
  o.parallel.num_devices = 2;
  o.parallel.num_replicas = 20;
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 1.25;
  o.knobs.overflow_policy = OverflowPolicy::kDrop;
  o.quality_probe_tokens = 0;
  return o;
}

// Two placements of 16 experts on 20 slots; switching moves expert weights.
std::vector<uint32_t> Placement(int which) {
  std::vector<uint32_t> p2l(20);
  for (uint32_t s = 0; s < 20; ++s)
    p2l[s] = s < 16 ? (which == 0 ? s : (s * 3 + 1) % 16) : (which == 0 ? s - 16 : 15 - (s - 16));
  return p2l;
}

TEST_CASE("CUDA engine steps in steady state allocate nothing and wait once", "[cuda][memory]") {
  for (RoutingMode routing : {RoutingMode::kDevice, RoutingMode::kHost}) {
    INFO("routing " << RoutingModeName(routing));
    Options o = SteadyOptions();
    o.routing = routing;
    auto created = Engine::Create(o, MakeBackend("cuda"));
    INFO(created.status().ToString());
    REQUIRE(created.ok());
    Engine& engine = **created;
    const int num_tokens = 96;
    const auto x = RandomFloats(static_cast<size_t>(num_tokens) * o.model.hidden, 3);
    StepInput input;
    input.hidden = x.data();
    input.num_tokens = num_tokens;
    std::vector<float> out;
    // Odd steps switch placement (1: to B, 3: back to A, 5: to B, ...).
    // Steps 0-4 meet every size once; steps 5-10 must reuse everything.
    const int first_measured = 5;
    CudaBackendCounters warm;
    uint64_t expected_waits = 0;
    for (int step = 0; step < 11; ++step) {
      INFO("step " << step);
      if (step % 2 == 1) {
        KnobUpdate u;
        u.epoch = static_cast<uint64_t>(step);
        u.all_layers.phy2log = Placement((step / 2) % 2 == 0 ? 1 : 0);
        REQUIRE(engine.Submit(u).ok());
      }
      if (step == first_measured) warm = CountersOf(engine.backend());
      auto stats = engine.Step(input, &out);
      INFO(stats.status().ToString());
      REQUIRE(stats.ok());
      if (step < first_measured) continue;
      // The step's one wait (the placement copies are timed by marks, without
      // a wait of their own) and the layers' own.
      expected_waits += 1;
      for (const LayerStats& layer : stats->layers) {
        expected_waits += layer.host_waits;
        if (routing == RoutingMode::kDevice) CHECK(layer.host_waits == 0);  // capacity layout
      }
      if (step % 2 == 1) {
        CHECK(stats->placement_moved_bytes > 0);
        CHECK(stats->placement_copy_us > 0);
      }
    }
    const CudaBackendCounters now = CountersOf(engine.backend());
    CHECK(now.device_mallocs == warm.device_mallocs);
    CHECK(now.device_frees == 0);
    CHECK(now.pinned_mallocs == warm.pinned_mallocs);
    CHECK(now.staging_waits == 0);
    CHECK(now.stream_waits - warm.stream_waits == expected_waits);
    CHECK(now.grouped_fallbacks == 0);
    CHECK(now.grouped_ffn_calls > warm.grouped_ffn_calls);  // 20 slots / 2 devices: grouped
  }
}

}  // namespace
}  // namespace moe::engine
