#include "engine_config.h"

#include <filesystem>
#include <vector>

#include "moe/config/toml_reader.h"

namespace moe::engine_app {
namespace {

using config::Range;
using config::TableReader;
using config::TomlDocument;

std::string RelativeTo(const std::string& base_file, const std::string& path) {
  if (path.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (std::filesystem::path(base_file).parent_path() / path).lexically_normal().string();
}

void ReadModel(TableReader t, engine::ModelOptions* m) {
  t.Read("num_layers", &m->num_layers, Range<int64_t>{1, 256});
  t.Read("hidden", &m->hidden, Range<int64_t>{1, 65536});
  t.Read("num_experts", &m->num_experts, Range<int64_t>{1, 4096});
  t.Read("expert_ffn", &m->expert_ffn, Range<int64_t>{1, 65536});
  t.Read("num_shared_experts", &m->num_shared_experts, Range<int64_t>{0, 64});
  t.Read("shared_ffn", &m->shared_ffn, Range<int64_t>{1, 65536});
  std::string score = std::string(engine::ScoreFunctionName(m->score_function));
  t.ReadChoice("score_function", &score, {"softmax", "sigmoid"});
  m->score_function =
      score == "sigmoid" ? engine::ScoreFunction::kSigmoid : engine::ScoreFunction::kSoftmax;
  t.Read("normalize_gates", &m->normalize_gates);
  t.Read("routed_scaling", &m->routed_scaling, Range<double>{1e-6, 1e6});
  t.Read("num_groups", &m->num_groups, Range<int64_t>{1, 4096});
  t.Read("topk_groups", &m->topk_groups, Range<int64_t>{1, 4096});
  t.Read("router_init_scale", &m->router_init_scale, Range<double>{1e-6, 1e3});
  t.Read("reference_top_k", &m->reference_top_k, Range<int64_t>{0, 4096});
  double eps = m->rms_eps;
  t.Read("rms_eps", &eps, Range<double>{1e-12, 1.0});
  m->rms_eps = static_cast<float>(eps);
  int64_t seed = static_cast<int64_t>(m->seed);
  t.Read("seed", &seed, Range<int64_t>{0, INT64_MAX});
  m->seed = static_cast<uint64_t>(seed);
  if (m->num_experts % m->num_groups != 0) {
    t.Fail("num_groups", "must divide num_experts");
  }
  if (m->topk_groups > m->num_groups) t.Fail("topk_groups", "must be <= num_groups");
}

void ReadParallel(TableReader t, engine::ParallelOptions* p) {
  t.Read("num_devices", &p->num_devices, Range<int64_t>{1, 1024});
  t.Read("num_replicas", &p->num_replicas, Range<int64_t>{0, 65536});
  t.Read("devices_per_node", &p->devices_per_node, Range<int64_t>{1, 1024});
  t.Read("intra_node_gbps", &p->intra_node_gbps, Range<double>{1e-3, 1e5});
  t.Read("inter_node_gbps", &p->inter_node_gbps, Range<double>{1e-3, 1e5});
}

void ReadKnobs(TableReader t, engine::Knobs* k) {
  t.Read("top_k", &k->top_k, Range<int64_t>{1, 4096});
  t.Read("top_p", &k->top_p, Range<double>{0, 1});
  t.Read("k_min", &k->k_min, Range<int64_t>{1, 4096});
  t.Read("capacity_factor", &k->capacity_factor, Range<double>{0, 1000});
  std::string policy = std::string(engine::OverflowPolicyName(k->overflow_policy));
  t.ReadChoice("overflow_policy", &policy, {"drop", "reroute", "replica"});
  k->overflow_policy = policy == "reroute"   ? engine::OverflowPolicy::kReroute
                       : policy == "replica" ? engine::OverflowPolicy::kReplica
                                             : engine::OverflowPolicy::kDrop;
  std::string scope = std::string(engine::CapacityScopeName(k->capacity_scope));
  t.ReadChoice("capacity_scope", &scope, {"expert", "slot"});
  k->capacity_scope =
      scope == "slot" ? engine::CapacityScope::kSlot : engine::CapacityScope::kExpert;
  t.Read("noise_std", &k->noise_std, Range<double>{0, 100});
  t.Read("shortlist", &k->shortlist, Range<int64_t>{0, 4096});
  t.Read("availability_weight", &k->availability_weight, Range<double>{0, 1});
  if (t.Has("expert_bias")) {
    std::vector<double> bias;
    t.Read("expert_bias", &bias, Range<double>{-1e6, 1e6});
    k->expert_bias.assign(bias.begin(), bias.end());
  }
  if (t.Has("placement")) {
    std::vector<int64_t> placement;
    t.Read("placement", &placement, Range<int64_t>{0, 65535});
    k->phy2log.assign(placement.begin(), placement.end());
  }
}

// Cross-field checks the engine would otherwise report without a position.
void CheckOptions(TableReader knobs, const engine::Options& options) {
  Status st = engine::ValidateOptions(options);
  if (!st.ok()) knobs.Fail("", st.message());
}

}  // namespace

Status LoadModelPreset(const std::string& path, engine::Options* options) {
  MOE_ASSIGN_OR_RETURN(TomlDocument doc, TomlDocument::Load(path));
  TableReader root = doc.Root();
  std::string name;
  root.Read("name", &name);
  std::string description;
  root.Read("description", &description);
  ReadModel(root.Table("model"), &options->model);
  ReadParallel(root.Table("parallel"), &options->parallel);
  ReadKnobs(root.Table("knobs"), &options->knobs);
  return doc.Finish();
}

Result<EngineConfig> LoadEngineConfig(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(TomlDocument doc, TomlDocument::Load(path));
  EngineConfig cfg;
  TableReader root = doc.Root();
  std::string preset;
  root.Read("model_preset", &preset);
  if (!preset.empty()) {
    MOE_RETURN_IF_ERROR(LoadModelPreset(RelativeTo(path, preset), &cfg.engine));
  }

  TableReader e = root.Table("engine");
  AppOptions& app = cfg.app;
  e.Read("id", &app.engine_id);
  e.ReadChoice("backend", &app.backend, {"cpu", "cuda"});
  int64_t threads = app.blas_threads;
  e.Read("blas_threads", &threads, Range<int64_t>{0, 256});
  app.blas_threads = static_cast<int>(threads);
  int64_t device = app.cuda_device;
  e.Read("cuda_device", &device, Range<int64_t>{0, 64});
  app.cuda_device = static_cast<int>(device);
  e.ReadChoice("gemm_precision", &app.gemm_precision, {"fp32", "tf32", "bf16"});
  e.Read("grouped_gemm_fallback", &app.grouped_gemm_fallback);
  std::string routing(engine::RoutingModeName(cfg.engine.routing));
  e.ReadChoice("routing", &routing, {"auto", "host", "device"});
  cfg.engine.routing = routing == "host"     ? engine::RoutingMode::kHost
                       : routing == "device" ? engine::RoutingMode::kDevice
                                             : engine::RoutingMode::kAuto;
  e.Read("max_capacity_padding", &cfg.engine.max_capacity_padding, Range<double>{0.0, 64.0});
  e.ReadDurationMs("step_interval", &app.step_interval_ms, Range<int64_t>{0, 3600000});
  e.ReadDurationMs("heartbeat", &app.heartbeat_ms, Range<int64_t>{10, 3600000});
  e.ReadDurationMs("hello_interval", &app.hello_interval_ms, Range<int64_t>{10, 3600000});
  e.ReadDurationMs("progress", &app.progress_ms, Range<int64_t>{100, 3600000});
  e.Read("scenario", &app.scenario);
  app.scenario = RelativeTo(path, app.scenario);
  int64_t seed = static_cast<int64_t>(cfg.engine.seed);
  e.Read("seed", &seed, Range<int64_t>{0, INT64_MAX});
  cfg.engine.seed = static_cast<uint64_t>(seed);

  TableReader t = root.Table("telemetry");
  t.Read("enabled", &app.telemetry_enabled);
  t.Read("endpoint", &app.telemetry_endpoint);
  t.Read("commands", &app.command_endpoint);
  int64_t queue = app.send_queue;
  t.Read("send_queue", &queue, Range<int64_t>{1, 1000000});
  app.send_queue = static_cast<int>(queue);
  t.Read("await_controller", &app.await_controller);
  t.ReadDurationMs("await_timeout", &app.await_timeout_ms, Range<int64_t>{1, 3600000});
  TableReader curve = t.Table("curve");
  curve.Read("public_key", &app.curve_public_key);
  curve.Read("secret_key", &app.curve_secret_key);
  curve.Read("controller_public_key", &app.controller_public_key);
  bool any_curve =
      curve.Has("public_key") || curve.Has("secret_key") || curve.Has("controller_public_key");
  if (any_curve) {
    for (const char* key : {"public_key", "secret_key", "controller_public_key"}) {
      if (!curve.Has(key)) {
        curve.Fail(key,
                   "CURVE needs public_key, secret_key and controller_public_key "
                   "(make keys with `moectl keygen`)");
      }
    }
  }

  ReadModel(root.Table("model"), &cfg.engine.model);
  ReadParallel(root.Table("parallel"), &cfg.engine.parallel);
  TableReader knobs = root.Table("knobs");
  ReadKnobs(knobs, &cfg.engine.knobs);
  TableReader bounds = root.Table("command_bounds");
  engine::CommandBounds& b = cfg.engine.command_bounds;
  std::vector<double> cf_range = {b.min_capacity_factor, b.max_capacity_factor};
  bounds.Read("capacity_factor", &cf_range, Range<double>{1e-3, 1000});
  if (cf_range.size() != 2 || cf_range[0] > cf_range[1]) {
    bounds.Fail("capacity_factor", "expected [min, max] with min <= max");
  } else {
    b.min_capacity_factor = cf_range[0];
    b.max_capacity_factor = cf_range[1];
  }
  bounds.Read("unlimited_capacity", &b.allow_unlimited_capacity);
  std::vector<int64_t> k_range = {b.min_top_k, b.max_top_k};
  bounds.Read("top_k", &k_range, Range<int64_t>{0, 4096});
  if (k_range.size() != 2 || k_range[0] < 1 || (k_range[1] != 0 && k_range[0] > k_range[1])) {
    bounds.Fail("top_k", "expected [min, max] with 1 <= min <= max (max 0: the model's experts)");
  } else {
    b.min_top_k = static_cast<uint32_t>(k_range[0]);
    b.max_top_k = static_cast<uint32_t>(k_range[1]);
  }
  bounds.Read("noise_std_max", &b.max_noise_std, Range<double>{0, 100});
  double bias_max = b.max_abs_expert_bias;
  bounds.Read("expert_bias_max", &bias_max, Range<double>{0, 1e6});
  b.max_abs_expert_bias = static_cast<float>(bias_max);
  int64_t k_min_min = b.min_k_min;
  bounds.Read("k_min_min", &k_min_min, Range<int64_t>{1, 4096});
  b.min_k_min = static_cast<uint32_t>(k_min_min);
  bounds.Read("top_p_min", &b.min_top_p, Range<double>{0, 1});
  bounds.Read("availability_weight_max", &b.max_availability_weight, Range<double>{0, 1});
  int64_t epoch_step = static_cast<int64_t>(b.max_epoch_step);
  bounds.Read("max_epoch_step", &epoch_step, Range<int64_t>{1, int64_t{1} << 40});
  b.max_epoch_step = static_cast<uint64_t>(epoch_step);
  TableReader probe = root.Table("probe");
  probe.Read("tokens", &cfg.engine.quality_probe_tokens, Range<int64_t>{0, 1024});
  probe.Read("every", &cfg.engine.quality_probe_every, Range<int64_t>{1, 1000000});
  if (doc.errors().empty()) CheckOptions(knobs, cfg.engine);
  MOE_RETURN_IF_ERROR(doc.Finish());
  return cfg;
}

Result<Scenario> LoadScenario(const std::string& path) {
  MOE_ASSIGN_OR_RETURN(TomlDocument doc, TomlDocument::Load(path));
  Scenario scenario;
  engine::ScenarioOptions& s = scenario.workload;
  TableReader root = doc.Root();
  root.Read("name", &s.name);
  std::string description;
  root.Read("description", &description);
  int64_t seed = static_cast<int64_t>(s.seed);
  root.Read("seed", &seed, Range<int64_t>{0, INT64_MAX});
  s.seed = static_cast<uint64_t>(seed);
  root.Read("num_domains", &s.num_domains, Range<int64_t>{1, 1024});
  root.Read("domain_scale", &s.domain_scale, Range<double>{0, 1e3});
  root.Read("noise_scale", &s.noise_scale, Range<double>{0, 1e3});
  root.Read("tokens_per_step", &s.tokens_per_step, Range<int64_t>{1, 1 << 20});
  int64_t cycle = 0;
  root.Read("cycle_steps", &cycle, Range<int64_t>{0, INT64_MAX});
  s.cycle_steps = static_cast<uint64_t>(cycle);
  int64_t previous = -1;
  for (TableReader k : root.Tables("keyframe")) {
    engine::Keyframe kf;
    int64_t step = 0;
    k.Require("step");
    k.Require("mix");
    k.Read("step", &step, Range<int64_t>{0, INT64_MAX});
    if (step <= previous) k.Fail("step", "keyframe steps must increase");
    if (cycle > 0 && step >= cycle) k.Fail("step", "must be below cycle_steps");
    previous = step;
    kf.step = static_cast<uint64_t>(step);
    k.Read("mix", &kf.mix, Range<double>{0, 1e6});
    if (k.Has("mix") && kf.mix.size() != s.num_domains) {
      k.Fail("mix", "needs num_domains = " + std::to_string(s.num_domains) + " entries");
    }
    k.Read("tokens_per_step", &kf.tokens_per_step, Range<int64_t>{0, 1 << 20});
    k.Read("device_slowdown", &kf.device_slowdown, Range<double>{1, 100});
    s.keyframes.push_back(std::move(kf));
  }
  if (root.Has("trace")) {
    TableReader trace = root.Table("trace");
    trace.Require("path");
    trace.Read("path", &scenario.trace.path);
    trace.Read("loop", &scenario.trace.loop);
    if (trace.Has("path") && scenario.trace.path.empty()) trace.Fail("path", "must not be empty");
    scenario.trace.path = RelativeTo(path, scenario.trace.path);
  }
  MOE_RETURN_IF_ERROR(doc.Finish());
  MOE_RETURN_IF_ERROR(engine::ValidateScenario(s).WithContext(path));
  return scenario;
}

}  // namespace moe::engine_app
