#include "moe_layer.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <string>

namespace moe::engine {
namespace {

using SteadyClock = std::chrono::steady_clock;

double MicrosSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::micro>(SteadyClock::now() - start).count();
}

Result<std::unique_ptr<BackendBuffer>> UploadFloats(Backend* backend,
                                                    const std::vector<float>& host) {
  MOE_ASSIGN_OR_RETURN(auto buffer, backend->Allocate(host.size() * sizeof(float)));
  MOE_RETURN_IF_ERROR(backend->Upload(host.data(), host.size() * sizeof(float), buffer->data()));
  return buffer;
}

Status Grow(Backend* backend, size_t num_bytes, std::unique_ptr<BackendBuffer>* buffer) {
  if (*buffer && (*buffer)->size_bytes() >= num_bytes) return Status::Ok();
  buffer->reset();
  MOE_ASSIGN_OR_RETURN(*buffer, backend->Allocate(num_bytes));
  return Status::Ok();
}

}  // namespace

Status EnsureWorkspace(Backend* backend, const Options& options, int num_tokens, int top_k,
                       LayerWorkspace* ws) {
  if (num_tokens <= ws->capacity_tokens && top_k <= ws->capacity_k) return Status::Ok();
  const int tokens = std::max(num_tokens, ws->capacity_tokens);
  const int k = std::max(top_k, ws->capacity_k);
  const size_t hidden = options.model.hidden;
  const size_t experts = options.model.num_experts;
  const size_t slots = static_cast<size_t>(tokens) * k;
  const int max_ffn = static_cast<int>(std::max<size_t>(
      options.model.expert_ffn,
      static_cast<size_t>(options.model.num_shared_experts) * options.model.shared_ffn));
  const size_t f = sizeof(float);
  MOE_RETURN_IF_ERROR(Grow(backend, tokens * hidden * f, &ws->x_norm));
  MOE_RETURN_IF_ERROR(Grow(backend, tokens * experts * f, &ws->logits));
  MOE_RETURN_IF_ERROR(Grow(backend, tokens * experts * f, &ws->scores));
  MOE_RETURN_IF_ERROR(Grow(backend, tokens * hidden * f, &ws->accum));
  MOE_RETURN_IF_ERROR(Grow(backend, slots * hidden * f, &ws->routed_in));
  MOE_RETURN_IF_ERROR(Grow(backend, slots * hidden * f, &ws->routed_out));
  MOE_RETURN_IF_ERROR(Grow(backend, slots * sizeof(int32_t), &ws->rows));
  MOE_RETURN_IF_ERROR(Grow(backend, slots * f, &ws->weights));
  MOE_RETURN_IF_ERROR(Grow(
      backend, ExpertWorkspaceFloats(tokens, max_ffn, static_cast<int>(hidden)) * f, &ws->ffn));
  ws->capacity_tokens = tokens;
  ws->capacity_k = k;
  return Status::Ok();
}

Result<std::unique_ptr<MoeLayer>> MoeLayer::Create(Backend* backend, const Options& options,
                                                   uint32_t layer) {
  std::unique_ptr<MoeLayer> l(new MoeLayer(backend, options, layer));
  HostLayerWeights w = GenerateLayerWeights(options.model, layer);
  MOE_ASSIGN_OR_RETURN(l->norm_, UploadFloats(backend, w.norm));
  MOE_ASSIGN_OR_RETURN(l->gate_, UploadFloats(backend, w.gate));
  for (uint32_t e = 0; e < options.model.num_experts; ++e) {
    MOE_ASSIGN_OR_RETURN(auto gate_up, UploadFloats(backend, w.gate_up[e]));
    MOE_ASSIGN_OR_RETURN(auto down, UploadFloats(backend, w.down[e]));
    l->gate_up_.push_back(std::move(gate_up));
    l->down_.push_back(std::move(down));
  }
  if (options.model.num_shared_experts > 0) {
    MOE_ASSIGN_OR_RETURN(l->shared_gate_up_, UploadFloats(backend, w.shared_gate_up));
    MOE_ASSIGN_OR_RETURN(l->shared_down_, UploadFloats(backend, w.shared_down));
  }
  const uint32_t num_replicas = NumReplicas(options);
  const size_t gate_up_bytes = l->gate_up_[0]->size_bytes();
  const size_t down_bytes = l->down_[0]->size_bytes();
  for (uint32_t s = 0; s < num_replicas; ++s) {
    MOE_ASSIGN_OR_RETURN(auto gate_up, backend->Allocate(gate_up_bytes));
    MOE_ASSIGN_OR_RETURN(auto down, backend->Allocate(down_bytes));
    l->slot_gate_up_.push_back(std::move(gate_up));
    l->slot_down_.push_back(std::move(down));
  }
  // No slot holds an expert yet: every slot is filled.
  l->slot_expert_.assign(num_replicas, options.model.num_experts);
  MOE_RETURN_IF_ERROR(l->ApplyPlacement(options.knobs.phy2log).status());
  MOE_RETURN_IF_ERROR(backend->Synchronize());
  return l;
}

