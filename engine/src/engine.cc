#include "moe/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <string>

#include "moe/engine/model.h"
#include "moe_layer.h"

namespace moe::engine {
namespace {

class EngineImpl final : public Engine {
 public:
  EngineImpl(const Options& options, std::unique_ptr<Backend> backend)
      : options_(options),
        backend_(std::move(backend)),
        knobs_(options.model.num_layers, options.knobs),
        epoch_(options.initial_epoch),
        newest_epoch_(options.initial_epoch) {}

  Status Init() {
    for (uint32_t l = 0; l < options_.model.num_layers; ++l) {
      MOE_ASSIGN_OR_RETURN(auto layer, MoeLayer::Create(backend_.get(), options_, l));
      layers_.push_back(std::move(layer));
    }
    counter_entries_ = MoeLayer::CounterEntries(options_);
    const size_t counter_bytes = layers_.size() * counter_entries_ * sizeof(uint32_t);
    MOE_ASSIGN_OR_RETURN(counters_, backend_->Allocate(counter_bytes));
    MOE_ASSIGN_OR_RETURN(counters_host_, backend_->AllocateHost(counter_bytes));
    MOE_ASSIGN_OR_RETURN(placement_start_, backend_->CreateMark());
    MOE_ASSIGN_OR_RETURN(placement_end_, backend_->CreateMark());
    return Status::Ok();
  }

  Result<StepStats> Step(const StepInput& input, std::vector<float>* output) override;
  Result<uint64_t> Submit(const KnobUpdate& update) override;

  const Options& options() const override { return options_; }
  const Backend& backend() const override { return *backend_; }
  Knobs knobs(uint32_t layer) const override { return knobs_.at(layer); }
  uint64_t epoch() const override { return epoch_; }
  uint64_t next_step() const override { return next_step_; }

 private:
  // Applies queued updates; copies expert weights into the slots whose
  // logical expert changed and reports the modelled move. `*copied` says
  // whether copies ran between placement_start_ and placement_end_ (their
  // time is read after the step's wait).
  Status ApplyPending(StepStats* stats, bool* copied);
  Status EnsureIo(int num_tokens);

  const Options options_;
  std::unique_ptr<Backend> backend_;
  std::vector<std::unique_ptr<MoeLayer>> layers_;
  std::vector<Knobs> knobs_;  // per layer, in force
  uint64_t epoch_ = 0;
  uint64_t next_step_ = 0;
  LayerWorkspace workspace_;
  // Every layer's device routing counters, back to back (counter_entries_
  // each), and their pinned host copy: one copy per step brings them back.
  size_t counter_entries_ = 0;
  std::unique_ptr<BackendBuffer> counters_;
  std::unique_ptr<BackendBuffer> counters_host_;
  std::unique_ptr<BackendBuffer> ping_, pong_;
  int io_tokens_ = 0;
  bool slots_stale_ = false;  // knobs_ changed; the layers' slots may not match yet
  // Around a placement change's copies: timed without a wait of their own.
  std::unique_ptr<BackendMark> placement_start_, placement_end_;

