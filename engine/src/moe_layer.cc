#include "moe_layer.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>

namespace moe::engine {
namespace {

Result<std::unique_ptr<BackendBuffer>> UploadVector(Backend* backend, const void* data,
                                                    size_t num_bytes) {
  MOE_ASSIGN_OR_RETURN(auto buffer, backend->Allocate(num_bytes));
  MOE_RETURN_IF_ERROR(backend->Upload(data, num_bytes, buffer->data()));
  return buffer;
}

Result<std::unique_ptr<BackendBuffer>> UploadFloats(Backend* backend,
                                                    const std::vector<float>& host) {
  return UploadVector(backend, host.data(), host.size() * sizeof(float));
}

Status Grow(Backend* backend, size_t num_bytes, std::unique_ptr<BackendBuffer>* buffer) {
  if (*buffer && (*buffer)->size_bytes() >= num_bytes) return Status::Ok();
  buffer->reset();
  MOE_ASSIGN_OR_RETURN(*buffer, backend->Allocate(num_bytes));
  return Status::Ok();
}

Result<double> Micros(Backend* backend, const BackendMark& from, const BackendMark& to) {
  MOE_ASSIGN_OR_RETURN(const double us, backend->MicrosBetween(from, to));
  return std::max(0.0, us);
}

}  // namespace

Status EnsureWorkspace(Backend* backend, const Options& options, int num_tokens, int top_k,
                       int rows, LayerWorkspace* ws) {
  const size_t hidden = options.model.hidden;
  const size_t f = sizeof(float);
  if (num_tokens > ws->capacity_tokens || top_k > ws->capacity_k) {
    const int tokens = std::max(num_tokens, ws->capacity_tokens);
    const int k = std::max(top_k, ws->capacity_k);
    const size_t experts = options.model.num_experts;
    const size_t pairs = static_cast<size_t>(tokens) * k;
    const int max_ffn = static_cast<int>(std::max<size_t>(
        options.model.expert_ffn,
        static_cast<size_t>(options.model.num_shared_experts) * options.model.shared_ffn));
    MOE_RETURN_IF_ERROR(Grow(backend, tokens * hidden * f, &ws->x_norm));
    MOE_RETURN_IF_ERROR(Grow(backend, tokens * experts * f, &ws->logits));
    MOE_RETURN_IF_ERROR(Grow(backend, tokens * experts * f, &ws->scores));
    MOE_RETURN_IF_ERROR(Grow(backend, tokens * hidden * f, &ws->accum));
    MOE_RETURN_IF_ERROR(Grow(backend, pairs * sizeof(int32_t), &ws->chosen));
    MOE_RETURN_IF_ERROR(Grow(backend, pairs * sizeof(int32_t), &ws->pair_slot));
    MOE_RETURN_IF_ERROR(Grow(backend, pairs * f, &ws->pair_weight));
    MOE_RETURN_IF_ERROR(Grow(
        backend, ExpertWorkspaceFloats(tokens, max_ffn, static_cast<int>(hidden)) * f, &ws->ffn));
    ws->capacity_tokens = tokens;
    ws->capacity_k = k;
  }
  if (rows > ws->capacity_rows || ws->rows == nullptr) {
    const size_t n = std::max<size_t>(1, rows);
    MOE_RETURN_IF_ERROR(Grow(backend, n * hidden * f, &ws->routed_in));
    MOE_RETURN_IF_ERROR(Grow(backend, n * hidden * f, &ws->routed_out));
    MOE_RETURN_IF_ERROR(Grow(backend, n * sizeof(int32_t), &ws->rows));
    MOE_RETURN_IF_ERROR(Grow(backend, n * f, &ws->weights));
    ws->capacity_rows = rows;
  }
  return Status::Ok();
}

Result<std::unique_ptr<MoeLayer>> MoeLayer::Create(Backend* backend, const Options& options,
                                                   uint32_t layer) {
  std::unique_ptr<MoeLayer> l(new MoeLayer(backend, options, layer));
  HostLayerWeights w = GenerateLayerWeights(options.model, layer);
  MOE_ASSIGN_OR_RETURN(l->norm_, UploadFloats(backend, w.norm));
  MOE_ASSIGN_OR_RETURN(l->gate_, UploadFloats(backend, w.gate));
  if (options.model.num_shared_experts > 0) {
    MOE_ASSIGN_OR_RETURN(l->shared_gate_up_, UploadFloats(backend, w.shared_gate_up));
    MOE_ASSIGN_OR_RETURN(l->shared_down_, UploadFloats(backend, w.shared_down));
    const int hidden = static_cast<int>(options.model.hidden);
    const ExpertWeights shared = l->Shared();
    const size_t packed = backend->PackedExpertFloats(hidden, shared.ffn);
    if (packed > 0) {
      MOE_ASSIGN_OR_RETURN(l->shared_packed_, backend->Allocate(packed * sizeof(float)));
      MOE_RETURN_IF_ERROR(backend->PackExpert(shared, hidden, l->shared_packed_->floats()));
    }
  }
  // Each slot of the initial placement: the first replica of an expert from
  // the host, the others copied from it on the backend.
  const uint32_t num_experts = options.model.num_experts;
  const uint32_t num_replicas = NumReplicas(options);
  const std::vector<uint32_t> placement =
      options.knobs.phy2log.empty() ? DefaultPlacement(options) : options.knobs.phy2log;
  const size_t gate_up_bytes = w.gate_up[0].size() * sizeof(float);
  const size_t down_bytes = w.down[0].size() * sizeof(float);
  std::vector<int> first(num_experts, -1);
  for (uint32_t s = 0; s < num_replicas; ++s) {
    const uint32_t e = placement[s];
    MOE_ASSIGN_OR_RETURN(auto gate_up, backend->Allocate(gate_up_bytes));
    MOE_ASSIGN_OR_RETURN(auto down, backend->Allocate(down_bytes));
    if (first[e] < 0) {
      MOE_RETURN_IF_ERROR(backend->Upload(w.gate_up[e].data(), gate_up_bytes, gate_up->data()));
      MOE_RETURN_IF_ERROR(backend->Upload(w.down[e].data(), down_bytes, down->data()));
      first[e] = static_cast<int>(s);
    } else {
      MOE_RETURN_IF_ERROR(
          backend->Copy(l->slot_gate_up_[first[e]]->data(), gate_up_bytes, gate_up->data()));
      MOE_RETURN_IF_ERROR(backend->Copy(l->slot_down_[first[e]]->data(), down_bytes, down->data()));
    }
    l->slot_gate_up_.push_back(std::move(gate_up));
    l->slot_down_.push_back(std::move(down));
  }
  l->slot_expert_ = placement;
  const size_t packed = backend->PackedExpertFloats(static_cast<int>(options.model.hidden),
                                                    static_cast<int>(options.model.expert_ffn));
  for (uint32_t s = 0; packed > 0 && s < num_replicas; ++s) {
    MOE_ASSIGN_OR_RETURN(auto buffer, backend->Allocate(packed * sizeof(float)));
    l->slot_packed_.push_back(std::move(buffer));
    MOE_RETURN_IF_ERROR(l->PackSlot(s));
  }
  MOE_ASSIGN_OR_RETURN(l->phy2log_, backend->Allocate(num_replicas * sizeof(int32_t)));
  MOE_ASSIGN_OR_RETURN(l->bias_, backend->Allocate(num_experts * sizeof(float)));
  std::vector<int32_t> p2l(placement.begin(), placement.end());
  MOE_RETURN_IF_ERROR(
      backend->Upload(p2l.data(), p2l.size() * sizeof(int32_t), l->phy2log_->data()));
  MOE_RETURN_IF_ERROR(l->ApplyKnobs(options.knobs).status());

  MOE_ASSIGN_OR_RETURN(l->mark_start_, backend->CreateMark());
  MOE_ASSIGN_OR_RETURN(l->mark_routed_, backend->CreateMark());
  MOE_ASSIGN_OR_RETURN(l->mark_dispatched_, backend->CreateMark());
  for (uint32_t d = 0; d < options.parallel.num_devices; ++d) {
    MOE_ASSIGN_OR_RETURN(auto mark, backend->CreateMark());
    l->mark_device_.push_back(std::move(mark));
  }
  MOE_ASSIGN_OR_RETURN(l->mark_shared_, backend->CreateMark());
  MOE_ASSIGN_OR_RETURN(l->mark_combined_, backend->CreateMark());
  MOE_RETURN_IF_ERROR(backend->Synchronize());
  return l;
}

size_t MoeLayer::CounterEntries(const Options& options) {
  // top_k bound: any K a knob change may ask for.
  return DeviceRoutingCounters(options.model.num_experts, NumReplicas(options),
                               options.parallel.num_devices, options.model.num_experts)
      .total;
}

size_t MoeLayer::ExpertBytes() const {
  return slot_gate_up_[0]->size_bytes() + slot_down_[0]->size_bytes();
}

Result<std::vector<uint32_t>> MoeLayer::ApplyKnobs(const Knobs& knobs) {
  const std::vector<uint32_t>& target =
      knobs.phy2log.empty() ? DefaultPlacement(options_) : knobs.phy2log;
  assert(target.size() == slot_expert_.size());
  const uint32_t num_experts = options_.model.num_experts;
  std::vector<uint32_t> changed;
  std::vector<int> keeper(num_experts, -1);  // a slot that holds the expert before and after
  for (uint32_t s = 0; s < target.size(); ++s) {
    if (slot_expert_[s] != target[s]) {
      changed.push_back(s);
    } else if (keeper[target[s]] < 0) {
      keeper[target[s]] = static_cast<int>(s);
    }
  }
  if (!changed.empty()) {
    const size_t gate_up_bytes = slot_gate_up_[0]->size_bytes();
    const size_t down_bytes = slot_down_[0]->size_bytes();
    // Experts no slot keeps: copy them aside before any slot is overwritten.
    std::vector<std::unique_ptr<BackendBuffer>> staged_gate_up(num_experts);
    std::vector<std::unique_ptr<BackendBuffer>> staged_down(num_experts);
    for (uint32_t s : changed) {
      const uint32_t e = target[s];
      if (keeper[e] >= 0 || staged_gate_up[e] != nullptr) continue;
      const auto holder = std::find(slot_expert_.begin(), slot_expert_.end(), e);
      if (holder == slot_expert_.end()) {
        return Status::Internal("layer " + std::to_string(layer_) + ": expert " +
                                std::to_string(e) + " has no copy on the backend");
      }
      const size_t h = static_cast<size_t>(holder - slot_expert_.begin());
      MOE_ASSIGN_OR_RETURN(staged_gate_up[e], backend_->Allocate(gate_up_bytes));
      MOE_ASSIGN_OR_RETURN(staged_down[e], backend_->Allocate(down_bytes));
      MOE_RETURN_IF_ERROR(
          backend_->Copy(slot_gate_up_[h]->data(), gate_up_bytes, staged_gate_up[e]->data()));
      MOE_RETURN_IF_ERROR(
          backend_->Copy(slot_down_[h]->data(), down_bytes, staged_down[e]->data()));
    }
    for (uint32_t s : changed) {
      const uint32_t e = target[s];
      const void* gate_up =
          keeper[e] >= 0 ? slot_gate_up_[keeper[e]]->data() : staged_gate_up[e]->data();
      const void* down = keeper[e] >= 0 ? slot_down_[keeper[e]]->data() : staged_down[e]->data();
      MOE_RETURN_IF_ERROR(backend_->Copy(gate_up, gate_up_bytes, slot_gate_up_[s]->data()));
      MOE_RETURN_IF_ERROR(backend_->Copy(down, down_bytes, slot_down_[s]->data()));
      slot_expert_[s] = e;
    }
    for (uint32_t s : changed)
      MOE_RETURN_IF_ERROR(PackSlot(s));
    // The staging buffers are freed here; freeing waits for the copies that
    // read them (CUDA's cudaFree synchronizes; the CPU copied already).
    std::vector<int32_t> p2l(target.begin(), target.end());
    MOE_RETURN_IF_ERROR(
        backend_->Upload(p2l.data(), p2l.size() * sizeof(int32_t), phy2log_->data()));
  }
  if (!bias_valid_ || knobs.expert_bias != bias_host_) {
    if (!knobs.expert_bias.empty()) {
      MOE_RETURN_IF_ERROR(backend_->Upload(
          knobs.expert_bias.data(), knobs.expert_bias.size() * sizeof(float), bias_->data()));
    }
    bias_host_ = knobs.expert_bias;
    bias_valid_ = true;
  }
  return changed;
}

ExpertWeights MoeLayer::Expert(uint32_t e) const {
  const size_t s = static_cast<size_t>(std::find(slot_expert_.begin(), slot_expert_.end(), e) -
                                       slot_expert_.begin());
  assert(s < slot_expert_.size() && "every expert has a replica (ValidateKnobs)");
  return Slot(static_cast<uint32_t>(s));
}

ExpertWeights MoeLayer::Slot(uint32_t s) const {
  return {slot_gate_up_[s]->floats(), slot_down_[s]->floats(),
          static_cast<int>(options_.model.expert_ffn),
          slot_packed_.empty() ? nullptr : slot_packed_[s]->floats()};
}

ExpertWeights MoeLayer::Shared() const {
  return {shared_gate_up_->floats(), shared_down_->floats(),
          static_cast<int>(options_.model.num_shared_experts * options_.model.shared_ffn),
          shared_packed_ ? shared_packed_->floats() : nullptr};
}

Status MoeLayer::PackSlot(uint32_t s) {
  if (slot_packed_.empty()) return Status::Ok();
  ExpertWeights w = Slot(s);
  return backend_->PackExpert(w, static_cast<int>(options_.model.hidden),
                              slot_packed_[s]->floats());
}

bool MoeLayer::RoutesOnDevice(const LayerContext& ctx) const {
  switch (options_.routing) {
    case RoutingMode::kHost:
      return false;
    case RoutingMode::kDevice:
      return true;
    case RoutingMode::kAuto:
      return backend_->Supports(Feature::kDeviceRouting) &&
             !backend_->Supports(Feature::kHostMemory) && ctx.forced == nullptr &&
             CheckDeviceRoutingCovered(*ctx.knobs).ok();
  }
  return false;
}

// Host routing: scores come back to the host (one wait), Route() plans, and
// the permutation goes up.
Status MoeLayer::RouteOnHost(const LayerContext& ctx, LayerWorkspace* ws) {
  const int num_tokens = ctx.num_tokens;
  const uint32_t num_replicas = NumReplicas(options_);
  ws->host_scores.resize(static_cast<size_t>(num_tokens) * options_.model.num_experts);
  MOE_RETURN_IF_ERROR(backend_->Download(
      ws->scores->floats(), ws->host_scores.size() * sizeof(float), ws->host_scores.data()));
  pending_.host_waits++;
  pending_.plan =
      Route(ws->host_scores.data(), num_tokens, options_, *ctx.knobs, ctx.seed, ctx.forced);
  const RoutingPlan& plan = pending_.plan;
  // Counting sort of served token-slots by physical slot.
  std::vector<int>& offsets = pending_.offsets;
  offsets.assign(num_replicas + 1, 0);
  for (uint32_t s = 0; s < num_replicas; ++s)
    offsets[s + 1] = offsets[s] + static_cast<int>(plan.slot_tokens[s]);
  const int num_rows = offsets[num_replicas];
  MOE_RETURN_IF_ERROR(
      EnsureWorkspace(backend_, options_, num_tokens, ctx.knobs->top_k, num_rows, ws));
  std::vector<int32_t> rows(num_rows);
  std::vector<float> weights(num_rows);
  std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
  for (size_t i = 0; i < plan.slot.size(); ++i) {
    const int32_t s = plan.slot[i];
    if (s < 0) continue;
    const int pos = cursor[s]++;
    rows[pos] = static_cast<int32_t>(i / plan.max_k);
    weights[pos] = plan.weight[i];
  }
  MOE_RETURN_IF_ERROR(
      backend_->Upload(rows.data(), rows.size() * sizeof(int32_t), ws->rows->data()));
  return backend_->Upload(weights.data(), weights.size() * sizeof(float), ws->weights->data());
}

// Device routing: Backend::RouteOnDevice() plans and permutes on the device and
// the counters come back in one asynchronous copy. Expert groups are sized by
// the capacity layout when its padding is acceptable; otherwise the step
// waits here once for the per-slot counts.
Status MoeLayer::RouteOnDevice(const LayerContext& ctx, LayerWorkspace* ws) {
  const Knobs& knobs = *ctx.knobs;
  MOE_RETURN_IF_ERROR(CheckDeviceRoutingCovered(knobs).WithContext(
      "layer " + std::to_string(layer_) + " (routing = device)"));
  const int num_tokens = ctx.num_tokens;
  const uint32_t num_experts = options_.model.num_experts;
  const uint32_t num_replicas = NumReplicas(options_);
  const int num_pairs = num_tokens * static_cast<int>(knobs.top_k);
  const uint32_t capacity =
      ExpertCapacity(knobs.capacity_factor, num_tokens, knobs.top_k, num_experts);
  bool capacity_layout = false;
  if (capacity > 0) {
    pending_.offsets = CapacityLayoutOffsets(slot_expert_, num_experts, capacity, num_tokens,
                                             knobs.capacity_scope);
    capacity_layout = pending_.offsets.back() <= (1.0 + options_.max_capacity_padding) * num_pairs;
  }
  const int layout_rows = capacity_layout ? pending_.offsets.back() : num_pairs;
  MOE_RETURN_IF_ERROR(
      EnsureWorkspace(backend_, options_, num_tokens, knobs.top_k, layout_rows, ws));

  DeviceRoutingArgs args;
  args.options = &options_;
  args.knobs = &knobs;
  args.seed = ctx.seed;
  args.num_tokens = num_tokens;
  args.scores = ws->scores->floats();
  args.expert_bias = knobs.expert_bias.empty() ? nullptr : bias_->floats();
  args.phy2log = phy2log_->ints();
  args.chosen = ws->chosen->ints();
  args.slot = ws->pair_slot->ints();
  args.weight = ws->pair_weight->floats();
  args.capacity_layout = capacity_layout;
  args.rows = ws->rows->ints();
  args.row_weights = ws->weights->floats();
  args.counters = ctx.counters;
  MOE_RETURN_IF_ERROR(backend_->RouteOnDevice(args));
  // The engine brings every layer's counters back in one copy after the step.
  if (capacity_layout) return Status::Ok();
  // Group sizes are only known from the counts: fetch this layer's and wait.
  const DeviceRoutingCounterLayout layout =
      DeviceRoutingCounters(num_experts, num_replicas, options_.parallel.num_devices, knobs.top_k);
  MOE_RETURN_IF_ERROR(
      backend_->DownloadAsync(ctx.counters, layout.total * sizeof(uint32_t), ctx.host_counters));
  MOE_RETURN_IF_ERROR(backend_->Synchronize());
  pending_.host_waits++;
  const uint32_t* c = ctx.host_counters;
  pending_.offsets.assign(num_replicas + 1, 0);
  for (uint32_t s = 0; s < num_replicas; ++s)
    pending_.offsets[s + 1] = pending_.offsets[s] + static_cast<int>(c[layout.slot_tokens + s]);
  return Status::Ok();
}

Status MoeLayer::Forward(const float* x, const LayerContext& ctx, LayerWorkspace* ws, float* out) {
  const Knobs& knobs = *ctx.knobs;
  const int num_tokens = ctx.num_tokens;
  const int hidden = static_cast<int>(options_.model.hidden);
  const int num_experts = static_cast<int>(options_.model.num_experts);
  const uint32_t num_devices = options_.parallel.num_devices;
  const uint32_t num_replicas = NumReplicas(options_);
  const uint32_t slots_per_device = num_replicas / num_devices;
  pending_ = Pending{};
  pending_.on_device = RoutesOnDevice(ctx);
  MOE_RETURN_IF_ERROR(EnsureWorkspace(backend_, options_, num_tokens, knobs.top_k, 0, ws));
  float* x_norm = ws->x_norm->floats();

  // Router: norm, gate GEMM, scoring, routing pipeline.
  MOE_RETURN_IF_ERROR(Record(mark_start_.get()));
  MOE_RETURN_IF_ERROR(
      backend_->RmsNorm(x, norm_->floats(), num_tokens, hidden, options_.model.rms_eps, x_norm));
  MOE_RETURN_IF_ERROR(backend_->Gemm(x_norm, gate_->floats(), ws->logits->floats(), num_tokens,
                                     num_experts, hidden, 0.0f));
  MOE_RETURN_IF_ERROR(backend_->Score(ws->logits->floats(), num_tokens, num_experts,
                                      options_.model.score_function, ws->scores->floats()));
  MOE_RETURN_IF_ERROR(pending_.on_device ? RouteOnDevice(ctx, ws) : RouteOnHost(ctx, ws));
  MOE_RETURN_IF_ERROR(Record(mark_routed_.get()));

  // Dispatch: the permuted rows (padding rows of the capacity layout are 0).
  const int num_rows = pending_.offsets[num_replicas];
  MOE_RETURN_IF_ERROR(
      backend_->Gather(x_norm, ws->rows->ints(), num_rows, hidden, ws->routed_in->floats()));
  MOE_RETURN_IF_ERROR(Record(mark_dispatched_.get()));

  // Experts, one grouped call per virtual device, each ending in a mark.
  for (uint32_t d = 0; d < num_devices; ++d) {
    const uint32_t first = d * slots_per_device;
    const int row0 = pending_.offsets[first];
    ExpertGroups groups;
    groups.input = ws->routed_in->floats() + static_cast<size_t>(row0) * hidden;
    groups.output = ws->routed_out->floats() + static_cast<size_t>(row0) * hidden;
    groups.hidden = hidden;
    groups.workspace = ws->ffn->floats();
    groups.offsets.push_back(0);
    for (uint32_t s = first; s < first + slots_per_device; ++s) {
      groups.experts.push_back(Slot(s));
      groups.offsets.push_back(pending_.offsets[s + 1] - row0);
    }
    MOE_RETURN_IF_ERROR(backend_->ExpertFfn(groups));
    MOE_RETURN_IF_ERROR(Record(mark_device_[d].get()));
  }

  // Combine: shared experts on every token, weighted scatter-add, residual.
  float* accum = ws->accum->floats();
  if (options_.model.num_shared_experts > 0) {
    ExpertGroups shared;
    shared.input = x_norm;
    shared.output = accum;
    shared.hidden = hidden;
    shared.workspace = ws->ffn->floats();
    shared.experts.push_back(Shared());
    shared.offsets = {0, num_tokens};
    MOE_RETURN_IF_ERROR(backend_->ExpertFfn(shared));
  } else {
    MOE_RETURN_IF_ERROR(backend_->Fill(0.0f, static_cast<size_t>(num_tokens) * hidden, accum));
  }
  MOE_RETURN_IF_ERROR(Record(mark_shared_.get()));
  MOE_RETURN_IF_ERROR(backend_->ScatterAddWeighted(ws->routed_out->floats(), ws->rows->ints(),
                                                   ws->weights->floats(), num_rows, hidden, accum));
  MOE_RETURN_IF_ERROR(backend_->Add(x, accum, static_cast<size_t>(num_tokens) * hidden, out));
  return Record(mark_combined_.get());
}

Status MoeLayer::Finish(const LayerContext& ctx, LayerWorkspace* ws, LayerStats* stats) {
  const Knobs& knobs = *ctx.knobs;
  const int num_tokens = ctx.num_tokens;
  const uint32_t num_experts = options_.model.num_experts;
  const uint32_t num_devices = options_.parallel.num_devices;
  const uint32_t num_replicas = NumReplicas(options_);
  const uint32_t slots_per_device = num_replicas / num_devices;
  RoutingPlan& plan = pending_.plan;
  std::vector<uint32_t> transfer_rows;
  if (pending_.on_device) {
    const DeviceRoutingCounterLayout layout =
        DeviceRoutingCounters(num_experts, num_replicas, num_devices, knobs.top_k);
    const uint32_t* c = ctx.host_counters;
    plan.num_tokens = num_tokens;
    plan.max_k = static_cast<int>(knobs.top_k);
    ApplyDeviceRoutingCounters(c, layout, &plan);
    transfer_rows.assign(c + layout.transfer_rows, c + layout.total);
  } else {
    transfer_rows = TransferRows(plan, num_replicas, num_devices);
  }

  // Times between the marks Forward() recorded.
  MOE_ASSIGN_OR_RETURN(stats->router_us, Micros(backend_, *mark_start_, *mark_routed_));
  MOE_ASSIGN_OR_RETURN(stats->dispatch_us, Micros(backend_, *mark_routed_, *mark_dispatched_));
  stats->device_expert_us.assign(num_devices, 0.0);
  const BackendMark* before = mark_dispatched_.get();
  for (uint32_t d = 0; d < num_devices; ++d) {
    MOE_ASSIGN_OR_RETURN(const double us, Micros(backend_, *before, *mark_device_[d]));
    double slowdown = 1.0;
    if (ctx.device_slowdown != nullptr && d < ctx.device_slowdown->size()) {
      slowdown = (*ctx.device_slowdown)[d];
    }
    stats->device_expert_us[d] = us * slowdown;
    before = mark_device_[d].get();
  }
  stats->expert_us =
      *std::max_element(stats->device_expert_us.begin(), stats->device_expert_us.end());
  MOE_ASSIGN_OR_RETURN(stats->shared_us, Micros(backend_, *before, *mark_shared_));
  MOE_ASSIGN_OR_RETURN(stats->combine_us, Micros(backend_, *before, *mark_combined_));
  if (options_.model.num_shared_experts == 0) stats->shared_us = 0;

  // Modelled all-to-all, dispatch and combine (the same rows come back).
  const double row_bytes = sizeof(float) * static_cast<double>(options_.model.hidden);
  stats->all_to_all_us = 2 * ModelAllToAllUs(transfer_rows, row_bytes, options_.parallel);
  stats->total_us = stats->router_us + stats->dispatch_us + stats->expert_us +
                    stats->all_to_all_us + stats->combine_us;

  stats->layer = layer_;
  stats->num_tokens = static_cast<uint32_t>(num_tokens);
  stats->num_token_slots = plan.num_token_slots;
  stats->capacity = plan.capacity;
  stats->overflowed = plan.overflowed;
  stats->rerouted = plan.rerouted;
  stats->dropped = plan.dropped;
  stats->k_histogram = plan.k_histogram;
  stats->router_entropy = plan.router_entropy;
  stats->gate_mass = plan.gate_mass;
  stats->expert_tokens = plan.expert_tokens;
  stats->expert_demand = plan.expert_demand;
  stats->slot_tokens = plan.slot_tokens;
  stats->device_tokens.assign(num_devices, 0);
  for (uint32_t s = 0; s < num_replicas; ++s)
    stats->device_tokens[s / slots_per_device] += plan.slot_tokens[s];
  stats->routed_on_device = pending_.on_device;
  stats->expert_rows = static_cast<uint32_t>(pending_.offsets[num_replicas]);
  stats->replayed = ctx.forced != nullptr;
  if (ctx.record_selection) {
    if (pending_.on_device) {
      plan.chosen.resize(static_cast<size_t>(num_tokens) * knobs.top_k);
      MOE_RETURN_IF_ERROR(backend_->Download(
          ws->chosen->data(), plan.chosen.size() * sizeof(int32_t), plan.chosen.data()));
      pending_.host_waits++;
    }
    stats->selection = SelectionOf(plan);
  }
  stats->quality_error.reset();
  if (ctx.probe && options_.quality_probe_tokens > 0) {
    if (pending_.on_device) {
      // The probe needs the scores and this step's routing on the host.
      const size_t pairs = static_cast<size_t>(num_tokens) * knobs.top_k;
      ws->host_scores.resize(static_cast<size_t>(num_tokens) * num_experts);
      plan.expert.resize(pairs);
      plan.slot.resize(pairs);
      plan.weight.resize(pairs);
      MOE_RETURN_IF_ERROR(backend_->Download(
          ws->scores->floats(), ws->host_scores.size() * sizeof(float), ws->host_scores.data()));
      MOE_RETURN_IF_ERROR(
          backend_->Download(ws->chosen->data(), pairs * sizeof(int32_t), plan.expert.data()));
      MOE_RETURN_IF_ERROR(
          backend_->Download(ws->pair_slot->data(), pairs * sizeof(int32_t), plan.slot.data()));
      MOE_RETURN_IF_ERROR(
          backend_->Download(ws->pair_weight->data(), pairs * sizeof(float), plan.weight.data()));
      for (size_t i = 0; i < pairs; ++i) {
        if (plan.slot[i] < 0) plan.expert[i] = -1;  // dropped: the backup path
      }
      pending_.host_waits++;
    }
    MOE_RETURN_IF_ERROR(Probe(ctx, plan, ws, stats));
  }
  stats->host_waits = pending_.host_waits;
  return Status::Ok();
}

// Relative error of the MoE output (before the residual) of a few sampled
// tokens against routing without capacity, noise, bias, shortlist or dynamic K.
Status MoeLayer::Probe(const LayerContext& ctx, const RoutingPlan& plan, LayerWorkspace* ws,
                       LayerStats* stats) {
  const int hidden = static_cast<int>(options_.model.hidden);
  const int num_experts = static_cast<int>(options_.model.num_experts);
  const int num_probe = std::min<int>(options_.quality_probe_tokens, ctx.num_tokens);
  NormalStream rng(ctx.probe_seed);
  // The reference uses the model's K (model.reference_top_k, else the knobs
  // at epoch 0), or the current K when it is larger, so a lowered K shows as
  // error.
  Knobs plain;
  const uint32_t model_k =
      options_.model.reference_top_k > 0 ? options_.model.reference_top_k : options_.knobs.top_k;
  plain.top_k = std::min(std::max(ctx.knobs->top_k, model_k), options_.model.num_experts);
  plain.k_min = 1;
  plain.capacity_factor = 0;
  plain.phy2log = ctx.knobs->phy2log;

  // (token, expert, actual weight, reference weight) rows to evaluate.
  struct Pair {
    int probe;
    int32_t token;
    int32_t expert;
    float actual;
    float reference;
  };
  std::vector<Pair> pairs;
  std::vector<int32_t> tokens(num_probe);
  for (int p = 0; p < num_probe; ++p) {
    const int32_t t = static_cast<int32_t>(rng.Uniform() * ctx.num_tokens);
    tokens[p] = t;
    const float* s = ws->host_scores.data() + static_cast<size_t>(t) * num_experts;
    // In replay the reference is the token's recorded selection, unconstrained.
    ExpertSelection one;
    if (ctx.forced != nullptr) {
      const auto first = ctx.forced->experts.begin();
      one.experts.assign(first + ctx.forced->offsets[t], first + ctx.forced->offsets[t + 1]);
      one.offsets = {0, static_cast<uint32_t>(one.experts.size())};
    }
    RoutingPlan ref = Route(s, 1, options_, plain, 0, ctx.forced != nullptr ? &one : nullptr);
    std::vector<float> actual(num_experts, 0), reference(num_experts, 0);
    for (int j = 0; j < plan.max_k; ++j) {
      const size_t idx = static_cast<size_t>(t) * plan.max_k + j;
      if (plan.expert[idx] >= 0) actual[plan.expert[idx]] += plan.weight[idx];
    }
    for (int j = 0; j < ref.max_k; ++j) {
      if (ref.expert[j] >= 0) reference[ref.expert[j]] += ref.weight[j];
    }
    for (int e = 0; e < num_experts; ++e) {
      if (actual[e] != 0 || reference[e] != 0) pairs.push_back({p, t, e, actual[e], reference[e]});
    }
  }
  const size_t num_pairs = pairs.size();
  MOE_RETURN_IF_ERROR(
      Grow(backend_, std::max<size_t>(1, num_pairs) * hidden * sizeof(float), &probe_in_));
  MOE_RETURN_IF_ERROR(
      Grow(backend_, std::max<size_t>(1, num_pairs) * hidden * sizeof(float), &probe_out_));
  std::vector<int32_t> rows(num_pairs);
  ExpertGroups groups;
  groups.input = probe_in_->floats();
  groups.output = probe_out_->floats();
  groups.hidden = hidden;
  groups.workspace = ws->ffn->floats();
  groups.offsets.push_back(0);
  for (size_t i = 0; i < num_pairs; ++i) {
    rows[i] = pairs[i].token;
    groups.experts.push_back(Expert(pairs[i].expert));
    groups.offsets.push_back(static_cast<int>(i + 1));
  }
  MOE_RETURN_IF_ERROR(
      Grow(backend_, std::max<size_t>(1, num_pairs) * sizeof(int32_t), &probe_rows_));
  MOE_RETURN_IF_ERROR(
      backend_->Upload(rows.data(), num_pairs * sizeof(int32_t), probe_rows_->data()));
  MOE_RETURN_IF_ERROR(backend_->Gather(ws->x_norm->floats(), probe_rows_->ints(),
                                       static_cast<int>(num_pairs), hidden, probe_in_->floats()));
  MOE_RETURN_IF_ERROR(backend_->ExpertFfn(groups));
  std::vector<float> y(num_pairs * hidden);
  MOE_RETURN_IF_ERROR(backend_->Download(probe_out_->floats(), y.size() * sizeof(float), y.data()));
  std::vector<float> moe_out(static_cast<size_t>(hidden));
  double num = 0, den = 0;
  for (int p = 0; p < num_probe; ++p) {
    // accum holds shared + actual routed output of the token.
    MOE_RETURN_IF_ERROR(
        backend_->Download(ws->accum->floats() + static_cast<size_t>(tokens[p]) * hidden,
                           hidden * sizeof(float), moe_out.data()));
    std::vector<double> diff(hidden, 0.0);
    for (size_t i = 0; i < num_pairs; ++i) {
      if (pairs[i].probe != p) continue;
      const double dw = static_cast<double>(pairs[i].reference) - pairs[i].actual;
      for (int h = 0; h < hidden; ++h)
        diff[h] += dw * y[i * hidden + h];
    }
    for (int h = 0; h < hidden; ++h) {
      const double ref = moe_out[h] + diff[h];
      num += diff[h] * diff[h];
      den += ref * ref;
    }
  }
  stats->quality_error = den > 0 ? std::sqrt(num / den) : 0.0;
  return Status::Ok();
}

}  // namespace moe::engine