size_t MoeLayer::ExpertBytes() const {
  return gate_up_[0]->size_bytes() + down_[0]->size_bytes();
}

Result<std::vector<uint32_t>> MoeLayer::ApplyPlacement(const std::vector<uint32_t>& phy2log) {
  const std::vector<uint32_t>& target = phy2log.empty() ? DefaultPlacement(options_) : phy2log;
  assert(target.size() == slot_expert_.size());
  std::vector<uint32_t> changed;
  for (uint32_t s = 0; s < target.size(); ++s) {
    const uint32_t e = target[s];
    if (slot_expert_[s] == e) continue;
    MOE_RETURN_IF_ERROR(
        backend_->Copy(gate_up_[e]->data(), gate_up_[e]->size_bytes(), slot_gate_up_[s]->data()));
    MOE_RETURN_IF_ERROR(
        backend_->Copy(down_[e]->data(), down_[e]->size_bytes(), slot_down_[s]->data()));
    slot_expert_[s] = e;
    changed.push_back(s);
  }
  return changed;
}

ExpertWeights MoeLayer::Expert(uint32_t e) const {
  return {gate_up_[e]->floats(), down_[e]->floats(), static_cast<int>(options_.model.expert_ffn)};
}

ExpertWeights MoeLayer::Slot(uint32_t s) const {
  return {slot_gate_up_[s]->floats(), slot_down_[s]->floats(),
          static_cast<int>(options_.model.expert_ffn)};
}

ExpertWeights MoeLayer::Shared() const {
  return {shared_gate_up_->floats(), shared_down_->floats(),
          static_cast<int>(options_.model.num_shared_experts * options_.model.shared_ffn)};
}