  mutable std::mutex mu_;
  std::deque<KnobUpdate> pending_;  // guarded by mu_
  uint64_t newest_epoch_ = 0;       // guarded by mu_
  std::vector<Knobs> staged_;       // guarded by mu_: knobs after every pending update
};

Result<uint64_t> EngineImpl::Submit(const KnobUpdate& update) {
  std::lock_guard<std::mutex> lock(mu_);
  if (update.epoch <= newest_epoch_) {
    return Status::FailedPrecondition("stale epoch " + std::to_string(update.epoch) +
                                      " (newest is " + std::to_string(newest_epoch_) + ")");
  }
  if (update.epoch - newest_epoch_ > options_.command_bounds.max_epoch_step) {
    return Status::OutOfRange("epoch " + std::to_string(update.epoch) + " jumps more than " +
                              std::to_string(options_.command_bounds.max_epoch_step) +
                              " past the newest, " + std::to_string(newest_epoch_));
  }
  std::vector<Knobs> staged = pending_.empty() ? knobs_ : staged_;
  for (Knobs& k : staged)
    update.all_layers.ApplyTo(&k);
  for (const auto& [layer, patch] : update.layers) {
    if (layer >= staged.size()) {
      return Status::InvalidArgument("layer " + std::to_string(layer) + " out of range (" +
                                     std::to_string(staged.size()) + " layers)");
    }
    patch.ApplyTo(&staged[layer]);
  }
  for (size_t l = 0; l < staged.size(); ++l) {
    Status st = ValidateKnobs(staged[l], options_);
    if (st.ok() && options_.routing == RoutingMode::kDevice) {
      st = CheckDeviceRoutingCovered(staged[l]);
    }
    if (!st.ok()) return st.WithContext("layer " + std::to_string(l));
  }
  // What cannot run is refused above as invalid; what could run but lies
  // outside the operator's bounds is refused here.
  MOE_RETURN_IF_ERROR(CheckCommandBounds(update.all_layers, options_));
  for (const auto& [layer, patch] : update.layers) {
    MOE_RETURN_IF_ERROR(
        CheckCommandBounds(patch, options_).WithContext("layer " + std::to_string(layer)));
  }
  staged_ = std::move(staged);
  pending_.push_back(update);
  newest_epoch_ = update.epoch;
  return next_step_;
}

Status EngineImpl::ApplyPending(StepStats* stats, bool* copied) {
  *copied = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!pending_.empty()) {
      knobs_ = staged_;
      epoch_ = pending_.back().epoch;
      pending_.clear();
      slots_stale_ = true;
    }
  }
  if (!slots_stale_) return Status::Ok();
  // The copies run outside the lock (Submit() must not wait for them); only
  // this thread writes knobs_. A step whose copies failed retries them.
  const uint32_t num_replicas = NumReplicas(options_);
  const uint32_t slots_per_device = num_replicas / options_.parallel.num_devices;
  std::vector<uint64_t> device_bytes(options_.parallel.num_devices, 0);
  MOE_RETURN_IF_ERROR(backend_->RecordMark(placement_start_.get()));
  for (size_t l = 0; l < layers_.size(); ++l) {
    MOE_ASSIGN_OR_RETURN(std::vector<uint32_t> changed, layers_[l]->ApplyKnobs(knobs_[l]));
    for (uint32_t s : changed)
      device_bytes[s / slots_per_device] += layers_[l]->ExpertBytes();
  }
  double move_us = 0;
  for (uint64_t bytes : device_bytes) {
    stats->placement_moved_bytes += bytes;
    move_us = std::max(move_us, bytes / (options_.parallel.inter_node_gbps * 1e3));
  }
  if (stats->placement_moved_bytes > 0) {
    MOE_RETURN_IF_ERROR(backend_->RecordMark(placement_end_.get()));
    *copied = true;
  }
  stats->placement_move_us = move_us;
  slots_stale_ = false;
  return Status::Ok();
}

Status EngineImpl::EnsureIo(int num_tokens) {
  if (num_tokens <= io_tokens_) return Status::Ok();
  const size_t bytes = sizeof(float) * static_cast<size_t>(num_tokens) * options_.model.hidden;
  ping_.reset();
  pong_.reset();
  MOE_ASSIGN_OR_RETURN(ping_, backend_->Allocate(bytes));
  MOE_ASSIGN_OR_RETURN(pong_, backend_->Allocate(bytes));
  io_tokens_ = num_tokens;
  return Status::Ok();
}

Result<StepStats> EngineImpl::Step(const StepInput& input, std::vector<float>* output) {
  if (input.hidden == nullptr || input.num_tokens < 1) {
    return Status::InvalidArgument("step input needs at least one token");
  }
  for (size_t l = 0; l < input.routing.size(); ++l) {
    if (input.routing[l] == nullptr) continue;
    if (l >= layers_.size()) {
      return Status::InvalidArgument("replayed routing for layer " + std::to_string(l) +
                                     ", the model has " + std::to_string(layers_.size()));
    }
    MOE_RETURN_IF_ERROR(
        ValidateSelection(*input.routing[l], input.num_tokens, options_.model.num_experts)
            .WithContext("layer " + std::to_string(l)));
    if (options_.routing == RoutingMode::kDevice) {
      return Status::Unsupported("device routing: replaying a routing trace (layer " +
                                 std::to_string(l) + "); use routing = host or auto");
    }
  }
  const auto start = std::chrono::steady_clock::now();
  StepStats stats;
  bool placement_copied = false;
  MOE_RETURN_IF_ERROR(ApplyPending(&stats, &placement_copied));
  stats.step = next_step_;
  stats.epoch = epoch_;
  stats.num_tokens = static_cast<uint32_t>(input.num_tokens);
  stats.timing_on_device = !backend_->Supports(Feature::kHostMemory);
  const size_t num_floats = static_cast<size_t>(input.num_tokens) * options_.model.hidden;
  MOE_RETURN_IF_ERROR(EnsureIo(input.num_tokens));
  MOE_RETURN_IF_ERROR(backend_->Upload(input.hidden, num_floats * sizeof(float), ping_->data()));
  float* x = ping_->floats();
  float* y = pong_->floats();
  const bool probe =
      options_.quality_probe_tokens > 0 && next_step_ % options_.quality_probe_every == 0;
  stats.layers.resize(layers_.size());
  std::vector<LayerContext> contexts(layers_.size());
  size_t finished = 0;  // layers whose stats are filled
  for (size_t l = 0; l < layers_.size(); ++l) {
    LayerContext& ctx = contexts[l];
    ctx.num_tokens = input.num_tokens;
    ctx.knobs = &knobs_[l];
    ctx.seed = MixSeed(options_.seed, next_step_, 2 * l + 1);
    ctx.device_slowdown = &input.device_slowdown;
    ctx.probe = probe;
    ctx.probe_seed = MixSeed(options_.seed, next_step_, 2 * l + 2);
    ctx.forced = l < input.routing.size() ? input.routing[l] : nullptr;
    ctx.record_selection = input.record_selection;
    ctx.counters = static_cast<uint32_t*>(counters_->data()) + l * counter_entries_;
    ctx.host_counters = static_cast<uint32_t*>(counters_host_->data()) + l * counter_entries_;
    MOE_RETURN_IF_ERROR(layers_[l]->Forward(x, ctx, &workspace_, y));
    std::swap(x, y);
    if (probe || input.record_selection) {
      // The probe and the recorder read this layer's workspace before the
      // next layer reuses it.
      if (layers_[l]->routed_on_device()) {
        MOE_RETURN_IF_ERROR(backend_->DownloadAsync(
            ctx.counters, counter_entries_ * sizeof(uint32_t), ctx.host_counters));
      }
      MOE_RETURN_IF_ERROR(backend_->Synchronize());
      MOE_RETURN_IF_ERROR(layers_[l]->Finish(ctx, &workspace_, &stats.layers[l]));
      finished = l + 1;
    }
  }
  // One copy brings back the counters of every layer routed on the device.
  bool any_on_device = false;
  for (size_t l = finished; l < layers_.size(); ++l)
    any_on_device = any_on_device || layers_[l]->routed_on_device();
  if (any_on_device) {
    MOE_RETURN_IF_ERROR(backend_->DownloadAsync(
        counters_->data(), layers_.size() * counter_entries_ * sizeof(uint32_t),
        counters_host_->data()));
  }
  if (output != nullptr) {
    output->resize(num_floats);
    MOE_RETURN_IF_ERROR(backend_->DownloadAsync(x, num_floats * sizeof(float), output->data()));
  }
  // The step's one wait: every layer's work, counters and marks.
  MOE_RETURN_IF_ERROR(backend_->Synchronize());
  if (placement_copied) {
    MOE_ASSIGN_OR_RETURN(stats.placement_copy_us,
                         backend_->MicrosBetween(*placement_start_, *placement_end_));
  }
  for (size_t l = finished; l < layers_.size(); ++l) {
    MOE_RETURN_IF_ERROR(layers_[l]->Finish(contexts[l], &workspace_, &stats.layers[l]));
  }
  stats.step_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  ++next_step_;
  return stats;
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::Create(const Options& options,
                                               std::unique_ptr<Backend> backend) {
  if (backend == nullptr) return Status::InvalidArgument("Engine::Create: null backend");
  MOE_RETURN_IF_ERROR(ValidateOptions(options));
  MOE_RETURN_IF_ERROR(RequireFeature(*backend, Feature::kHostRouting));
  if (options.routing == RoutingMode::kDevice) {
    MOE_RETURN_IF_ERROR(RequireFeature(*backend, Feature::kDeviceRouting));
    MOE_RETURN_IF_ERROR(CheckDeviceRoutingCovered(options.knobs));
  }
  MOE_RETURN_IF_ERROR(RequireFeature(*backend, Feature::kGroupedExpertFfn));
  MOE_RETURN_IF_ERROR(
      RequireFeature(*backend, options.model.score_function == ScoreFunction::kSigmoid
                                   ? Feature::kSigmoidScoring
                                   : Feature::kSoftmaxScoring));
  auto engine = std::make_unique<EngineImpl>(options, std::move(backend));
  MOE_RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace moe::engine