Status MoeLayer::Forward(const float* x, const LayerContext& ctx, LayerWorkspace* ws, float* out,
                         LayerStats* stats) {
  const Knobs& knobs = *ctx.knobs;
  const int num_tokens = ctx.num_tokens;
  const int hidden = static_cast<int>(options_.model.hidden);
  const int num_experts = static_cast<int>(options_.model.num_experts);
  const uint32_t num_devices = options_.parallel.num_devices;
  const uint32_t num_replicas = NumReplicas(options_);
  const uint32_t slots_per_device = num_replicas / num_devices;
  MOE_RETURN_IF_ERROR(EnsureWorkspace(backend_, options_, num_tokens, knobs.top_k, ws));
  float* x_norm = ws->x_norm->floats();

  // Router: norm, gate GEMM, scoring, host-side routing pipeline.
  auto start = SteadyClock::now();
  MOE_RETURN_IF_ERROR(
      backend_->RmsNorm(x, norm_->floats(), num_tokens, hidden, options_.model.rms_eps, x_norm));
  MOE_RETURN_IF_ERROR(backend_->Gemm(x_norm, gate_->floats(), ws->logits->floats(), num_tokens,
                                     num_experts, hidden, 0.0f));
  MOE_RETURN_IF_ERROR(backend_->Score(ws->logits->floats(), num_tokens, num_experts,
                                      options_.model.score_function, ws->scores->floats()));
  ws->host_scores.resize(static_cast<size_t>(num_tokens) * num_experts);
  MOE_RETURN_IF_ERROR(backend_->Download(
      ws->scores->floats(), ws->host_scores.size() * sizeof(float), ws->host_scores.data()));
  RoutingPlan plan =
      Route(ws->host_scores.data(), num_tokens, options_, knobs, ctx.seed, ctx.forced);
  stats->router_us = MicrosSince(start);

  // Dispatch: counting sort of served token-slots by physical slot.
  start = SteadyClock::now();
  std::vector<int> offsets(num_replicas + 1, 0);
  for (size_t i = 0; i < plan.slot.size(); ++i) {
    if (plan.slot[i] >= 0) offsets[plan.slot[i] + 1]++;
  }
  for (uint32_t s = 0; s < num_replicas; ++s)
    offsets[s + 1] += offsets[s];
  const int num_rows = offsets[num_replicas];
  std::vector<int32_t> rows(num_rows);
  std::vector<float> weights(num_rows);
  {
    std::vector<int> cursor(offsets.begin(), offsets.end() - 1);
    for (size_t i = 0; i < plan.slot.size(); ++i) {
      const int32_t s = plan.slot[i];
      if (s < 0) continue;
      const int pos = cursor[s]++;
      rows[pos] = static_cast<int32_t>(i / plan.max_k);
      weights[pos] = plan.weight[i];
    }
  }
  MOE_RETURN_IF_ERROR(
      backend_->Upload(rows.data(), rows.size() * sizeof(int32_t), ws->rows->data()));
  MOE_RETURN_IF_ERROR(
      backend_->Upload(weights.data(), weights.size() * sizeof(float), ws->weights->data()));
  MOE_RETURN_IF_ERROR(
      backend_->Gather(x_norm, ws->rows->ints(), num_rows, hidden, ws->routed_in->floats()));
  MOE_RETURN_IF_ERROR(backend_->Synchronize());
  stats->dispatch_us = MicrosSince(start);

  // Experts, one grouped call per virtual device, timed one by one.
  [[maybe_unused]] const std::vector<uint32_t>& phy2log =
      knobs.phy2log.empty() ? DefaultPlacement(options_) : knobs.phy2log;
  stats->device_expert_us.assign(num_devices, 0.0);
  stats->device_tokens.assign(num_devices, 0);
  for (uint32_t d = 0; d < num_devices; ++d) {
    const uint32_t first = d * slots_per_device;
    const int row0 = offsets[first];
    ExpertGroups groups;
    groups.input = ws->routed_in->floats() + static_cast<size_t>(row0) * hidden;
    groups.output = ws->routed_out->floats() + static_cast<size_t>(row0) * hidden;
    groups.hidden = hidden;
    groups.workspace = ws->ffn->floats();
    groups.offsets.push_back(0);
    for (uint32_t s = first; s < first + slots_per_device; ++s) {
      assert(slot_expert_[s] == phy2log[s] && "placement not applied to the slots");
      groups.experts.push_back(Slot(s));
      groups.offsets.push_back(offsets[s + 1] - row0);
    }
    stats->device_tokens[d] = groups.offsets.back();
    start = SteadyClock::now();
    MOE_RETURN_IF_ERROR(backend_->ExpertFfn(groups));
    MOE_RETURN_IF_ERROR(backend_->Synchronize());
    double slowdown = 1.0;
    if (ctx.device_slowdown != nullptr && d < ctx.device_slowdown->size()) {
      slowdown = (*ctx.device_slowdown)[d];
    }
    stats->device_expert_us[d] = MicrosSince(start) * slowdown;
  }
  stats->expert_us =
      *std::max_element(stats->device_expert_us.begin(), stats->device_expert_us.end());

  // Combine: shared experts on every token, weighted scatter-add, residual.
  start = SteadyClock::now();
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
    MOE_RETURN_IF_ERROR(backend_->Synchronize());
    stats->shared_us = MicrosSince(start);
  } else {
    MOE_RETURN_IF_ERROR(backend_->Fill(0.0f, static_cast<size_t>(num_tokens) * hidden, accum));
  }
  MOE_RETURN_IF_ERROR(backend_->ScatterAddWeighted(ws->routed_out->floats(), ws->rows->ints(),
                                                   ws->weights->floats(), num_rows, hidden, accum));
  MOE_RETURN_IF_ERROR(backend_->Add(x, accum, static_cast<size_t>(num_tokens) * hidden, out));
  MOE_RETURN_IF_ERROR(backend_->Synchronize());
  stats->combine_us = MicrosSince(start);

  // Modelled all-to-all: token t lives on device t % D; a slot served on
  // another device crosses the link twice (dispatch and combine).
  const double row_bytes = sizeof(float) * static_cast<double>(hidden);
  const uint32_t per_node = options_.parallel.devices_per_node;
  std::vector<double> send_intra(num_devices, 0), send_inter(num_devices, 0);
  std::vector<double> recv_intra(num_devices, 0), recv_inter(num_devices, 0);
  for (size_t i = 0; i < plan.slot.size(); ++i) {
    if (plan.slot[i] < 0) continue;
    const uint32_t src = static_cast<uint32_t>(i / plan.max_k) % num_devices;
    const uint32_t dst = static_cast<uint32_t>(plan.slot[i]) / slots_per_device;
    if (src == dst) continue;
    const bool same_node = src / per_node == dst / per_node;
    (same_node ? send_intra : send_inter)[src] += row_bytes;
    (same_node ? recv_intra : recv_inter)[dst] += row_bytes;
  }
  double a2a_us = 0;
  for (uint32_t d = 0; d < num_devices; ++d) {
    const double intra = std::max(send_intra[d], recv_intra[d]);
    const double inter = std::max(send_inter[d], recv_inter[d]);
    a2a_us = std::max(a2a_us, intra / (options_.parallel.intra_node_gbps * 1e3) +
                                  inter / (options_.parallel.inter_node_gbps * 1e3));
  }
  stats->all_to_all_us = 2 * a2a_us;
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
  stats->replayed = ctx.forced != nullptr;
  if (ctx.record_selection) stats->selection = SelectionOf(plan);
  stats->quality_error.reset();
  if (ctx.probe && options_.quality_probe_tokens > 0) {
    MOE_RETURN_IF_ERROR(Probe(ctx, plan, ws, stats));
  }
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
  Knobs plain;
  plain.top_k = ctx.knobs->top_k;
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
  // The rows buffer is free again once the combine ran.
  MOE_RETURN_IF_ERROR(backend_->Upload(rows.data(), num_pairs * sizeof(int32_t), ws->rows->data()));
  MOE_RETURN_IF_ERROR(backend_->Gather(ws->x_norm->floats(), ws->rows->ints(),
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
